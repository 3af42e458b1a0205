#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Long-lived event sources on a Loop (both models): `Watcher` (readiness
/// of an fd, level-triggered), `Signal` (signalfd), `Waker` (eventfd, wake
/// from any thread), `PidWatch` (pidfd). Each is a move-only handle created
/// by the Loop; destroying it (or cancel()) stops it. Their callbacks run on
/// the loop's thread, only while the loop drains its completion queue.
///
/// Any handle may be destroyed (or cancelled, or assigned over) inside its
/// own callback: the callback object, and what it captures, stays alive
/// until that call returns, and no further call follows.
///
///     auto w = loop.watch(fd, {.read = [](lev::Watcher& w) { ... }});
///     auto s = loop.signal(SIGINT, [&](int) { loop.stop(); });
///     auto k = loop.waker([] { ... });   k.wake();  // from any thread
///     auto p = loop.pid(child, [](pid_t, lev::Result<lev::ExitStatus> st) { ... });
///
/// Each keeps Loop::run() going while it is armed, unless told otherwise
/// (`s.keep_alive(false)`, `WatchOptions::keep_alive`): a Signal that
/// should only stop a server need not keep an otherwise finished loop
/// running.

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>

#include "lev/error.hpp"

namespace lev {

class Loop;
class Watcher;

namespace detail {
struct WatcherState;
struct SignalEntry;
struct WakerState;
struct PidState;
}  // namespace detail

/// How a process ended.
struct ExitStatus {
  bool exited = false;  ///< true: it exited (see `code`); false: a signal killed it
  int code = 0;         ///< the exit code, when `exited`
  int signal = 0;       ///< the signal that killed it, when not `exited`
  /// "exited with code 3" / "killed by signal 9 (Killed)"
  [[nodiscard]] std::string describe() const;
};

/// Callbacks of a Watcher.
struct WatchOptions {
  std::function<void(Watcher&)> read{};                 ///< readable (or hung up)
  std::function<void(Watcher&)> write{};                ///< writable
  std::function<void(Watcher&, const Error&)> error{};  ///< EBADF and friends
  bool want_read = true;   ///< interest at creation (only where a callback is set)
  bool want_write = true;  ///< interest at creation (only where a callback is set)
  /// false: the watch alone does not keep Loop::run() going (Watcher::keep_alive).
  bool keep_alive = true;
};

/// Level-triggered readiness of one fd: the read callback runs as long as
/// the fd stays readable and read interest is on (the same for write).
/// Interest and callbacks may be changed at any time, also from inside a
/// callback. After disable() or want_read(false) (want_write(false)) the
/// read (write) callback is not called again until the interest is back,
/// even for a readiness the loop had already received (an earlier callback
/// of the same round turned it off). One Watcher per fd per loop (a second
/// one is an error).
class Watcher {
 public:
  /// A handle to nothing (what Loop::watch replaces).
  Watcher() noexcept = default;
  /// Takes over `o`'s watch; `o` is inactive after.
  Watcher(Watcher&& o) noexcept;
  /// Stops this watch, then takes over `o`'s.
  Watcher& operator=(Watcher&& o) noexcept;
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;
  /// Stops watching (waits for in-flight readiness ops to settle).
  ~Watcher();

  /// The watched descriptor (-1 once cancelled).
  [[nodiscard]] int fd() const noexcept;
  /// Still watching: not cancelled, not moved from.
  [[nodiscard]] bool active() const noexcept;
  /// Turns read / write interest on or off. Returns EBADF as an error when
  /// the fd has been closed under the watcher.
  Result<void> want_read(bool on);
  /// Turns write interest on or off (see want_read).
  Result<void> want_write(bool on);
  /// Replaces the read callback (an empty one: no read callbacks).
  void on_read(std::function<void(Watcher&)> cb);
  /// Replaces the write callback (an empty one: no write callbacks).
  void on_write(std::function<void(Watcher&)> cb);
  /// Replaces the error callback.
  void on_error(std::function<void(Watcher&, const Error&)> cb);
  /// Suspends / resumes both interests without forgetting them.
  void disable();
  /// Resumes the interests disable() suspended.
  Result<void> enable();
  /// Stops for good and releases the fd's registration.
  void cancel();
  /// false: this watch alone does not keep Loop::run() going (run() returns
  /// once nothing else is live, as with libuv's uv_unref); it stays armed
  /// and works whenever the loop runs. true (the default) undoes it. Loop
  /// thread only.
  void keep_alive(bool on) noexcept;
  /// Whether it keeps Loop::run() going (false once cancelled).
  [[nodiscard]] bool keeps_alive() const noexcept;

 private:
  friend class Loop;
  friend struct detail::WatcherState;
  explicit Watcher(detail::WatcherState* s) noexcept;
  detail::WatcherState* state_ = nullptr;
};

/// A signal handler by signalfd. While any Signal for a signal number is
/// alive, that signal is blocked in the loop's thread (block it in every
/// thread of a multi-threaded program) and arrives as a callback; the
/// previous mask is restored when the last one goes. A delivery still
/// pending then (it arrived while watched, and the loop did not read it
/// yet) is consumed with the watch: it never runs the default action. A
/// Signal created inside a callback receives the deliveries after the one
/// being dispatched, not that one.
class Signal {
 public:
  /// A handle to nothing (what Loop::signal replaces).
  Signal() noexcept = default;
  /// Takes over `o`'s handler; `o` is inactive after.
  Signal(Signal&& o) noexcept : entry_(std::exchange(o.entry_, nullptr)) {}
  /// Cancels this handler, then takes over `o`'s.
  Signal& operator=(Signal&& o) noexcept;
  Signal(const Signal&) = delete;
  Signal& operator=(const Signal&) = delete;
  /// cancel().
  ~Signal() { cancel(); }
  /// Stops calling the callback; the last Signal for a number restores the
  /// signal mask. Loop thread only.
  void cancel() noexcept;
  /// Not cancelled, not moved from.
  [[nodiscard]] bool active() const noexcept { return entry_ != nullptr; }
  /// false: this handler alone does not keep Loop::run() going (run() returns
  /// once nothing else is live, as with libuv's uv_unref); it stays armed
  /// and works whenever the loop runs. true (the default) undoes it. Loop
  /// thread only.
  void keep_alive(bool on) noexcept;
  /// Whether it keeps Loop::run() going (false once cancelled).
  [[nodiscard]] bool keeps_alive() const noexcept;

 private:
  friend class Loop;
  explicit Signal(detail::SignalEntry* e) noexcept : entry_(e) {}
  detail::SignalEntry* entry_ = nullptr;
};

/// Wakes the loop from any thread (or a signal handler): `wake()` writes an
/// eventfd; the callback runs once per batch of wakes (they coalesce).
class Waker {
 public:
  /// A handle to nothing (what Loop::waker replaces).
  Waker() noexcept = default;
  /// Takes over `o`'s eventfd and callback; `o` is inactive after.
  Waker(Waker&& o) noexcept = default;
  /// Cancels this waker, then takes over `o`'s.
  Waker& operator=(Waker&& o) noexcept;
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;
  /// cancel().
  ~Waker() { cancel(); }
  /// Thread-safe and async-signal-safe.
  void wake() const noexcept;
  /// A copyable, thread-safe wake-only handle; harmless after cancel().
  [[nodiscard]] std::function<void()> remote() const;
  /// Stops calling the callback; later wakes do nothing. Loop thread only.
  void cancel() noexcept;
  /// Not cancelled, not moved from.
  [[nodiscard]] bool active() const noexcept { return state_ != nullptr; }
  /// false: this waker alone does not keep Loop::run() going (run() returns
  /// once nothing else is live, as with libuv's uv_unref); it stays armed
  /// and works whenever the loop runs. true (the default) undoes it. Loop
  /// thread only.
  void keep_alive(bool on) noexcept;
  /// Whether it keeps Loop::run() going (false once cancelled).
  [[nodiscard]] bool keeps_alive() const noexcept;

 private:
  friend class Loop;
  explicit Waker(std::shared_ptr<detail::WakerState> s) noexcept : state_(std::move(s)) {}
  std::shared_ptr<detail::WakerState> state_;
};

/// Notification of a process's exit by pidfd. The callback gets the pid and
/// its ExitStatus, and the child is reaped; or an error when the status
/// cannot be had (ECHILD: the process is not our child, or was reaped
/// elsewhere). A status is never made up. No callback after cancel().
class PidWatch {
 public:
  /// A handle to nothing (what Loop::pid replaces).
  PidWatch() noexcept = default;
  /// Takes over `o`'s watch; `o` is inactive after.
  PidWatch(PidWatch&& o) noexcept : state_(std::exchange(o.state_, nullptr)) {}
  /// Cancels this watch, then takes over `o`'s.
  PidWatch& operator=(PidWatch&& o) noexcept;
  PidWatch(const PidWatch&) = delete;
  PidWatch& operator=(const PidWatch&) = delete;
  /// cancel().
  ~PidWatch() { cancel(); }
  /// Stops watching; the callback will not run, and the process is not
  /// reaped by lev. Loop thread only.
  void cancel() noexcept;
  /// Watching: not cancelled, not fired, not moved from.
  [[nodiscard]] bool active() const noexcept;
  /// false: this watch alone does not keep Loop::run() going (run() returns
  /// once nothing else is live, as with libuv's uv_unref); it stays armed
  /// and works whenever the loop runs. true (the default) undoes it. Loop
  /// thread only.
  void keep_alive(bool on) noexcept;
  /// Whether it keeps Loop::run() going (false once cancelled).
  [[nodiscard]] bool keeps_alive() const noexcept;

 private:
  friend class Loop;
  explicit PidWatch(detail::PidState* s) noexcept : state_(s) {}
  detail::PidState* state_ = nullptr;
};

}  // namespace lev
