// Runtime (thread-per-core), cross-loop posts and channels, offload.
#include "lev/runtime.hpp"

#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "lev/channel.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

TEST_SUITE("runtime") {
  TEST_CASE(
      "100,000 cross-loop posts are each delivered exactly once, on the target loop's thread") {
    for (unsigned n : {2u, 4u}) {
      for (lev::Model model : {lev::Model::proactor, lev::Model::reactor}) {
        CAPTURE(n);
        const lev::LoopOptions o =
            model == lev::Model::proactor ? lev::test::proactor_options() : lev::LoopOptions{};
        lev::Runtime rt{{.threads = n, .model = model, .loop = o, .stop_on_signals = false}};
        constexpr int kTotal = 100000;
        const int per_loop = kTotal / static_cast<int>(n);
        std::vector<std::atomic<int>> got(n);
        std::vector<std::thread::id> ids(n);
        std::atomic<int> ready{0}, delivered{0}, wrong_thread{0};
        for (std::size_t i = 0; i < n; ++i)
          rt.post_to(i, [&, i] {
            ids[i] = std::this_thread::get_id();
            ++ready;
          });
        while (ready.load() < static_cast<int>(n)) std::this_thread::sleep_for(1ms);
        // every loop posts its share to the next loop, from its own thread
        for (std::size_t i = 0; i < n; ++i)
          rt.spawn_on(i, [&, i](lev::Loop& loop) -> lev::Task<> {
            const std::size_t to = (i + 1) % n;
            for (int k = 0; k < per_loop; ++k) {
              rt.post_to(to, [&, to] {
                if (std::this_thread::get_id() != ids[to]) ++wrong_thread;
                ++got[to];
                if (++delivered == kTotal) rt.stop();
              });
              if (k % 1000 == 999) (void)co_await loop.nop();  // let the loop breathe
            }
          });
        rt.wait();
        CHECK(delivered.load() == kTotal);
        CHECK(wrong_thread.load() == 0);
        for (std::size_t i = 0; i < n; ++i) CHECK(got[i].load() == per_loop);
      }
    }
  }

  TEST_CASE("a channel between two loops of a runtime: every item once, in order") {
    lev::Runtime rt{
        {.threads = 2, .loop = lev::test::proactor_options(), .stop_on_signals = false}};
    lev::Channel<int> ch{8};
    constexpr int kItems = 50000;
    std::atomic<bool> ok{true};
    std::atomic<int> received{0};
    rt.spawn_on(0, [&](lev::Loop&) -> lev::Task<> {
      for (int i = 0; i < kItems; ++i)
        if (!co_await ch.send(i)) ok = false;
      ch.close();
    });
    rt.spawn_on(1, [&](lev::Loop&) -> lev::Task<> {
      int expect = 0;
      while (auto v = co_await ch.receive()) {
        if (*v != expect++) ok = false;
        ++received;
      }
      rt.stop();
    });
    rt.wait();
    CHECK(ok.load());
    CHECK(received.load() == kItems);
  }

  TEST_CASE("io_uring loops wake each other by MSG_RING where the kernel has it, by eventfd "
            "otherwise" *
            lev::test::needs_uring()) {
    for (bool force_eventfd : {false, true}) {
      CAPTURE(force_eventfd);
      if (force_eventfd) ::setenv("LEV_URING_NO_MSG_RING", "1", 1);
      lev::Runtime rt{{.threads = 2, .stop_on_signals = false}};
      if (force_eventfd) ::unsetenv("LEV_URING_NO_MSG_RING");
      std::atomic<bool> has_msg_ring{false};
      std::atomic<int> pongs{0};
      constexpr int kRounds = 200;
      // ping-pong: each side sleeps in the kernel until the other posts
      lev::Channel<int> to1{1}, to0{1};
      rt.spawn_on(0, [&](lev::Loop& loop) -> lev::Task<> {
        has_msg_ring = loop.features().msg_ring;
        for (int i = 0; i < kRounds; ++i) {
          (void)co_await to1.send(i);
          if (co_await to0.receive()) ++pongs;
        }
      });
      rt.spawn_on(1, [&](lev::Loop&) -> lev::Task<> {
        for (int i = 0; i < kRounds; ++i) {
          auto v = co_await to1.receive();
          (void)co_await to0.send(*v);
        }
      });
      while (pongs.load() < kRounds) std::this_thread::sleep_for(1ms);
      lev::Loop::WakeupStats w0{}, w1{};
      std::atomic<int> read{0};
      rt.post_to(0, [&] {
        w0 = rt.loop(0).wakeup_stats();
        ++read;
      });
      rt.post_to(1, [&] {
        w1 = rt.loop(1).wakeup_stats();
        ++read;
      });
      while (read.load() < 2) std::this_thread::sleep_for(1ms);
      rt.stop();
      rt.wait();
      const std::uint64_t by_ring = w0.msg_ring + w1.msg_ring;
      const std::uint64_t by_efd = w0.eventfd + w1.eventfd;
      if (has_msg_ring && !force_eventfd) {
        CHECK(by_ring >= static_cast<std::uint64_t>(kRounds));  // the pongs were woken by messages
      } else {
        CHECK(by_ring == 0);
        CHECK(by_efd >= static_cast<std::uint64_t>(kRounds));
      }
    }
  }

  TEST_CASE("offload runs the blocking function elsewhere and resumes on the caller's loop") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      const auto loop_thread = std::this_thread::get_id();
      auto body = [&]() -> lev::Task<> {
        std::thread::id worker;
        int v = co_await loop.offload([&] {
          worker = std::this_thread::get_id();
          std::this_thread::sleep_for(5ms);
          return 42;
        });
        CHECK(v == 42);
        CHECK(worker != loop_thread);
        CHECK(std::this_thread::get_id() == loop_thread);
        CHECK_THROWS_WITH_AS(
            co_await loop.offload([]() -> int { throw std::runtime_error("boom"); }), "boom",
            std::runtime_error);
        co_await loop.offload([] {});
      };
      loop.block_on(body());
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a loop destroyed while an offloaded function runs waits for it") {
    std::atomic<bool> finished{false};
    {
      lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
      auto body = [&]() -> lev::Task<> {
        co_await loop.offload([&] {
          std::this_thread::sleep_for(30ms);
          finished = true;
        });
      };
      loop.spawn(body());
      loop.run_once();
      CHECK(loop.live_op_count() == 1);
    }
    CHECK(finished.load());
  }

  TEST_CASE("SIGTERM stops every loop of a runtime; remaining tasks are destroyed cleanly") {
    // In-process: the runtime blocks SIGTERM in this thread and its loop
    // threads (lev's worker threads block every signal), so the
    // process-directed signal below can only be read by loop 0's signalfd.
    auto [a, b] = lev::test::socket_pair();
    std::atomic<int> destroyed{0};
    struct Count {
      std::atomic<int>* n;
      ~Count() { ++*n; }
    };
    {
      lev::Runtime rt{{.threads = 2, .loop = lev::test::proactor_options()}};
      for (std::size_t i = 0; i < 2; ++i)
        rt.spawn_on(i, [&](lev::Loop& loop) -> lev::Task<> {
          Count c{&destroyed};
          std::array<std::byte, 8> buf{};
          (void)co_await loop.recv(a, buf);  // never completes
        });
      std::this_thread::sleep_for(20ms);
      REQUIRE(::kill(::getpid(), SIGTERM) == 0);
      rt.wait();
      CHECK(rt.stopped());
    }
    CHECK(destroyed.load() == 2);
    sigset_t now;
    ::pthread_sigmask(SIG_SETMASK, nullptr, &now);
    CHECK_FALSE(::sigismember(&now, SIGTERM));  // the mask is restored
  }

  TEST_CASE("bad runtime input is a clear error") {
    lev::Runtime rt{
        {.threads = 1, .loop = lev::test::proactor_options(), .stop_on_signals = false}};
    CHECK_THROWS_AS((void)rt.loop(5), std::out_of_range);
    CHECK_THROWS_WITH_AS(
        lev::Runtime({.threads = 1, .loop = {.queue_size = 0}, .stop_on_signals = false}),
        "lev::Loop: queue_size must be between 1 and 32768 (got 0)", std::invalid_argument);
  }
  TEST_CASE(
      "an fd one loop of a runtime used, closed on another loop's thread, is watched afresh when "
      "its number comes back") {
    // Regression (issue 20, item 4): a close reached only the engines of
    // the thread that made it. Loop 1 waited on fd N (registered, not
    // readable); loop 0's thread closed N; the next socket took N, and
    // loop 1's recv on it, with bytes waiting, timed out. (Applying that
    // close at loop 1's next round must also leave alone the recv loop 1
    // submitted on the new N meanwhile: a first fix cancelled it.)
    for (const std::string backend : {"reactor", "proactor/epoll"}) {
      CAPTURE(backend);
      const bool reactor = backend == "reactor";
      lev::Runtime rt{{.threads = 2,
                       .model = reactor ? lev::Model::reactor : lev::Model::proactor,
                       .loop = {.backend = "epoll"},
                       .stop_on_signals = false}};
      std::atomic<bool> closed{false};
      int number = -1, reused = -1;
      std::optional<lev::Result<std::size_t>> got;
      rt.spawn_on(1, [&](lev::Loop& loop) -> lev::Task<> {
        auto [a, b] = lev::test::socket_pair();
        (void)co_await loop.readable(a, 20ms);  // registers a's number, then times out
        number = a.release();
        rt.post_to(0, [&, n = number] {
          lev::Fd f{n};  // closed through lev on loop 0's thread
          f.reset();
          closed = true;
        });
        // Waits inside this round (the loop thread blocked), so that the
        // close lands after the round began and the recv below is submitted
        // before the loop's next round applies it.
        for (int i = 0; i < 2000 && !closed; ++i) std::this_thread::sleep_for(1ms);
        auto [c, d] = lev::test::socket_pair();
        reused = c.get();
        (void)::send(d.get(), "hello", 5, 0);
        char buf[16];
        got = co_await loop.recv(c, buf, {.timeout = 1s});
        rt.stop();
      });
      rt.wait();
      REQUIRE(closed);
      REQUIRE(reused == number);  // the kernel reuses the lowest free number
      REQUIRE(got);
      REQUIRE_MESSAGE(*got, got->error().message());
      CHECK(**got == 5);
    }
  }
}
