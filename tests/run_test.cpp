// lev::run (lev/run.hpp): a main task on its own loop, stop signals, the
// grace period and the hard stop, the exit code; and until_stopped. The
// signals are sent to this process (SIGUSR1 / SIGUSR2, which run() is told
// to handle), as a shell or a service manager would send SIGINT / SIGTERM.
#include "lev/run.hpp"

#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "lev/log.hpp"
#include "lev/sync.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

// Sends `signo` to this process after `delay` on the loop's clock.
lev::Task<> send_later(lev::Loop& loop, int signo, lev::Duration delay) {
  (void)co_await loop.sleep_for(delay);
  ::kill(::getpid(), signo);
}

// What the log hook received while it lives.
struct LogCapture {
  std::mutex m;
  std::vector<std::string> lines;
  LogCapture() {
    lev::set_log_handler([this](lev::LogLevel, std::string_view text) {
      std::lock_guard lock(m);
      lines.emplace_back(text);
    });
  }
  ~LogCapture() { lev::set_log_handler({}); }
  bool has(std::string_view part) {
    std::lock_guard lock(m);
    for (const auto& l : lines)
      if (l.find(part) != std::string::npos) return true;
    return false;
  }
};

lev::RunOptions on_usr2(lev::Duration grace) {
  lev::RunOptions o;
  o.stop_signals = {SIGUSR2};
  o.grace = grace;
  return o;
}

}  // namespace

TEST_SUITE("run") {
  TEST_CASE("run gives the main task a loop and returns its value as the exit code") {
    CHECK(lev::run([](lev::Loop& loop, std::stop_token stop) -> lev::Task<int> {
            CHECK_FALSE(stop.stop_requested());
            CHECK((co_await loop.nop()));
            co_return 7;
          }) == 7);
    bool ran = false;
    CHECK(lev::run([&](lev::Loop& loop) -> lev::Task<> {  // a void main: 0
            (void)co_await loop.sleep_for(1ms);
            ran = true;
          }) == 0);
    CHECK(ran);
  }

  TEST_CASE(
      "run's loop has the model and options asked for; a proactor with no backend named gets "
      "auto") {
    std::string backend;
    lev::Model model{};
    auto probe = [&](lev::Loop& loop) -> lev::Task<> {
      backend = loop.backend_name();
      model = loop.model();
      co_return;
    };
    CHECK(lev::run(probe) == 0);
    CHECK(model == lev::Model::proactor);
    CHECK(backend == (lev::test::has_uring() ? "uring" : "epoll"));
    CHECK(lev::run(probe, {.model = lev::Model::reactor}) == 0);
    CHECK(model == lev::Model::reactor);
    CHECK(lev::run(probe, {.loop = {.backend = "epoll"}}) == 0);
    CHECK(backend == "epoll");
    LogCapture log;
    CHECK(lev::run(probe, {.loop = {.queue_size = 0}}) == 1);  // no loop: said, and exit 1
    CHECK(log.has("lev::run: no loop"));
  }

  TEST_CASE("a stop signal stops the token, and the main task winds down in its own time") {
    const auto t0 = std::chrono::steady_clock::now();
    const int code = lev::run(
        [](lev::Loop& loop, std::stop_token stop) -> lev::Task<int> {
          loop.spawn(send_later(loop, SIGUSR2, 10ms));
          co_await lev::until_stopped(stop);
          CHECK(stop.stop_requested());
          // Winding down takes operations still: nothing is cancelled yet.
          auto flushed = co_await loop.sleep_for(20ms);
          co_return flushed ? 3 : 4;
        },
        on_usr2(5s));
    CHECK(code == 3);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, nullptr, &now);
    CHECK_FALSE(sigismember(&now, SIGUSR2));  // the mask is restored
  }

  TEST_CASE("a main task still running when the grace period ends is cancelled") {
    LogCapture log;
    const auto t0 = std::chrono::steady_clock::now();
    const int code = lev::run(
        [](lev::Loop& loop, std::stop_token stop) -> lev::Task<int> {
          loop.spawn(send_later(loop, SIGUSR2, 5ms));
          co_await lev::until_stopped(stop);
          auto slept = co_await loop.sleep_for(1h);  // ignores the request
          co_return slept ? 0 : 4;                   // cancelled by the hard stop
        },
        on_usr2(50ms));
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(code == 4);
    CHECK(took >= 50ms);
    CHECK(took < 5s);
    CHECK(log.has("lev::run: still running 50ms after SIGUSR2: cancelling the main task"));
  }

  TEST_CASE("a second stop signal cancels the main task at once") {
    LogCapture log;
    const auto t0 = std::chrono::steady_clock::now();
    const int code = lev::run(
        [](lev::Loop& loop, std::stop_token stop) -> lev::Task<int> {
          loop.spawn(send_later(loop, SIGUSR2, 5ms));
          loop.spawn(send_later(loop, SIGUSR2, 30ms));
          co_await lev::until_stopped(stop);
          auto slept = co_await loop.sleep_for(1h);
          co_return slept ? 0 : 5;
        },
        on_usr2(1h));
    CHECK(code == 5);
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    CHECK(log.has("SIGUSR2 again: cancelling the main task"));
  }

  TEST_CASE(
      "an escaped exception exits 1 and is logged; a cancellation after a hard stop exits 128 + "
      "the signal") {
    LogCapture log;
    CHECK(lev::run([](lev::Loop&) -> lev::Task<int> {
            throw std::runtime_error("boom");
            co_return 0;
          }) == 1);
    CHECK(log.has("lev::run: the main task threw: boom"));
    const int code = lev::run(
        [](lev::Loop& loop, std::stop_token stop) -> lev::Task<int> {
          loop.spawn(send_later(loop, SIGUSR2, 5ms));
          co_await lev::until_stopped(stop);
          (void)(co_await loop.sleep_for(1h)).value();  // throws operation_canceled
          co_return 0;
        },
        on_usr2(0ms));
    CHECK(code == 128 + SIGUSR2);
  }

  TEST_CASE("what the main task spawned and left running is cancelled and reaped when it returns") {
    const std::size_t fds = lev::test::open_fd_count();
    auto ended = std::make_shared<int>(0);
    auto background = [](lev::Loop& loop, std::shared_ptr<int> ended) -> lev::Task<> {
      struct Mark {
        std::shared_ptr<int> ended;
        ~Mark() { ++*ended; }
      } mark{std::move(ended)};
      (void)co_await loop.sleep_for(1h);
    };
    CHECK(lev::run([&](lev::Loop& loop) -> lev::Task<int> {
            loop.spawn(background(loop, ended));
            (void)co_await loop.nop();
            co_return 0;
          }) == 0);
    CHECK(*ended == 1);
    CHECK(lev::test::open_fd_count() == fds);
  }

  TEST_CASE("until_stopped ends at once for a stopped token, and when its task is cancelled") {
    lev::test::FakeLoop f;
    std::stop_source stopped;
    stopped.request_stop();
    f.loop.block_on(lev::until_stopped(stopped.get_token()));
    std::stop_source never;
    auto h = f.loop.spawn(lev::until_stopped(never.get_token()));
    f.loop.run_once();
    CHECK_FALSE(h.done());
    CHECK(f.loop.live_op_count() == 0);  // the wait is no operation: it keeps nothing alive
    h.abort();
    f.loop.run_once();
    CHECK(h.done());
    CHECK_FALSE(never.stop_requested());
    // A stop from another thread reaches a waiting task too.
    auto waiting = f.loop.spawn(lev::until_stopped(never.get_token()));
    f.loop.run_once();
    std::thread([&] { never.request_stop(); }).join();
    for (int i = 0; i < 100 && !waiting.done(); ++i) f.loop.run_once();
    CHECK(waiting.done());
  }
}
