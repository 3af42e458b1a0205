#include "lev/timer.hpp"

#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <span>
#include <system_error>

#include "lev/loop.hpp"

namespace lev {

namespace {
timespec to_timespec(Duration d) {
  auto ns = d.count();
  return timespec{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}
Error timer_error(const char* op, int fd) {
  return Error{std::error_code(errno, std::system_category()), op, fd, 0};
}
}  // namespace

Timer::Timer(Loop& loop)
    : loop_(&loop), fd_(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) {
  if (!fd_) throw std::system_error(errno, std::system_category(), "lev::Timer: timerfd_create");
}

Result<void> Timer::arm(Duration first, Duration interval) {
  itimerspec spec{};
  // it_value of zero would disarm: "at once" is the smallest positive delay
  spec.it_value = to_timespec(first > Duration::zero() ? first : Duration(1));
  spec.it_interval = to_timespec(interval > Duration::zero() ? interval : Duration::zero());
  if (::timerfd_settime(fd_.get(), 0, &spec, nullptr) != 0)
    return timer_error("timer arm", fd_.get());
  return {};
}

Result<void> Timer::disarm() {
  itimerspec spec{};
  if (::timerfd_settime(fd_.get(), 0, &spec, nullptr) != 0)
    return timer_error("timer disarm", fd_.get());
  return {};
}

Result<std::uint64_t> Timer::take_expirations() {
  std::uint64_t n = 0;
  if (::read(fd_.get(), &n, sizeof(n)) == sizeof(n)) return n;
  if (errno == EAGAIN) return std::uint64_t{0};
  return timer_error("timer read", fd_.get());
}

Task<Result<std::uint64_t>> Timer::wait() {
  std::uint64_t n = 0;
  auto r = co_await loop_->read(fd_, std::span(reinterpret_cast<char*>(&n), sizeof(n)));
  if (!r) co_return r.error();
  co_return n;
}

}  // namespace lev
