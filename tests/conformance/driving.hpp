#pragma once
// What the conformance rows drive an op with: the tasks that await it
// (directly, moved, under with_timeout), the loop of a row (Rig), the
// watchdog of a form that may block a thread, and which rows exist
// (not_applicable). See rows.hpp.
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "conformance/forms.hpp"
#include "conformance/matrix.hpp"
#include "lev/fake.hpp"
#include "lev/loop.hpp"
#include "lev/when.hpp"

namespace lev::conformance {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

/// How long a row waits for anything before it calls it a failure.
inline constexpr Duration kSettleLimit = 500ms;
/// The time limit of the timeout rows (the op is held in flight: it expires).
inline constexpr Duration kShortLimit = 5ms;
/// When the watchdog of a form that may block a thread starts unsticking it.
inline constexpr auto kWatchdogAfter = 250ms;

/// How an op's task ended: how many times it was resumed past its
/// co_await (one settlement: exactly once), and with what.
struct Probe {
  int resumed = 0;
  Outcome out;
};

inline void record(Probe& p, Outcome o) {
  ++p.resumed;
  p.out = std::move(o);
}

template <class Fx>
Task<> op_task(Fx& fx, Loop& loop, Timeout t, Probe& p) {
  auto r = co_await fx.make(loop, t);
  record(p, fx.outcome(r));
}

/// Awaits an awaiter that was moved in (the original is gone by then).
template <class Fx, class A>
Task<> moved_task(Fx& fx, A a, Probe& p) {
  auto r = co_await std::move(a);
  record(p, fx.outcome(r));
}

template <class Fx>
Task<> with_timeout_task(Fx& fx, Loop& loop, Duration limit, Probe& p) {
  auto r = co_await with_timeout(loop, fx.make(loop, std::nullopt), limit);
  record(p, fx.outcome(r));
}

inline Task<> rounds_task(Loop& loop, int n) {
  for (int i = 0; i < n; ++i) (void)co_await loop.after(Duration::zero());
}

/// A FIFO opened by a loop op: on the epoll engine it holds a file worker
/// until its other end is opened (what the worker-queue rows queue behind).
inline Task<> blocker_task(Loop& loop, const std::string& path, Probe& p) {
  auto r = co_await loop.make<detail::OpenatOp>(AT_FDCWD, path.c_str(), O_RDONLY, 0u);
  Fd owned{r ? *r : -1};
  record(p, outcome_of(r));
}

template <class Fx>
Task<> close_and_reuse_task(Loop& loop, Fx& fx) {
  Fd fd = fx.release_fd();
  const int number = fd.get();
  (void)co_await loop.close(fd);
  fx.reuse(number);  // at once: no loop round in between
}

/// Calls `fx.unstick()` from its own thread every 100 ms once kWatchdogAfter
/// has passed, until stopped; counts the times it had to act.
template <class Fx>
class Watchdog {
 public:
  explicit Watchdog(Fx& fx) : thread_([this, &fx] { watch(fx); }) {}
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog() { stop(); }
  void stop() {
    done_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] int acted() const { return acted_.load(); }

 private:
  void watch(Fx& fx) {
    const auto start = SteadyClock::now();
    while (!done_.load()) {
      std::this_thread::sleep_for(5ms);
      if (SteadyClock::now() - start < kWatchdogAfter) continue;
      if (fx.unstick()) acted_.fetch_add(1);
      std::this_thread::sleep_for(95ms);
    }
  }
  std::atomic<bool> done_{false};
  std::atomic<int> acted_{0};
  std::thread thread_;
};

/// The loop of a row (and the fake behind it, on the fake engine).
struct Rig {
  std::shared_ptr<FakeBackend> fake;
  std::unique_ptr<Loop> loop;
  Rig(const EngineSpec& e, unsigned file_workers) {
    LoopOptions o;
    o.file_workers = file_workers;
    o.recv_buffer_count = 16;
    o.datagram_buffer_count = 4;
    o.datagram_buffer_size = 1024;
    if (e.fake()) {
      fake = std::make_shared<FakeBackend>();
      o.backend = fake;
    } else {
      o.backend = e.backend;
    }
    if (e.env) ::setenv(e.env, "1", 1);
    try {
      loop = std::make_unique<Loop>(e.model, o);
    } catch (...) {
      if (e.env) ::unsetenv(e.env);
      throw;
    }
    if (e.env) ::unsetenv(e.env);
  }
};

template <class Fx>
constexpr bool is_again_form = Fx::again;
template <class Fx>
constexpr bool is_never_cancelled = Fx::never_cancelled;

/// Why the row (Fx, engine, event) does not exist, or empty when it does.
template <class Fx>
std::string not_applicable(const EngineSpec& e, Event ev) {
  const bool pends = Fx::pends || e.fake();
  switch (ev) {
    case Event::stop_pending:
    case Event::abort_pending:
    case Event::timeout_pending:
    case Event::with_timeout_pending:
    case Event::with_timeout_stopped:
    case Event::teardown_pending:
      return pends ? "" : "n/a: it completes at once on a real engine (never held in flight)";
    case Event::stop_worker_queued:
    case Event::timeout_worker_queued:
    case Event::with_timeout_worker_queued:
    case Event::teardown_worker_queued:
      if (!e.epoll()) return "n/a: no file workers on this engine";
      return Fx::on_worker ? "" : "n/a: not a file-worker op";
    case Event::close_reuse_worker_queued:
      if (!e.epoll()) return "n/a: no file workers on this engine";
      if (!Fx::on_worker) return "n/a: not a file-worker op";
      return Fx::has_fd ? "" : "n/a: no fd of its own to close";
    case Event::stop_worker_running:
    case Event::timeout_worker_running:
    case Event::with_timeout_worker_running:
    case Event::teardown_worker_running:
      if (!e.epoll()) return "n/a: no file workers on this engine";
      return Fx::stuck_on_worker ? "" : "n/a: nothing holds it running on a worker";
    case Event::close_reuse_pending:
    case Event::threads_close_reuse:
      if (e.fake()) return "n/a: the fake has no fd table (the simulation models reuse)";
      if (!Fx::has_fd) return "n/a: no fd of its own to close";
      return Fx::pends ? "" : "n/a: it completes at once on a real engine (never held in flight)";
    default:
      return "";
  }
}

}  // namespace lev::conformance
