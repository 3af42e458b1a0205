#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// The loop's time source. Deadlines are monotonic; the fake backend plugs a
/// virtual clock in through the same interface.

#include <chrono>

namespace lev {

/// Every time span lev takes or gives: nanoseconds.
using Duration = std::chrono::nanoseconds;
/// A point on a Clock's time line (steady_clock's epoch, in Duration).
using TimePoint = std::chrono::time_point<std::chrono::steady_clock, Duration>;

/// `at + d`, saturated: a deadline past the end of time is TimePoint::max()
/// (and before its start, TimePoint::min()), never a wrapped value. Every
/// deadline lev computes goes through it, so `Duration::max()` means "no
/// limit".
[[nodiscard]] constexpr TimePoint saturating_add(TimePoint at, Duration d) noexcept {
  const Duration::rep t = at.time_since_epoch().count();
  Duration::rep out;
  if (__builtin_add_overflow(t, d.count(), &out)) return d > Duration::zero() ? TimePoint::max() : TimePoint::min();
  return TimePoint{Duration{out}};
}

/// `later - earlier`, saturated to Duration::max() / min().
[[nodiscard]] constexpr Duration saturating_sub(TimePoint later, TimePoint earlier) noexcept {
  Duration::rep out;
  if (__builtin_sub_overflow(later.time_since_epoch().count(), earlier.time_since_epoch().count(),
                             &out))
    return later > earlier ? Duration::max() : Duration::min();
  return Duration{out};
}

/// A monotonic time source. `now()` must never go backwards.
/// Called from the loop's thread only.
class Clock {
 public:
  virtual ~Clock() = default;
  /// The current time; never less than a previous call returned.
  [[nodiscard]] virtual TimePoint now() const noexcept = 0;
};

/// CLOCK_MONOTONIC, through std::chrono::steady_clock.
class MonotonicClock final : public Clock {
 public:
  /// std::chrono::steady_clock::now().
  [[nodiscard]] TimePoint now() const noexcept override {
    return std::chrono::time_point_cast<Duration>(std::chrono::steady_clock::now());
  }
};

/// A clock that moves only when told to: tests advance it by hand.
class VirtualClock final : public Clock {
 public:
  /// A clock standing at `start` (one second past the epoch by default).
  explicit VirtualClock(TimePoint start = TimePoint{std::chrono::seconds(1)}) noexcept
      : now_(start) {}
  /// Where the clock stands.
  [[nodiscard]] TimePoint now() const noexcept override { return now_; }
  /// Moves the clock `d` forward (saturating); a negative `d` does nothing.
  void advance(Duration d) noexcept {
    if (d > Duration::zero()) now_ = saturating_add(now_, d);
  }
  /// Moves the clock to `t` if that is later; it never goes back.
  void set(TimePoint t) noexcept {
    if (t > now_) now_ = t;
  }

 private:
  TimePoint now_;
};

}  // namespace lev
