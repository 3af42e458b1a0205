#pragma once
// The hand-written liburing nop loop (nop_bench, bench/cost.py): `ops` nops
// in batches of `batch`, one submit_and_wait per batch, CQEs peeked in bulk.
#include <liburing.h>

inline void raw_nop_loop(int batch, int ops) {
  io_uring ring;
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(256, &ring, &p) < 0) {
    p.flags = 0;
    io_uring_queue_init_params(256, &ring, &p);
  }
  io_uring_register_ring_fd(&ring);
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
