#pragma once
// One row of the conformance matrix: a form (tests/conformance/forms.hpp)
// on an engine through a lifecycle event, driven through the public API
// only (spawn, stop tokens, JoinHandle::abort, {.timeout}, with_timeout,
// loop.close, ~Loop), with the checks every row makes: one settlement, the
// right error, the bytes where they belong (the form's effect), nothing
// left live, no pool buffer held. The fd count and sanitizer reports are
// checked around the row by the runner (conformance_test.cpp).
#include <dirent.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "conformance/driving.hpp"
#include "conformance/forms.hpp"
#include "conformance/matrix.hpp"
#include "lev/fake.hpp"
#include "lev/join_handle.hpp"
#include "lev/loop.hpp"
#include "lev/when.hpp"

namespace lev::conformance {

/// Runs one row. Construct, run(), then read `failures` / `skipped`.
template <class Fx>
class Driver {
 public:
  Driver(const EngineSpec& e, Event ev, Env env) : spec_(e), event_(ev), env_(std::move(env)) {
    env_.fake = e.fake();
  }

  std::vector<std::string> failures;
  std::string skipped;

  void run() {
    try {
      body();
    } catch (const std::exception& ex) {
      failures.push_back(std::string("threw: ") + ex.what());
    }
    if (watchdog_) {
      watchdog_->stop();
      if (watchdog_->acted())
        failures.push_back(
            "stuck: a thread stayed blocked in the op until the test unstuck it "
            "(after " +
            std::to_string(std::chrono::milliseconds(kWatchdogAfter).count()) + " ms)");
    }
    // Loop first (it may still reference the form's buffers), then the form.
    // A worker still held by the blocker's FIFO open (a row that failed
    // before releasing it) is released while ~Loop waits for it.
    std::atomic<bool> gone{false};
    std::thread releaser;
    if (blocker_)
      releaser = std::thread([this, &gone] {
        while (!gone.load() && !blocker_->open_writer()) std::this_thread::sleep_for(2ms);
      });
    rig_.reset();
    gone.store(true);
    if (releaser.joinable()) releaser.join();
    watchdog_.reset();
    fx_.reset();
  }

 private:
  Loop& loop() { return *rig_->loop; }
  void expect(bool ok, const std::string& what) {
    if (!ok) failures.push_back(what);
  }
  [[nodiscard]] bool real() const { return !spec_.fake(); }

  // ---- driving ------------------------------------------------------------
  void pump(int n = 3) { loop().block_on(rounds_task(loop(), n)); }
  /// Makes the op able to complete: its resource ready on a real engine,
  /// fed by the test on the fake.
  void release() {
    if (real())
      fx_->unblock();
    else
      feed_fake_ = true;
  }
  void feed_fake() {
    if (!feed_fake_ || !rig_->fake) return;
    complete_on_fake();
  }
  /// The fake's "kernel" does what the op waits for: completes its op, or
  /// (a form with a peer: TLS) runs the syscalls of what is pending.
  void complete_on_fake() {
    if constexpr (requires { fx_->fake_pump(*rig_->fake); }) {
      fx_->fake_pump(*rig_->fake);
    } else if (detail::OpBase* op = rig_->fake->find(Fx::Desc::kind)) {
      fx_->fake_complete(*rig_->fake, *op);
    }
  }
  /// A form that needs the loop before its op (TLS: a connection, its
  /// handshake) sets up once, on the thread that runs the loop.
  void prepare() {
    if constexpr (requires { fx_->prepare(loop(), rig_->fake.get()); }) {
      if (std::exchange(prepared_, true)) return;
      fx_->prepare(loop(), rig_->fake.get());
    }
  }
  /// A form whose op is held at a later step (TLS send_all: its second
  /// chunk) runs the loop until it is there.
  void advance() {
    if constexpr (requires { fx_->advance(loop(), rig_->fake.get()); })
      fx_->advance(loop(), rig_->fake.get());
  }
  /// A form whose peer talks back (TLS) lets it go on, each round a row waits.
  void step_peer() {
    if constexpr (requires { fx_->step(); }) fx_->step();
  }
  static Task<bool> wait_task(Driver& d, const Probe& p, SteadyClock::time_point deadline) {
    while (p.resumed == 0) {
      if (SteadyClock::now() >= deadline) co_return false;
      d.feed_fake();
      d.step_peer();
      (void)co_await d.loop().after(1ms);
    }
    co_return true;
  }
  /// Runs the loop until `p` settled (at most kSettleLimit of real time).
  bool wait(const Probe& p) {
    const bool in_time = loop().block_on(wait_task(*this, p, SteadyClock::now() + kSettleLimit));
    expect(in_time,
           "never settled (waited " +
               std::to_string(
                   std::chrono::duration_cast<std::chrono::milliseconds>(kSettleLimit).count()) +
               " ms)");
    return in_time;
  }
  /// ~Loop now; fails the row when it took long.
  void destroy_loop() {
    const auto start = SteadyClock::now();
    rig_->loop.reset();
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start).count();
    expect(ms < 250, "~Loop took " + std::to_string(ms) + " ms");
  }
  void prepare_complete() {
    if constexpr (requires { fx_->complete; })
      fx_->complete = true;  // connect: a listener with room
  }

  // ---- checks ---------------------------------------------------------------
  void expect_once(const Probe& p) {
    expect(p.resumed == 1, "settled " + std::to_string(p.resumed) + " times (want exactly once)");
  }
  void expect_success(const Probe& p) {
    expect_once(p);
    if (p.resumed == 0) return;
    expect(p.out.ok, "failed: " + p.out.text);
    expect(p.out.wrong.empty(), "wrong value: " + p.out.wrong);
    if (p.out.ok && real() && Fx::effect_known) {
      expect(fx_->effect(), "reported success but took no effect");
      const std::string w = fx_->effect_wrong();
      expect(w.empty(), "wrong effect: " + w);
    }
  }
  /// After a cancellation (stop, abort, deadline) that `want` names.
  void expect_ended(const Probe& p, std::errc want, bool may_complete) {
    expect_once(p);
    if (p.resumed == 0) return;
    const std::error_code w = std::make_error_code(want);
    if constexpr (is_never_cancelled<Fx>) {
      expect(p.out.ok, "a close must never be cancelled, got: " + p.out.text);
      if (real()) expect(fx_->effect(), "the fd was left open");
      return;
    }
    if (p.out.ok && may_complete) {  // completed before the cancel reached it: fine, if true
      if (real() && Fx::effect_known) expect(fx_->effect(), "reported success but took no effect");
      return;
    }
    expect(!p.out.ok && p.out.code == want,
           "ended with \"" + p.out.text + "\", want " + w.message());
    if (p.out.ok) return;
    if constexpr (requires { fx_->cancelled_wrong(loop(), event_); }) {
      // What the cancel left (TLS: usable or not, as docs/cancellation.md says).
      const std::string left = fx_->cancelled_wrong(loop(), event_);
      expect(left.empty(), left);
    }
    nothing_happened();
  }
  /// A cancelled op took no effect: what unblock() provides stays for the
  /// next op (sources), nothing of it reached the peer (sinks).
  void nothing_happened() {
    if (!real()) return;
    after_cancel();
    pump();
    if constexpr (is_again_form<Fx>) {
      again();
    } else if (Fx::effect_known) {
      expect(!fx_->effect(), "cancelled, but took effect");
    }
  }
  void after_cancel() {
    if constexpr (requires { fx_->after_cancel(); })
      fx_->after_cancel();
    else
      fx_->unblock();
  }
  /// A fresh op of the form gets what is waiting for it (nothing was lost).
  void again() {
    prepare_complete();
    Probe q;
    loop().spawn(op_task(*fx_, loop(), Timeout{150ms}, q));
    if (!wait(q)) return;
    expect(q.out.ok, "the next op did not get what was waiting: " + q.out.text);
    expect(q.out.wrong.empty(), "the next op got a wrong value: " + q.out.wrong);
    if (q.out.ok && Fx::effect_known) {
      const std::string w = fx_->effect_wrong();
      expect(w.empty(), "the next op: " + w);
    }
  }
  /// A fresh op of the form waits for its fd, then completes when unblock()
  /// makes it ready (the engine watches the fd now at that number).
  void again_wait() {
    Probe q;
    loop().spawn(op_task(*fx_, loop(), Timeout{150ms}, q));
    pump();
    fx_->unblock();
    if (!wait(q)) return;
    expect(q.out.ok, "a new op waiting on the reused number did not complete: " + q.out.text);
    expect(q.out.wrong.empty(), "a new op on the reused number got a wrong value: " + q.out.wrong);
    if (q.out.ok && Fx::effect_known) {
      const std::string w = fx_->effect_wrong();
      expect(w.empty(), "a new op on the reused number: " + w);
    }
  }
  /// Nothing live, no pool buffer held.
  void expect_quiet() {
    if constexpr (requires { fx_->quiesce(); }) {
      fx_->quiesce();
      pump();
    }
    expect(loop().live_op_count() == 0,
           std::to_string(loop().live_op_count()) + " ops still live after the row");
    const auto r = loop().recv_buffer_stats();
    expect(r.in_use == 0, std::to_string(r.in_use) + " recv pool buffers still held");
    const auto d = loop().datagram_buffer_stats();
    expect(d.in_use == 0, std::to_string(d.in_use) + " datagram pool buffers still held");
  }

  // ---- the events -----------------------------------------------------------
  void body() {
    const bool worker_queue =
        event_ == Event::stop_worker_queued || event_ == Event::timeout_worker_queued ||
        event_ == Event::with_timeout_worker_queued || event_ == Event::close_reuse_worker_queued ||
        event_ == Event::teardown_worker_queued;
    rig_.emplace(spec_, worker_queue ? 1u : 4u);
    fx_.emplace(env_);
    if (std::string why = fx_->skip(loop()); !why.empty() && spec_.uring()) {
      skipped = why;
      return;
    }
    if constexpr (Fx::may_stick) watchdog_ = std::make_unique<Watchdog<Fx>>(*fx_);
    if (!is_thread_event(event_)) prepare();  // the thread events: on thread B
    switch (event_) {
      case Event::completes:
        return completes();
      case Event::moved:
        return moved();
      case Event::stop_before:
      case Event::stop_queued:
      case Event::timeout_queued:
      case Event::with_timeout_queued:
        return queued();
      case Event::stop_pending:
      case Event::abort_pending:
      case Event::timeout_pending:
      case Event::with_timeout_pending:
      case Event::with_timeout_stopped:
      case Event::stop_worker_running:
      case Event::timeout_worker_running:
      case Event::with_timeout_worker_running:
        return pending();
      case Event::stop_worker_queued:
      case Event::timeout_worker_queued:
      case Event::with_timeout_worker_queued:
      case Event::close_reuse_worker_queued:
      case Event::teardown_worker_queued:
        return worker_queued();
      case Event::close_reuse_pending:
        return close_reuse();
      case Event::threads:
        return threads();
      case Event::threads_close_reuse:
        return threads_close_reuse();
      case Event::teardown_queued:
      case Event::teardown_pending:
      case Event::teardown_completed:
      case Event::teardown_worker_running:
        return teardown();
      case Event::count:
        break;
    }
  }

  void completes() {
    prepare_complete();
    Probe p;
    loop().spawn(op_task(*fx_, loop(), std::nullopt, p));
    pump();
    release();
    if (wait(p)) expect_success(p);
    expect_quiet();
  }

// An awaiter whose op leaves its Args unset (writev without `all`) copies
// them unset when moved: GCC sees that through the row's storage.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)  // GCC's alone (clang: an unknown warning group, an error under -Werror)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
  void moved() {
    prepare_complete();
    Probe p;
    using A = decltype(fx_->make(loop(), Timeout{}));
    // The original lives in storage the row poisons once it is destroyed:
    // anything left pointing at it reads garbage, not a stale copy.
    alignas(A) unsigned char storage[sizeof(A)]{};
    A* original = ::new (static_cast<void*>(storage)) A(fx_->make(loop(), std::nullopt));
    Task<> task = moved_task(*fx_, std::move(*original), p);
    original->~A();
    std::memset(storage, 0xA5, sizeof(storage));
    loop().spawn(std::move(task));
    pump();
    release();
    if (wait(p)) expect_success(p);
    expect_quiet();
  }
#pragma GCC diagnostic pop

  void queued() {
    if (Fx::never_cancelled) feed_fake_ = true;  // the fake's "kernel" closes it anyway
    Probe p;
    std::stop_source src;
    const bool deadline = event_ != Event::stop_queued && event_ != Event::stop_before;
    if (event_ == Event::stop_before) {
      // The scope is stopped before the task runs: every op in it starts
      // cancelled (docs/cancellation.md), even one that would complete at once.
      src.request_stop();
      loop().spawn(op_task(*fx_, loop(), std::nullopt, p), src.get_token());
    } else if (event_ == Event::timeout_queued) {
      loop().spawn(op_task(*fx_, loop(), Timeout{Duration::zero()}, p));
    } else if (event_ == Event::with_timeout_queued) {
      loop().spawn(with_timeout_task(*fx_, loop(), Duration::zero(), p));
    } else {
      loop().spawn(op_task(*fx_, loop(), std::nullopt, p), src.get_token());
      loop().drain_callbacks();  // the task runs to its co_await: started, not yet polled
      src.request_stop();
    }
    if (wait(p))
      expect_ended(p, deadline ? std::errc::timed_out : std::errc::operation_canceled,
                   event_ != Event::stop_before && !(Fx::pends || spec_.fake()));
    expect_quiet();
  }

  void pending() {
    if (Fx::never_cancelled) feed_fake_ = true;
    Probe p;
    std::stop_source src;
    JoinHandle<void> handle;
    std::errc want = std::errc::operation_canceled;
    switch (event_) {
      case Event::timeout_pending:
        loop().spawn(op_task(*fx_, loop(), Timeout{kShortLimit}, p));
        want = std::errc::timed_out;
        break;
      case Event::with_timeout_pending:
        loop().spawn(with_timeout_task(*fx_, loop(), kShortLimit, p));
        want = std::errc::timed_out;
        break;
      case Event::with_timeout_worker_running:
        loop().spawn(with_timeout_task(*fx_, loop(), 30ms, p));
        want = std::errc::timed_out;
        break;
      case Event::timeout_worker_running:
        loop().spawn(op_task(*fx_, loop(), Timeout{30ms}, p));
        want = std::errc::timed_out;
        break;
      case Event::with_timeout_stopped:
        loop().spawn(with_timeout_task(*fx_, loop(), 30s, p), src.get_token());
        break;
      case Event::abort_pending:
        handle = loop().spawn(op_task(*fx_, loop(), std::nullopt, p));
        break;
      default:
        loop().spawn(op_task(*fx_, loop(), std::nullopt, p), src.get_token());
    }
    pump();
    advance();
    if (event_ == Event::stop_worker_running) std::this_thread::sleep_for(20ms);  // in the worker
    if (event_ == Event::abort_pending) handle.abort();
    src.request_stop();
    if (wait(p)) expect_ended(p, want, !Fx::pends && real());
    expect_quiet();
  }

  void worker_queued() {
    Fifo& blocker = blocker_.emplace(env_.path("blocker"), true);
    Probe bp, p;
    std::stop_source src;
    loop().spawn(blocker_task(loop(), blocker.path, bp));
    if (event_ == Event::with_timeout_worker_queued) {
      loop().spawn(with_timeout_task(*fx_, loop(), kShortLimit, p));
    } else {
      const Timeout limit =
          event_ == Event::timeout_worker_queued ? Timeout{kShortLimit} : std::nullopt;
      loop().spawn(op_task(*fx_, loop(), limit, p), src.get_token());
    }
    pump();
    if (bp.resumed) {
      skipped = "the blocker's open was not held on a file worker: no way to queue behind it";
      return;
    }
    if (event_ == Event::teardown_worker_queued) {
      // ~Loop waits for the worker's running op: the FIFO's writer comes 50 ms in.
      std::atomic<bool> gone{false};
      std::thread opener([&blocker, &gone] {
        std::this_thread::sleep_for(50ms);
        while (!gone.load() && !blocker.open_writer()) std::this_thread::sleep_for(2ms);
      });
      rig_->loop.reset();
      gone.store(true);
      opener.join();
      expect(p.resumed == 0, "resumed " + std::to_string(p.resumed) + " times by ~Loop");
      if (real() && Fx::effect_known && !is_never_cancelled<Fx>)
        expect(!fx_->effect(), "it ran after ~Loop cancelled it");
      return;
    }
    if (event_ == Event::stop_worker_queued) src.request_stop();
    if (event_ == Event::close_reuse_worker_queued)
      loop().block_on(close_and_reuse_task(loop(), *fx_));
    pump();
    // The target settles while the worker is still held (it never ran).
    if (event_ != Event::close_reuse_worker_queued && wait(p)) {
      expect_once(p);
      const std::errc want = event_ == Event::stop_worker_queued ? std::errc::operation_canceled
                                                                 : std::errc::timed_out;
      expect(!p.out.ok && p.out.code == want,
             "ended with \"" + p.out.text + "\", want " + std::make_error_code(want).message());
    }
    for (int i = 0; i < 400 && !blocker.open_writer(); ++i) std::this_thread::sleep_for(5ms);
    if (wait(bp)) expect(bp.out.ok, "the blocker's open failed: " + bp.out.text);
    if (event_ == Event::close_reuse_worker_queued) {
      if (wait(p)) {
        expect_once(p);
        expect(!p.out.ok && (p.out.code == std::errc::operation_canceled ||
                             p.out.code == std::errc::bad_file_descriptor),
               "its fd was closed while it was queued; it ended with \"" + p.out.text + "\"");
      }
      pump();
      const std::string w = fx_->reuse_wrong();
      expect(w.empty(), w);
    } else {
      pump();
      if (real() && Fx::effect_known) expect(!fx_->effect(), "cancelled, but it ran later");
    }
    expect_quiet();
  }

  /// Closes the op's fd while it is in flight and reuses the number at
  /// once; the old op must end (cancelled or EBADF) without touching the
  /// new fd, and the new fd must work.
  void close_reuse_steps() {
    Probe p;
    std::stop_source src;
    pump(1);  // enters block_on: this thread owns the loop from here on
    prepare();
    loop().spawn(op_task(*fx_, loop(), std::nullopt, p), src.get_token());
    pump();
    loop().block_on(close_and_reuse_task(loop(), *fx_));
    pump(5);
    if (!p.resumed) src.request_stop();  // io_uring: a close does not end it (a documented limit)
    if (wait(p)) {
      expect_once(p);
      expect(!p.out.ok && (p.out.code == std::errc::operation_canceled ||
                           p.out.code == std::errc::bad_file_descriptor),
             "its fd was closed and reused; it ended with \"" + p.out.text +
                 "\" (it ran on the new fd)");
    }
    const std::string w = fx_->reuse_wrong();
    expect(w.empty(), w);
    // The new fd works: what waits on it is taken, and a new op waits on it.
    if constexpr (Fx::again || Fx::again_after_reuse) again();
    if constexpr (Fx::again || (Fx::effect_known && Fx::pends)) again_wait();
    expect_quiet();
  }
  void close_reuse() { close_reuse_steps(); }

  void threads() {
    prepare_complete();
    Probe p;
    std::string b_error;
    std::thread b([&] {
      try {
        pump(1);  // enters block_on: thread B owns the loop from here on
        prepare();
        loop().spawn(op_task(*fx_, loop(), std::nullopt, p));
        pump();
        release();
        if (wait(p)) expect_success(p);
        expect_quiet();
      } catch (const std::exception& ex) {
        b_error = ex.what();
      }
    });
    b.join();
    expect(b_error.empty(), "running on thread B threw: " + b_error);
    std::thread c([&] { rig_->loop.reset(); });
    c.join();
  }

  void threads_close_reuse() {
    std::string b_error;
    std::thread b([&] {
      try {
        close_reuse_steps();
      } catch (const std::exception& ex) {
        b_error = ex.what();
      }
    });
    b.join();
    expect(b_error.empty(), "running on thread B threw: " + b_error);
  }

  void teardown() {
    Probe p;
    if (event_ == Event::teardown_completed) prepare_complete();
    loop().spawn(op_task(*fx_, loop(), std::nullopt, p));
    // teardown_completed of an op that completes at once: no round at all
    // on a real engine (one would deliver it), so it completes while ~Loop
    // cancels and reaps.
    if (event_ == Event::teardown_queued ||
        (event_ == Event::teardown_completed && !Fx::pends && real())) {
      loop().drain_callbacks();
    } else {
      pump();
    }
    if (event_ == Event::teardown_worker_running) std::this_thread::sleep_for(20ms);
    if (event_ == Event::teardown_completed && (Fx::pends || !real())) {
      if (real()) {
        fx_->unblock();
        std::this_thread::sleep_for(2ms);
      } else {
        complete_on_fake();  // queued, never delivered
      }
    }
    const int before = p.resumed;
    destroy_loop();
    expect(p.resumed == before, "resumed by ~Loop");
    expect(p.resumed <= 1, "settled " + std::to_string(p.resumed) + " times");
    if (!real() || event_ == Event::teardown_completed) return;
    if constexpr (is_never_cancelled<Fx>) {
      expect(fx_->effect(), "~Loop left the fd of a close open");
    } else if (Fx::pends && Fx::effect_known && p.resumed == 0) {
      after_cancel();
      expect(!fx_->effect(), "~Loop cancelled it, but it took effect afterwards");
    }
  }

  const EngineSpec& spec_;
  Event event_;
  Env env_;
  std::optional<Fx> fx_;
  std::optional<Rig> rig_;
  std::unique_ptr<Watchdog<Fx>> watchdog_;
  std::optional<Fifo> blocker_;  // the worker rows' FIFO, open until the loop is gone
  bool feed_fake_ = false;
  bool prepared_ = false;
};

}  // namespace lev::conformance
