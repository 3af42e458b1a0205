#include "lev/loop.hpp"

#include <doctest/doctest.h>

#include <thread>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

#include "support.hpp"

namespace {

// A backend of the test's own: completes every op with `len` (or 0) at the
// next poll. Proves the backend contract is pluggable.
class EchoLenBackend final : public lev::CompletionBackend {
 public:
  void attach(lev::CompletionQueue& q) override { queue_ = &q; }
  std::string_view name() const noexcept override { return "echo-len"; }
  void submit(lev::detail::OpBase& op) override { pending_.push_back(&op); }
  void cancel(lev::detail::OpBase&) override {}
  void cancel_all() override {}
  std::size_t poll(std::optional<lev::Duration>) override {
    std::size_t n = pending_.size();
    for (auto* op : pending_) queue_->push(*op, static_cast<int>(op->len));
    pending_.clear();
    ++polls;
    return n;
  }
  std::size_t in_flight() const noexcept override { return pending_.size(); }
  int polls = 0;

 private:
  lev::CompletionQueue* queue_ = nullptr;
  std::vector<lev::detail::OpBase*> pending_;
};

}  // namespace

TEST_SUITE("loop") {
  TEST_CASE("a zero queue_size is rejected at construction with a message naming it") {
    CHECK_THROWS_WITH_AS((lev::Loop{lev::Model::proactor, {.queue_size = 0}}),
                         doctest::Contains("queue_size"), std::invalid_argument);
  }

  TEST_CASE("an unknown backend name is rejected with the name in the message") {
    CHECK_THROWS_WITH_AS((lev::Loop{lev::Model::proactor, {.backend = "kqueue"}}),
                         doctest::Contains("'kqueue'"), std::invalid_argument);
  }

  TEST_CASE("cqe_entries smaller than queue_size is rejected") {
    CHECK_THROWS_WITH_AS((lev::Loop{lev::Model::proactor, {.queue_size = 64, .cqe_entries = 8}}),
                         doctest::Contains("cqe_entries"), std::invalid_argument);
  }

  TEST_CASE("backend_name says which backend runs") {
    lev::Loop proactor{lev::Model::proactor, lev::test::proactor_options()};
    CHECK(proactor.backend_name() == (lev::test::has_uring() ? "uring" : "epoll"));
    lev::Loop fake{lev::Model::proactor, {.backend = "fake"}};
    CHECK(fake.backend_name() == "fake");
  }

  TEST_CASE("io_uring refused by seccomp is a clear error naming the cause") {
    for (int err : {ENOSYS, EPERM}) {
      std::string msg = lev::test::run_in_child([err] {
        std::string m = "no exception";
        if (!lev::test::deny_syscall(SYS_io_uring_setup, err))
          m = "seccomp failed";
        else
          try {
            lev::Loop loop{lev::Model::proactor};
          } catch (const std::system_error& e) {
            m = e.what();
          }
        std::fprintf(stderr, "%s", m.c_str());
      });
      INFO(msg);
      CHECK(msg.find("io_uring_setup failed") != std::string::npos);
      CHECK(msg.find(err == ENOSYS ? "ENOSYS" : "EPERM") != std::string::npos);
    }
  }

  TEST_CASE("every ring option combination runs a nop" * lev::test::needs_uring()) {
    struct Case {
      const char* name;
      lev::LoopOptions o;
    };
    Case cases[] = {
        {"defaults", {}},
        {"small queue", {.queue_size = 2}},
        {"cqe_entries", {.queue_size = 8, .cqe_entries = 64}},
        {"batch of 1", {.submit_batch_size = 1}},
        {"no single issuer", {.single_issuer = false}},
        {"sqpoll", {.sqpoll = true}},
    };
    for (auto& c : cases) {
      CAPTURE(c.name);
      lev::Loop loop{lev::Model::proactor, c.o};
      auto t = [&]() -> lev::Task<int> {
        int ok = 0;
        for (int i = 0; i < 10; ++i) ok += (co_await loop.nop()) ? 1 : 0;
        co_return ok;
      };
      CHECK(loop.block_on(t()) == 10);
    }
  }

  TEST_CASE("a full submission queue is flushed, not an error") {
    lev::Loop loop{lev::Model::proactor, lev::test::proactor_options({.queue_size = 4})};
    int done = 0;
    std::vector<lev::Operation> ops;
    for (int i = 0; i < 100; ++i)
      ops.push_back(loop.nop([&](lev::Operation&, lev::Result<void> r) { done += r ? 1 : 0; }));
    CHECK(loop.live_op_count() == 100);
    while (loop.live_op_count() > 0) loop.run_once();
    CHECK(done == 100);
  }

  TEST_CASE("a user-supplied backend object receives the operations") {
    auto be = std::make_shared<EchoLenBackend>();
    lev::Loop loop{lev::Model::proactor, {.backend = be}};
    CHECK(loop.backend_name() == "echo-len");
    char buf[17];
    auto t = [&]() -> lev::Task<std::size_t> { co_return (co_await loop.recv(3, buf)).value(); };
    CHECK(loop.block_on(t()) == 17);
    CHECK(be->polls >= 1);
  }

  TEST_CASE("run returns when nothing is live, and stop ends it early") {
    lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
    loop.run();  // nothing to do: returns at once
    CHECK_FALSE(loop.is_running());
    int fired = 0;
    bool running_inside = false;
    loop.after(std::chrono::milliseconds(1), [&](lev::Operation&, lev::Result<lev::Expired>) {
      ++fired;
      running_inside = loop.is_running();
      loop.stop();
    });
    auto late =
        loop.after(std::chrono::hours(1),
                   [&](lev::Operation&, lev::Result<lev::Expired> r) { fired += r ? 1 : 0; });
    loop.run();
    CHECK(fired == 1);
    CHECK(running_inside);
    CHECK_FALSE(loop.is_running());
    CHECK(loop.live_op_count() == 1);  // the hour-long timer is still armed
    late.cancel();
    loop.run();
    CHECK(late.is_cancelled());
    CHECK(fired == 1);
    CHECK(loop.live_op_count() == 0);
  }

  TEST_CASE("run_once counts backend events plus deliveries") {
    auto fake = std::make_shared<lev::FakeBackend>();
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    int calls = 0;
    for (int i = 0; i < 3; ++i) loop.nop([&](lev::Operation&, lev::Result<void>) { ++calls; });
    CHECK(loop.run_once() == 0);  // flushed, nothing completed
    for (auto* op : std::vector(fake->pending())) fake->complete(*op, 0);
    CHECK(loop.run_once() == 3);
    CHECK(calls == 3);
    CHECK(loop.run_once() == 0);
  }

  TEST_CASE("the clock is monotonic by default and replaceable") {
    lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
    auto a = loop.clock().now();
    auto b = loop.now();
    CHECK(b >= a);
    auto vc = std::make_shared<lev::VirtualClock>();
    lev::Loop v{lev::Model::proactor, lev::test::proactor_options({.clock = vc})};
    auto t0 = v.now();
    vc->advance(std::chrono::seconds(5));
    CHECK(v.now() - t0 == std::chrono::seconds(5));
  }

  TEST_CASE("a submission batch reaches the kernel in one round" * lev::test::needs_uring()) {
    lev::Loop loop{lev::Model::proactor};
    int done = 0;
    for (int i = 0; i < 32; ++i) loop.nop([&](lev::Operation&, lev::Result<void>) { ++done; });
    // one round flushes all 32 and (nops complete inline in the kernel)
    // reaps them; at most a second round if the CQ was read early
    std::size_t rounds = 0;
    while (done < 32 && rounds < 4) {
      loop.run_once();
      ++rounds;
    }
    CHECK(done == 32);
    CHECK(rounds <= 2);
  }

  TEST_CASE("an operation started on a thread that does not own the loop fails in a debug build, saying so") {
#ifdef NDEBUG
    MESSAGE("skipped: a release build checks no thread");
#else
    const std::string err = lev::test::run_in_child([] {
      lev::Loop loop{lev::Model::proactor, {.backend = "fake"}};
      std::thread other([&] { (void)loop.nop([](lev::Operation&, lev::Result<void>) {}); });
      other.join();
    });
    CHECK(err.find("does not own its Loop") != std::string::npos);
#endif
  }
}
