#pragma once
// The hand-written liburing nop loop (nop_bench, bench/cost.py): `ops` nops
// in batches of `batch`, one submit_and_wait per batch, CQEs peeked in bulk.
#include <liburing.h>

#include "raw_ring.hpp"

inline void raw_nop_loop(int batch, int ops) {
  io_uring ring;
  raw::init_ring(ring);
  int done = 0;
  while (done < ops) {
    for (int i = 0; i < batch; ++i) io_uring_prep_nop(io_uring_get_sqe(&ring));
    io_uring_submit_and_wait(&ring, static_cast<unsigned>(batch));
    io_uring_cqe* cqes[64];
    int seen = 0;
    while (seen < batch) {
      unsigned n = io_uring_peek_batch_cqe(&ring, cqes, 64);
      if (n == 0) {
        io_uring_submit_and_wait(&ring, 1);
        continue;
      }
      io_uring_cq_advance(&ring, n);
      seen += static_cast<int>(n);
    }
    done += batch;
  }
  io_uring_queue_exit(&ring);
}
