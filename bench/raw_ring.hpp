#pragma once
// What the hand-written baselines share (raw_nop.hpp, raw_uring_echo.cpp
// and their coroutine floors raw_coro_nop.hpp, raw_coro_echo.cpp): one
// ring set up the same way, SQEs taken the same way, and for the floors
// a fire-and-forget coroutine with nothing of a runtime in it.
#include <liburing.h>

#include <coroutine>
#include <exception>

namespace raw {

/// A 256-entry ring, SINGLE_ISSUER + DEFER_TASKRUN when the kernel has
/// them (plain otherwise), its fd registered.
inline void init_ring(io_uring& ring) {
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(256, &ring, &p) < 0) {
    p = {};
    io_uring_queue_init_params(256, &ring, &p);
  }
  io_uring_register_ring_fd(&ring);
}

/// An SQE, submitting what is queued when the SQ is full.
inline io_uring_sqe* sqe(io_uring& ring) {
  io_uring_sqe* s = io_uring_get_sqe(&ring);
  while (!s) {
    io_uring_submit(&ring);
    s = io_uring_get_sqe(&ring);
  }
  return s;
}

/// What a floor's CQE points at: the coroutine to resume, its result.
struct Waiter {
  std::coroutine_handle<> h;
  int res;
};

/// A floor's coroutine: runs until its first co_await, frees itself at
/// its end.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};

}  // namespace raw
