#pragma once
// The coroutine floor of the nop round trip (bench/cost.py's nop1_floor,
// nop32_floor): raw_nop.hpp's liburing loop, but `batch` bare C++20
// coroutines each co_await their nops, resumed straight from the CQE walk.
// No runtime (no cancellation, registry, queue or error values): what lev's
// nop costs above this is what lev's guarantees cost.
#include <liburing.h>

#include <coroutine>

#include "raw_ring.hpp"

namespace raw_coro {

struct NopAwait {
  io_uring& ring;
  raw::Waiter w{};
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    w.h = h;
    io_uring_sqe* s = raw::sqe(ring);
    io_uring_prep_nop(s);
    io_uring_sqe_set_data(s, &w);
  }
  int await_resume() const noexcept { return w.res; }
};

inline raw::Detached nops(io_uring& ring, int count, int& running) {
  for (int i = 0; i < count; ++i) (void)co_await NopAwait{ring};
  --running;
}

}  // namespace raw_coro

inline void coro_nop_loop(int batch, int ops) {
  io_uring ring;
  raw::init_ring(ring);
  int running = batch;
  for (int i = 0; i < batch; ++i) raw_coro::nops(ring, ops / batch, running);
  // As raw_nop_loop: wait for the round's `want` completions (one per
  // task still running), peek until that many were seen, no further.
  while (running > 0) {
    const int want = running;
    io_uring_submit_and_wait(&ring, static_cast<unsigned>(want));
    io_uring_cqe* cqes[64];
    int seen = 0;
    while (seen < want) {
      const unsigned n = io_uring_peek_batch_cqe(&ring, cqes, 64);
      if (n == 0) {
        io_uring_submit_and_wait(&ring, 1);
        continue;
      }
      for (unsigned i = 0; i < n; ++i) {
        auto* w = static_cast<raw::Waiter*>(io_uring_cqe_get_data(cqes[i]));
        w->res = cqes[i]->res;
        w->h.resume();
      }
      io_uring_cq_advance(&ring, n);
      seen += static_cast<int>(n);
    }
  }
  io_uring_queue_exit(&ring);
}
