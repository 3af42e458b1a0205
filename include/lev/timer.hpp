#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Timer: a timerfd (CLOCK_MONOTONIC), one-shot or periodic. Awaitable on
/// either model, or watchable as an fd by a reactor Watcher.
///
///     lev::Timer t{loop};
///     t.arm(100ms, 100ms).value();                 // first in 100 ms, then every 100 ms
///     auto n = co_await t.wait();                  // expirations since the last wait

#include <cstdint>

#include "lev/clock.hpp"
#include "lev/error.hpp"
#include "lev/fd.hpp"
#include "lev/task.hpp"

namespace lev {

class Loop;

/// A timerfd owned by one loop (see the file comment). Use it on that
/// loop's thread; the fd closes when the Timer is destroyed.
class Timer {
 public:
  /// Throws std::system_error if timerfd_create fails.
  explicit Timer(Loop& loop);
  /// First expiry after `first` (zero or less: at once), then every
  /// `interval` (zero = one-shot). Re-arming replaces the previous setting.
  Result<void> arm(Duration first, Duration interval = Duration::zero());
  /// Stops the timer; a wait() in progress keeps waiting until the next arm().
  Result<void> disarm();
  /// Waits for the next expiry; gives the number of expirations since the
  /// last wait (more than 1 when the waiter fell behind a periodic timer).
  Task<Result<std::uint64_t>> wait();
  /// Reads the expirations without waiting (0 when none): for Watcher use.
  Result<std::uint64_t> take_expirations();
  /// The timerfd, for a Watcher (still owned by the Timer).
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

 private:
  Loop* loop_;
  Fd fd_;
};

}  // namespace lev
