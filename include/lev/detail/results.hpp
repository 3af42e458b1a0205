#pragma once
/// \file
/// One place that turns a completed OpBase into the typed Result its
/// awaiter or callback receives.

#include <cerrno>
#include <cstddef>

#include "lev/detail/op.hpp"
#include "lev/error.hpp"
#include "lev/op_types.hpp"

namespace lev::detail {

/// The error of a failed op; a cancel its deadline recorded (a loop timer,
/// an IdleDeadline) reads errc::timed_out. The kernel's internal restart
/// codes (ERESTARTSYS 512 to ERESTART_RESTARTBLOCK 516), which io_uring
/// hands out when a cancel interrupts an op blocked in an io-wq worker
/// (a splice, seen on 6.1), read as the cancellation they are.
[[gnu::cold, gnu::noinline]] inline Error op_error(const OpBase& op) {
  int err = -op.res;
  if (err >= 512 && err <= 516) err = ECANCELED;
  if (err == ECANCELED && op.cancel == Cancel::deadline) err = ETIMEDOUT;
  return Error::from_errno(err, op_name(op.kind), op.fd, op.done);
}

template <class T>
struct ResultOf;

template <>
struct ResultOf<std::size_t> {
  [[gnu::always_inline]] static Result<std::size_t> make(OpBase& op) {
    if (op.res < 0) [[unlikely]]
      return op_error(op);
    if (op.flow & kFlowAll) return op.done;
    return static_cast<std::size_t>(op.res);
  }
};

template <>
struct ResultOf<void> {
  [[gnu::always_inline]] static Result<void> make(OpBase& op) {
    if (op.res < 0) [[unlikely]]
      return op_error(op);
    return {};
  }
};

/// Readiness: the poll(2) revents that were seen.
template <>
struct ResultOf<unsigned> {
  static Result<unsigned> make(OpBase& op) {
    if (op.res < 0) return op_error(op);
    return static_cast<unsigned>(op.res);
  }
};

template <>
struct ResultOf<Expired> {
  static Result<Expired> make(OpBase& op) {
    if (op.res < 0 && op.res != -ETIME) return op_error(op);
    return Expired{op.deadline};
  }
};

/// Releases whatever resource a completed but never delivered op carries
/// (an accepted or opened fd, a pool buffer), so that nothing leaks when nobody will receive it.
void release_undelivered(OpBase& op) noexcept;
/// A close that ended ECANCELED never closed its fd: closes it, res 0.
void close_cancelled(OpBase& op) noexcept;

}  // namespace lev::detail
