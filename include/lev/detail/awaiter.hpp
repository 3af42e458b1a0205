#pragma once
/// \file
/// The awaiter every operation shares: the op record lives inside the
/// awaiter (so inside the awaiting coroutine's frame: no allocation per
/// operation), the coroutine is resumed from the loop's completion queue,
/// and an awaiter destroyed while its op is live cancels it and waits for
/// its completion, so the kernel never writes into a freed frame.

#include <coroutine>
#include <cstdint>

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

}  // namespace lev::detail
