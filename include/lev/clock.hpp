#pragma once
/// \file
/// The loop's time source. Deadlines are monotonic; the fake backend plugs a
/// virtual clock in through the same interface.

#include <chrono>

namespace lev {

using Duration = std::chrono::nanoseconds;
using TimePoint = std::chrono::time_point<std::chrono::steady_clock, Duration>;

/// A monotonic time source. `now()` must never go backwards.
/// Called from the loop's thread only.
class Clock {
 public:
  virtual ~Clock() = default;
  [[nodiscard]] virtual TimePoint now() const noexcept = 0;
};

/// CLOCK_MONOTONIC, through std::chrono::steady_clock.
class MonotonicClock final : public Clock {
 public:
  [[nodiscard]] TimePoint now() const noexcept override {
    return std::chrono::time_point_cast<Duration>(std::chrono::steady_clock::now());
  }
};

/// A clock that moves only when told to: tests advance it by hand.
class VirtualClock final : public Clock {
 public:
  explicit VirtualClock(TimePoint start = TimePoint{std::chrono::seconds(1)}) noexcept
      : now_(start) {}
  [[nodiscard]] TimePoint now() const noexcept override { return now_; }
  void advance(Duration d) noexcept {
    if (d > Duration::zero()) now_ += d;
  }
  void set(TimePoint t) noexcept {
    if (t > now_) now_ = t;
  }

 private:
  TimePoint now_;
};

}  // namespace lev
