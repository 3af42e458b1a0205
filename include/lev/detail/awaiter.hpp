#pragma once
/// \file
/// The awaiter every operation shares: the op record lives inside the
/// awaiter (so inside the awaiting coroutine's frame: no allocation per
/// operation), the coroutine is resumed from the loop's completion queue,
/// and an awaiter destroyed while its op is live cancels it and waits for
/// its completion, so the kernel never writes into a freed frame.

#include <cerrno>
#include <coroutine>
#include <cstdint>
#include <optional>
#include <system_error>

#include "lev/address.hpp"
#include "lev/detail/op.hpp"
#include "lev/detail/results.hpp"

namespace lev {
class Loop;
}

namespace lev::detail {

void abandon_op(Loop& loop, OpBase& op) noexcept;

template <class T>
class [[nodiscard]] OpAwaiter {
 public:
  explicit OpAwaiter(Loop& loop, OpKind kind, int fd) noexcept : loop_(&loop) {
    op_.kind = kind;
    op_.fd = fd;
  }
  /// `init(op)` fills the op-specific fields before the awaiter exists as
  /// a value (awaiters are neither copied nor moved: the record's address
  /// is handed to the kernel).
  template <class Init>
  OpAwaiter(Loop& loop, OpKind kind, int fd, Init&& init) noexcept : OpAwaiter(loop, kind, fd) {
    init(op_);
  }
  OpAwaiter(const OpAwaiter&) = delete;
  OpAwaiter& operator=(const OpAwaiter&) = delete;
  ~OpAwaiter() {
    // submitted or completed: still live (idle = 0 and delivered = 3 are not)
    if (static_cast<unsigned>(op_.state) - 1u < 2u) [[unlikely]]
      abandon_op(*loop_, op_);
  }

  bool await_ready() const noexcept { return false; }
  /// Defined in lev/loop.hpp, where Loop::start is visible for inlining.
  void await_suspend(std::coroutine_handle<> h);
  Result<T> await_resume() { return ResultOf<T>::make(op_); }

  /// The record, for code that extends an operation before it is awaited.
  OpBase& op() noexcept { return op_; }

 protected:
  Loop* loop_;
  OpBase op_;
};

/// accept keeps the peer address inside the awaiter.
class [[nodiscard]] AcceptAwaiter : public OpAwaiter<Accepted> {
 public:
  AcceptAwaiter(Loop& loop, int fd) noexcept : OpAwaiter(loop, OpKind::accept, fd) {
    op_.addr = reinterpret_cast<sockaddr*>(&peer_);
    op_.addrlen = sizeof(peer_);
  }

 private:
  sockaddr_storage peer_{};
};

/// connect keeps its own copy of the address.
class [[nodiscard]] ConnectAwaiter : public OpAwaiter<void> {
 public:
  ConnectAwaiter(Loop& loop, int fd, const SocketAddress& to) noexcept
      : OpAwaiter(loop, OpKind::connect, fd), to_(to) {
    op_.addr = to_.data();
    op_.addrlen = to_.size();
  }

 private:
  SocketAddress to_;
};

void disarm_op(Loop& loop, OpBase& op) noexcept;
void cancel_op(Loop& loop, OpBase& op) noexcept;
TimePoint loop_now(Loop& loop) noexcept;

/// readable / writable: a poll op, optionally bounded by a deadline. When
/// the deadline passes first, the poll op is cancelled and the result is
/// errc::timed_out; both ops are settled before the coroutine resumes.
class [[nodiscard]] PollAwaiter : public OpAwaiter<unsigned> {
 public:
  PollAwaiter(Loop& loop, int fd, unsigned mask, std::optional<Duration> timeout) noexcept
      : OpAwaiter(loop, OpKind::poll, fd), timeout_(timeout) {
    op_.flags = static_cast<int>(mask);
    timer_.kind = OpKind::timer;
  }
  ~PollAwaiter() { disarm_timer(); }
  void await_suspend(std::coroutine_handle<> h) {
    OpAwaiter::await_suspend(h);
    if (timeout_) {
      timer_.deadline = loop_now(*loop_) + *timeout_;
      timer_.ctx = this;
      timer_.deliver = &on_deadline;
      start_timer();
    }
  }
  Result<unsigned> await_resume() {
    disarm_timer();
    if (timed_out_ && op_.res == -ECANCELED) {
      return Error{std::make_error_code(std::errc::timed_out), op_name(op_.kind), op_.fd, 0};
    }
    return ResultOf<unsigned>::make(op_);
  }

 private:
  static void on_deadline(OpBase& t) {
    auto* self = static_cast<PollAwaiter*>(t.ctx);
    self->timed_out_ = true;
    cancel_op(*self->loop_, self->op_);
  }
  void start_timer();
  void disarm_timer() noexcept {
    if (static_cast<unsigned>(timer_.state) - 1u < 2u) disarm_op(*loop_, timer_);
  }
  std::optional<Duration> timeout_;
  OpBase timer_;
  bool timed_out_ = false;
};

}  // namespace lev::detail
