#include "lev/loop.hpp"

#include <doctest/doctest.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

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

  // Regression: the counts were unsigned / std::uint32_t, so clang 19
  // rejected `{.file_workers = n}` with a std::size_t n (narrowing in a
  // braced initializer; g++ warned), and a count above 2^32 was cut to its
  // low bits without a word (queue_size 2^32 + 1 was 1).
  TEST_CASE("counts are taken as std::size_t, and one beyond a backend's range is rejected") {
    const std::vector<int> workers(3);
    const std::size_t depth = 64, big = (std::size_t{1} << 32) + 1;
    lev::Loop loop{
        lev::Model::reactor,
        {.queue_size = depth, .recv_buffer_count = depth, .file_workers = workers.size()}};
    CHECK(loop.backend_name() == "epoll");
    CHECK_THROWS_WITH_AS((lev::Loop{lev::Model::proactor, {.backend = "fake", .queue_size = big}}),
                         "lev::Loop: queue_size must be between 1 and 32768 (got 4294967297)",
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS((lev::Loop{lev::Model::reactor, {.file_workers = big}}),
                         doctest::Contains("file_workers must be between 1 and 65536"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS((lev::Loop{lev::Model::reactor, {.submit_batch_size = big}}),
                         doctest::Contains("submit_batch_size"), std::invalid_argument);
    CHECK_THROWS_WITH_AS((lev::Loop{lev::Model::reactor, {.cqe_entries = 65537}}),
                         doctest::Contains("cqe_entries"), std::invalid_argument);
    CHECK_THROWS_WITH_AS((lev::Loop{lev::Model::reactor, {.datagram_buffer_size = big}}),
                         doctest::Contains("datagram_buffer_size"), std::invalid_argument);
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

  // Before: on io_uring the loop's own CQE walk resumed a plain coroutine
  // completion at once even when a completion ahead of it in the same walk
  // had been queued (a callback's), so the later one ran first.
  TEST_CASE("completions reaped together are delivered in their order, callbacks and coroutines") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      std::string order;
      auto body = [&]() -> lev::Task<> {
        for (int i = 0; i < 3; ++i) {
          loop.nop([&](lev::Operation&, lev::Result<void>) { order += 'c'; });
          (void)co_await loop.nop();  // submitted after the callback's nop
          order += 't';
        }
      };
      loop.block_on(body());
      CHECK(order == "ctctct");
    });
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

namespace {

// Runs `fn` on a thread of its own and waits for it; what it throws is
// rethrown here (doctest's checks stay on the test's thread).
template <class Fn>
void on_thread(Fn fn) {
  std::exception_ptr err;
  std::thread t([&] {
    try {
      fn();
    } catch (...) {
      err = std::current_exception();
    }
  });
  t.join();
  if (err) std::rethrow_exception(err);
}

// A thread that runs the jobs it is given, one at a time, and lives until
// the Worker is destroyed (a loop's former thread, still alive).
class Worker {
 public:
  Worker() : thread_([this] { serve(); }) {}
  ~Worker() {
    {
      std::lock_guard lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// Runs `fn` on the worker's thread and waits; rethrows what it threw.
  void run(const std::function<void()>& fn) {
    std::exception_ptr err;
    std::unique_lock lock(mu_);
    job_ = [&] {
      try {
        fn();
      } catch (...) {
        err = std::current_exception();
      }
    };
    pending_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !pending_; });
    if (err) std::rethrow_exception(err);
  }

 private:
  void serve() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return quit_ || pending_; });
      if (!pending_) return;
      lock.unlock();
      job_();
      lock.lock();
      pending_ = false;
      cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool pending_ = false;
  bool quit_ = false;
  std::thread thread_;  // last: starts once the rest is built
};

// What one turn of a loop on the calling thread got right, out of 3 (5
// on a real engine): the task runs on the thread that owns the loop, a
// timer, a post from yet another thread, (a nop, a socket round trip).
lev::Task<int> turn_task(lev::Loop& loop, bool real) {
  int score = loop.in_loop_thread() ? 1 : 0;
  if (co_await loop.after(std::chrono::milliseconds(1))) ++score;
  bool posted = false;
  std::thread poster([&] { loop.post([&] { posted = true; }); });
  poster.join();
  for (int i = 0; i < 1000 && !posted; ++i) (void)co_await loop.after(std::chrono::milliseconds(1));
  if (posted) ++score;
  if (real) {
    if (co_await loop.nop()) ++score;
    auto [a, b] = lev::test::socket_pair();
    char buf[8]{};
    auto sent = co_await loop.send(a, std::string_view("hand"));
    auto got = co_await loop.recv(b, buf);
    if (sent && got && *got == 4 && std::string_view(buf, 4) == "hand") ++score;
  }
  co_return score;
}

// A turn by block_on, then one by run() until a spawned task is done.
int one_turn(lev::Loop& loop, bool real) {
  int score = loop.block_on(turn_task(loop, real));
  int spawned = 0;
  auto body = [](lev::Loop& l, bool r, int& out) -> lev::Task<> { out = co_await turn_task(l, r); };
  loop.spawn(body(loop, real, spawned));
  loop.run();
  return score + spawned;
}

// Waits on a socket nobody writes to; the result when it ends.
lev::Task<> wait_recv(lev::Loop& loop, int fd, std::optional<lev::Result<std::size_t>>& out) {
  char buf[8];
  out = co_await loop.recv(fd, buf);
}

lev::Task<> nothing() { co_return; }

// Counts the frames of its tasks that are gone (destroyed or finished).
struct FrameGuard {
  int* gone;
  ~FrameGuard() { ++*gone; }
};

// A spawned task's wait that nobody satisfies: a recv into the frame, a
// pool recv (the kernel's provided buffers), a timer of an hour.
lev::Task<> hold_recv(lev::Loop& loop, int fd, int& gone,
                      std::optional<lev::Result<std::size_t>>& out) {
  FrameGuard g{&gone};
  char buf[8];
  out = co_await loop.recv(fd, buf);
}
lev::Task<> hold_pool_recv(lev::Loop& loop, int fd, int& gone, std::optional<bool>& ok) {
  FrameGuard g{&gone};
  auto got = co_await loop.recv(fd);
  ok = got.has_value();
}
lev::Task<> hold_timer(lev::Loop& loop, int& gone) {
  FrameGuard g{&gone};
  (void)co_await loop.after(std::chrono::hours(1));
}

// What a thread leaves in flight on an io_uring loop it built and ran,
// single_issuer (the defaults), before it exits.
struct LeftInFlight {
  std::unique_ptr<lev::Loop> loop;
  bool bound = false;  // the ring is SINGLE_ISSUER, bound to the thread that exited
  int gone = 0;
  std::optional<lev::Result<std::size_t>> recv;
  std::optional<bool> pool_recv;
};

// Builds the loop on a thread of its own, which starts a recv, a pool
// recv (when pool_fd >= 0) and a timer in spawned tasks, submits them and
// exits. The defaults: io_uring with single_issuer.
void leave_in_flight(LeftInFlight& s, int fd, int pool_fd, lev::Model model = lev::Model::proactor,
                     const lev::LoopOptions& o = {.backend = "uring"}) {
  on_thread([&] {
    s.loop = std::make_unique<lev::Loop>(model, o);
    s.bound = s.loop->features().single_issuer;
    s.loop->spawn(hold_recv(*s.loop, fd, s.gone, s.recv));
    if (pool_fd >= 0) s.loop->spawn(hold_pool_recv(*s.loop, pool_fd, s.gone, s.pool_recv));
    s.loop->spawn(hold_timer(*s.loop, s.gone));
    s.loop->block_on(nothing());  // started (SQEs filled)
    s.loop->block_on([](lev::Loop& l) -> lev::Task<> { (void)co_await l.nop(); }(*s.loop));
  });
}

// Starts wait_recv on the calling thread, which then owns the loop;
// `submitted`: one more round, so that the kernel has the request.
void start_recv(lev::Loop& loop, int fd, std::optional<lev::Result<std::size_t>>& out,
                bool submitted) {
  loop.block_on(nothing());
  loop.spawn(wait_recv(loop, fd, out));
  loop.block_on(nothing());  // the recv is started (its SQE filled)
  if (submitted) loop.block_on([](lev::Loop& l) -> lev::Task<> { (void)co_await l.nop(); }(loop));
}

}  // namespace

TEST_SUITE("loop threads") {
  // Regression: an io_uring loop could run only on the thread that built
  // it (its ring fd registered for that thread and entered with
  // IORING_ENTER_REGISTERED_RING; SINGLE_ISSUER bound to it): block_on on
  // another thread threw "io_uring_enter: Invalid argument".
  TEST_CASE(
      "a Loop built on one thread runs on a second, then a third, and is destroyed on a fourth") {
    struct Row {
      const char* name;
      lev::Model model;
      lev::LoopOptions o;
      bool real;
      const char* env = nullptr;      // set while the loop is built
      bool destroy_elsewhere = true;  // on a fourth thread
    };
    std::vector<Row> rows;
    if (lev::test::has_uring()) {
      rows.push_back({"proactor/uring", lev::Model::proactor, {.backend = "uring"}, true});
      rows.push_back({"proactor/uring without single_issuer",
                      lev::Model::proactor,
                      {.backend = "uring", .single_issuer = false},
                      true});
      rows.push_back({"proactor/uring with sqpoll",
                      lev::Model::proactor,
                      {.backend = "uring", .sqpoll = true},
                      true});
      rows.push_back({"proactor/uring entered through liburing",
                      lev::Model::proactor,
                      {.backend = "uring"},
                      true,
                      "LEV_URING_LIBURING_ENTER"});
    }
    // (an epoll engine destroyed on another thread than its builder's was
    // issue 20's defect 3: a thread-local registry; reactor_test has its
    // own regression test)
    rows.push_back({"reactor/epoll", lev::Model::reactor, {.backend = "epoll"}, true});
    rows.push_back({"proactor/epoll", lev::Model::proactor, {.backend = "epoll"}, true});
    rows.push_back({"proactor/fake", lev::Model::proactor, {.backend = "fake"}, false});
    for (const Row& r : rows) {
      SUBCASE(r.name) {
        if (r.env) ::setenv(r.env, "1", 1);
        auto loop = std::make_unique<lev::Loop>(r.model, r.o);  // thread A
        if (r.env) ::unsetenv(r.env);
        if (r.o.sqpoll) {
          const std::string sqpoll = loop->features().sqpoll ? "on" : "refused here";
          MESSAGE("sqpoll " << sqpoll);
        }
        CHECK(loop->in_loop_thread());
        const int per_turn = 2 * (r.real ? 5 : 3);
        int b = 0, c = 0;
        bool b_owner_after = false, a_owner_after_b = true;
        on_thread([&] {
          b = one_turn(*loop, r.real);
          b_owner_after = loop->in_loop_thread();  // B stays the owner after its run
        });
        a_owner_after_b = loop->in_loop_thread();
        on_thread([&] { c = one_turn(*loop, r.real); });
        CHECK(b == per_turn);
        CHECK(c == per_turn);
        CHECK(b_owner_after);
        CHECK_FALSE(a_owner_after_b);
        // Destroyed on D with a spawned task still waiting on a timer.
        auto destroy = [&] {
          loop->block_on(nothing());  // D owns it now
          loop->spawn([](lev::Loop& l) -> lev::Task<> {
            (void)co_await l.after(std::chrono::hours(1));
          }(*loop));
          loop->run_once();
          loop.reset();
        };
        if (r.destroy_elsewhere)
          on_thread(destroy);
        else
          destroy();
      }
    }
  }

  // Regression (found with the hand-over tests): ~UringBackend unregistered
  // its ring fd's index from the destroying thread's table of registered
  // rings, where that index may name another loop's ring of that thread.
  TEST_CASE(
      "an io_uring loop destroyed on a thread that runs another leaves that loop's ring alone" *
      lev::test::needs_uring()) {
    std::unique_ptr<lev::Loop> x;
    Worker first;  // x's thread, alive throughout (its table keeps x's index)
    auto nop = [](lev::Loop& l) -> lev::Task<bool> { co_return bool(co_await l.nop()); };
    first.run([&] {
      // (single_issuer would make the kernel refuse the wrong unregistration)
      x = std::make_unique<lev::Loop>(lev::Model::proactor,
                                      lev::LoopOptions{.backend = "uring", .single_issuer = false});
      CHECK(x->block_on(nop(*x)));
    });
    bool before = false, after = false;
    on_thread([&] {
      lev::Loop y{lev::Model::proactor, {.backend = "uring"}};
      before = y.block_on(nop(y));
      x.reset();
      after = y.block_on(nop(y));
    });
    CHECK(before);
    CHECK(after);
  }

  // The contract is one thread at a time, with nothing in flight when the
  // loop changes hands. What io_uring does otherwise, said plainly: the
  // kernel ties a request to the thread that submitted it.
  TEST_CASE(
      "an io_uring loop with single_issuer refuses to move while an op it started is in flight, "
      "saying why" *
      lev::test::needs_uring()) {
    auto [a, b] = lev::test::socket_pair();
    std::optional<lev::Loop> loop;
    std::optional<lev::Result<std::size_t>> got;
    Worker first;  // stays alive: it alone can finish what it submitted
    bool bound = false;
    first.run([&] {  // built and first run here: the ring is bound to this thread
      loop.emplace(lev::Model::proactor, lev::LoopOptions{.backend = "uring"});
      start_recv(*loop, a.get(), got, true);
      bound = loop->features().single_issuer;
    });
    if (!bound) {
      MESSAGE("skipped: this kernel has no SINGLE_ISSUER");
      first.run([&] { loop.reset(); });
      return;
    }
    std::string why;
    on_thread([&] {
      try {
        loop->block_on(nothing());
      } catch (const std::logic_error& e) {
        why = e.what();
      }
    });
    CHECK(why.find("single_issuer") != std::string::npos);
    CHECK(why.find("1 operation(s)") != std::string::npos);
    // Back on its first thread the loop goes on, and the recv completes.
    first.run([&] {
      REQUIRE(::send(b.get(), "x", 1, MSG_NOSIGNAL) == 1);
      loop->run();
      loop.reset();
    });
    REQUIRE(got);
    CHECK(got->value() == 1);
  }

  TEST_CASE("with single_issuer an op started but not yet submitted moves with the loop" *
            lev::test::needs_uring()) {
    auto [a, b] = lev::test::socket_pair();
    lev::Loop loop{lev::Model::proactor, {.backend = "uring"}};
    std::optional<lev::Result<std::size_t>> got;
    on_thread([&] { start_recv(loop, a.get(), got, false); });
    on_thread([&] {
      REQUIRE(::send(b.get(), "y", 1, MSG_NOSIGNAL) == 1);
      loop.run();
    });
    REQUIRE(got);
    CHECK(got->value() == 1);
  }

  TEST_CASE(
      "without single_issuer an op in flight at a hand-over completes while its thread lives, and "
      "is cancelled once it has exited" *
      lev::test::needs_uring()) {
    auto [a, b] = lev::test::socket_pair();
    auto [c, d] = lev::test::socket_pair();
    lev::Loop loop{lev::Model::proactor, {.backend = "uring", .single_issuer = false}};
    std::optional<lev::Result<std::size_t>> lives, exits;
    {
      Worker first;
      first.run([&] { start_recv(loop, a.get(), lives, true); });
      on_thread([&] {
        REQUIRE(::send(b.get(), "x", 1, MSG_NOSIGNAL) == 1);
        loop.run();  // the worker is alive: its request completes
      });
      REQUIRE(lives);
      CHECK(lives->value() == 1);
      first.run([&] { start_recv(loop, c.get(), exits, true); });
    }  // the worker exits
    // Its request's completion would run on the thread that submitted it,
    // which is gone: the kernel fails it with ECANCELED when data comes.
    REQUIRE(::send(d.get(), "z", 1, MSG_NOSIGNAL) == 1);
    loop.run();
    REQUIRE(exits);
    REQUIRE_FALSE(*exits);
    CHECK(exits->error().is_cancelled());
  }

  // Regression (issue 20, found by the conformance matrix): a loop built in
  // main and first run in a std::thread had its SINGLE_ISSUER ring bound to
  // that thread; destroyed back in main with a recv still in the kernel,
  // ~Loop threw std::logic_error ("cannot move to this thread") out of a
  // destructor: std::terminate. Such a loop gets a ring any thread may use.
  TEST_CASE(
      "a Loop built in main, run in a std::thread and destroyed in main with a recv in flight "
      "ends cleanly on every engine") {
    std::vector<std::pair<const char*, lev::LoopOptions>> rows;
    if (lev::test::has_uring()) rows.push_back({"proactor/uring", {.backend = "uring"}});
    rows.push_back({"proactor/epoll", {.backend = "epoll"}});
    for (const auto& [name, o] : rows) {
      SUBCASE(name) {
        auto [a, b] = lev::test::socket_pair();
        const std::size_t fds = lev::test::open_fd_count();
        {
          lev::Loop loop{lev::Model::proactor, o};
          std::optional<lev::Result<std::size_t>> got;
          on_thread([&] { start_recv(loop, a.get(), got, true); });
          CHECK_FALSE(got);  // still waiting when the thread ends
          const bool single = loop.features().single_issuer;
          CHECK_FALSE(single);
        }  // ~Loop here, on main: cancels the recv and reaps it
        CHECK(lev::test::open_fd_count() == fds);
        // The socket is still usable: nothing of the dead recv took its bytes.
        REQUIRE(::send(b.get(), "q", 1, MSG_NOSIGNAL) == 1);
        char c = 0;
        CHECK(::recv(a.get(), &c, 1, MSG_DONTWAIT) == 1);
        CHECK(c == 'q');
      }
    }
  }

  // Regression: a loop built and run on thread A (SINGLE_ISSUER and
  // DEFER_TASKRUN, the defaults), left with ops in flight when A exited
  // and destroyed on thread B, terminated the process: ~Loop waited for
  // the completions A owed, the ring refused B (io_uring_enter: EEXIST),
  // and the move to a new ring threw out of the noexcept teardown.
  TEST_CASE(
      "a loop whose thread exited with ops in flight is destroyed on another thread: every op "
      "ends, no frame or descriptor is left, on every engine") {
    std::vector<std::tuple<const char*, lev::Model, lev::LoopOptions>> rows;
    if (lev::test::has_uring()) {
      rows.emplace_back("proactor/uring", lev::Model::proactor,
                        lev::LoopOptions{.backend = "uring"});
      rows.emplace_back("proactor/uring without single_issuer", lev::Model::proactor,
                        lev::LoopOptions{.backend = "uring", .single_issuer = false});
    }
    rows.emplace_back("proactor/epoll", lev::Model::proactor, lev::LoopOptions{.backend = "epoll"});
    rows.emplace_back("reactor/epoll", lev::Model::reactor, lev::LoopOptions{.backend = "epoll"});
    for (const auto& [name, model, o] : rows) {
      SUBCASE(name) {
        auto [a, b] = lev::test::socket_pair();
        auto [c, d] = lev::test::socket_pair();
        const std::size_t fds = lev::test::open_fd_count();
        LeftInFlight s;
        leave_in_flight(s, a.get(), c.get(), model, o);  // thread A has exited here
        if (std::string_view(name) == "proactor/uring" && !s.bound)
          MESSAGE("this kernel has no SINGLE_ISSUER: the ring is not bound");
        CHECK(s.gone == 0);
        s.loop.reset();      // on this thread, B
        CHECK(s.gone == 3);  // every frame destroyed (or finished)
        CHECK(lev::test::open_fd_count() == fds);
        // Nothing of the dead requests is left on the sockets: the bytes
        // sent now reach a plain recv.
        for (int fd : {a.get(), c.get()}) {
          const int peer = fd == a.get() ? b.get() : d.get();
          REQUIRE(::send(peer, "q", 1, MSG_NOSIGNAL) == 1);
          char ch = 0;
          CHECK(::recv(fd, &ch, 1, MSG_DONTWAIT) == 1);
          CHECK(ch == 'q');
        }
      }
    }
  }

  // The same loop run, not only destroyed, on B once A has exited: what A
  // left in the kernel ends cancelled (as on a ring without single_issuer
  // whose thread exited), and the loop goes on on B.
  TEST_CASE(
      "an io_uring loop whose thread exited with a recv in flight runs on another thread: the "
      "recv ends cancelled and the loop goes on" *
      lev::test::needs_uring()) {
    auto [a, b] = lev::test::socket_pair();
    const std::size_t fds = lev::test::open_fd_count();
    {
      LeftInFlight s;
      on_thread([&] {
        s.loop =
            std::make_unique<lev::Loop>(lev::Model::proactor, lev::LoopOptions{.backend = "uring"});
        s.bound = s.loop->features().single_issuer;
        start_recv(*s.loop, a.get(), s.recv, true);
      });
      if (!s.bound) MESSAGE("this kernel has no SINGLE_ISSUER: the ring is not bound");
      int turn = 0;
      std::atomic<bool> hung{false};
      on_thread([&] {  // B: a thread of its own, so that A's exit is all that changed
        {
          // Bounds the run: a hang fails the checks below, it does not wait for ever.
          std::jthread stopper([&](std::stop_token st) {
            for (int i = 0; i < 500 && !st.stop_requested(); ++i)
              std::this_thread::sleep_for(std::chrono::milliseconds(10));
            if (st.stop_requested()) return;
            hung = true;
            s.loop->stop();
          });
          s.loop->run();  // returns once the cancelled recv is delivered
        }
        turn = one_turn(*s.loop, true);
        s.loop.reset();
      });
      REQUIRE(s.recv);
      REQUIRE_FALSE(*s.recv);
      CHECK(s.recv->error().is_cancelled());
      CHECK_FALSE(hung);
      CHECK(turn == 10);
    }
    CHECK(lev::test::open_fd_count() == fds);
  }

  // The receive pool moves too: the exit hook read which buffers the
  // kernel had taken (IORING_REGISTER_PBUF_STATUS, 6.8+), the others go to
  // a buffer ring of the new ring, and the pool recv goes on there. On an
  // older kernel the loop refuses to move, saying why; it is still
  // destroyed cleanly.
  TEST_CASE(
      "an io_uring loop whose thread exited with a pool recv in flight runs on another thread, its "
      "receive pool with it" *
      lev::test::needs_uring()) {
    auto [a, b] = lev::test::socket_pair();
    auto [c, d] = lev::test::socket_pair();
    const std::size_t fds = lev::test::open_fd_count();
    LeftInFlight s;
    leave_in_flight(s, a.get(), c.get());
    if (!s.bound) {
      MESSAGE("skipped: this kernel has no SINGLE_ISSUER");
      s.loop.reset();
      return;
    }
    utsname u{};
    int major = 0, minor = 0;
    const bool status = ::uname(&u) == 0 && std::sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
                        (major > 6 || (major == 6 && minor >= 8));
    std::string why;
    bool pool_recv_done = false;
    std::string body(100000, '\0'), got;
    for (std::size_t i = 0; i < body.size(); ++i)
      body[i] = static_cast<char>('a' + (i * 7 + i / 26) % 26);
    auto move_and_read = [](lev::Loop& l, int fd, int peer, LeftInFlight& st, const std::string& in,
                            std::string& out) -> lev::Task<bool> {
      if (::send(peer, "p", 1, MSG_NOSIGNAL) != 1) co_return false;
      for (int i = 0; i < 400 && !st.pool_recv; ++i)
        (void)co_await l.after(std::chrono::milliseconds(5));
      if (!st.pool_recv) co_return false;
      // Then many buffers held at once: a buffer the new ring were given
      // twice would show as bytes overwritten.
      if (::send(peer, in.data(), in.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(in.size()))
        co_return false;
      std::vector<lev::Buffer> held;
      std::size_t n = 0;
      while (n < in.size()) {
        auto b = co_await l.recv(fd);
        if (!b || b->empty()) co_return false;
        n += b->size();
        held.push_back(std::move(*b));
      }
      for (const lev::Buffer& b : held) out.append(b.view());
      co_return true;
    };
    on_thread([&] {
      try {
        pool_recv_done = s.loop->block_on(move_and_read(*s.loop, c.get(), d.get(), s, body, got));
        CHECK(s.loop->recv_buffer_stats().in_use == 0);
      } catch (const std::logic_error& e) {
        why = e.what();
      }
      s.loop.reset();
    });
    if (status) {
      CHECK(why.empty());
      CHECK(pool_recv_done);
      REQUIRE(s.pool_recv);
      CHECK(*s.pool_recv);  // its data, received on the new ring into a moved buffer
      CHECK(got == body);
      REQUIRE(s.recv);
      REQUIRE_FALSE(*s.recv);
      CHECK(s.recv->error().is_cancelled());
    } else {
      MESSAGE("this kernel cannot say which buffers it took (before 6.8): the loop stays");
      CHECK(why.find("receive buffers") != std::string::npos);
    }
    CHECK(s.gone == 3);
    CHECK(lev::test::open_fd_count() == fds);
  }
}
