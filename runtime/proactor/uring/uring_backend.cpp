#include "proactor/uring/uring_backend.hpp"

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include "lev/loop.hpp"

namespace lev {

namespace {

[[noreturn]] void setup_failed(int err) {
  std::string why;
  switch (err) {
    case ENOSYS: why = "the kernel has no io_uring (ENOSYS)"; break;
    case EPERM:
      why = "io_uring is not permitted (EPERM): disabled by sysctl kernel.io_uring_disabled "
            "or blocked by a seccomp filter";
      break;
    case ENOMEM: why = "out of memory or over RLIMIT_MEMLOCK (ENOMEM)"; break;
    case EMFILE:
    case ENFILE: why = "no file descriptor left for the ring"; break;
    default: why = std::strerror(err);
  }
  throw std::system_error(err, std::system_category(), "lev: io_uring_setup failed: " + why);
}

}  // namespace

UringBackend::UringBackend(const LoopOptions& o) : batch_(o.submit_batch_size) {
  unsigned base = 0;
  if (o.cqe_entries) base |= IORING_SETUP_CQSIZE;
  // Preferred first; each later entry is what an older kernel accepts.
  unsigned tries[3] = {base, base, base};
  int n = 0;
  if (o.sqpoll) {
    tries[n++] = base | IORING_SETUP_SQPOLL;
  } else if (o.single_issuer) {
    tries[n++] = base | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    tries[n++] = base | IORING_SETUP_COOP_TASKRUN;
  }
  tries[n++] = base;
  int r = -EINVAL;
  for (int i = 0; i < n; ++i) {
    io_uring_params p{};
    p.flags = tries[i];
    p.cq_entries = o.cqe_entries;
    if (p.flags & IORING_SETUP_SQPOLL) p.sq_thread_idle = 1000;
    r = io_uring_queue_init_params(o.queue_size, &ring_, &p);
    if (r != -EINVAL) break;
  }
  if (r < 0) setup_failed(-r);
  (void)io_uring_register_ring_fd(&ring_);  // one fewer fdget per enter; optional
}

UringBackend::~UringBackend() { io_uring_queue_exit(&ring_); }

io_uring_sqe* UringBackend::get_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (!sqe) {  // a full submission queue is a normal path: flush, retry
    flush();
    sqe = io_uring_get_sqe(&ring_);
    if (!sqe && (ring_.flags & IORING_SETUP_SQPOLL)) io_uring_sqring_wait(&ring_);
  }
  return sqe;
}

void UringBackend::flush() {
  int r = io_uring_submit(&ring_);
  if (r == -EBUSY || r == -EAGAIN) {  // completions must be reaped first
    reap();
    r = io_uring_submit(&ring_);
  }
  if (r < 0 && r != -EBUSY && r != -EAGAIN && r != -EINTR)
    throw std::system_error(-r, std::system_category(), "lev: io_uring_submit");
  unflushed_ = 0;
}

void UringBackend::submit(detail::OpBase& op) {
  io_uring_sqe* sqe = get_sqe();
  prep_sqe(sqe, op);
  io_uring_sqe_set_data(sqe, &op);
  ++in_flight_;
  if (batch_ && ++unflushed_ >= batch_) flush();
}

void UringBackend::cancel(detail::OpBase& op) {
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_cancel(sqe, &op, 0);
  io_uring_sqe_set_data(sqe, nullptr);  // its own CQE carries nothing for us
}

std::size_t UringBackend::reap() noexcept {
  std::size_t total = 0;
  io_uring_cqe* cqes[64];
  for (;;) {
    unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, 64);
    if (n == 0) break;
    for (unsigned i = 0; i < n; ++i) {
      auto* op = static_cast<detail::OpBase*>(io_uring_cqe_get_data(cqes[i]));
      if (!op) continue;
      --in_flight_;
      queue_->push(*op, cqes[i]->res, cqes[i]->flags);
      ++total;
    }
    io_uring_cq_advance(&ring_, n);
  }
  return total;
}

std::size_t UringBackend::poll(std::optional<Duration> timeout) {
  int r;
  if (timeout && *timeout <= Duration::zero()) {
    r = io_uring_submit_and_get_events(&ring_);
  } else if (!timeout) {
    r = io_uring_submit_and_wait(&ring_, 1);
  } else {
    auto ns = timeout->count();
    __kernel_timespec ts{ns / 1000000000, ns % 1000000000};
    io_uring_cqe* cqe = nullptr;
    r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  }
  unflushed_ = 0;
  if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN)
    throw std::system_error(-r, std::system_category(), "lev: io_uring_enter");
  return reap();
}

}  // namespace lev
