// The coroutine floor: the raw liburing echo loop of raw_uring_echo.cpp
// (same ring set-up, one submit_and_wait per round, batched CQE reaping,
// one recv/send in flight per connection), but each connection is a C++20
// coroutine that co_awaits its recv and send, resumed straight from the
// CQE walk. No runtime: no cancellation, no registry of ops, no queue, no
// timers, no error values; a frame per connection from operator new.
// What lev's echo costs above this is what lev's guarantees cost; what
// this costs above raw_uring_echo is what coroutines themselves cost with
// this compiler (bench/cost.py's row echo_floor).
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <coroutine>
#include <cstdint>
#include <unordered_set>

#include "raw_ring.hpp"
#include "servers.hpp"

namespace {

struct Ring {
  io_uring ring{};
  bool stopped = false;
  std::unordered_set<int> fds;  // the connections open (closed at the end)
};

// user_data 1 (never an op's address) is the stop fd's poll.
constexpr std::uint64_t kStopTag = 1;

enum class Io { accept, recv, send };

template <Io K>
struct IoAwait {
  Ring& r;
  int fd;
  void* buf;
  unsigned len;
  raw::Waiter w{};

  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    w.h = h;
    io_uring_sqe* s = raw::sqe(r.ring);
    if constexpr (K == Io::accept)
      io_uring_prep_accept(s, fd, nullptr, nullptr, SOCK_CLOEXEC);
    else if constexpr (K == Io::recv)
      io_uring_prep_recv(s, fd, buf, len, 0);
    else
      io_uring_prep_send(s, fd, buf, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data(s, &w);
  }
  int await_resume() const noexcept { return w.res; }
};

raw::Detached echo(Ring& r, int fd) {
  char buf[4096];
  for (;;) {
    const int n = co_await IoAwait<Io::recv>{r, fd, buf, sizeof buf};
    if (n <= 0) break;
    int off = 0;
    while (off < n) {
      const int w = co_await IoAwait<Io::send>{r, fd, buf + off, static_cast<unsigned>(n - off)};
      if (w < 0) break;
      off += w;
    }
    if (off < n) break;
  }
  r.fds.erase(fd);
  ::close(fd);
}

// Runs for the server's life (one accept in flight, re-armed per
// connection, as raw_uring_echo's); its frame goes with the process.
raw::Detached acceptor(Ring& r, int lfd) {
  for (;;) {
    const int fd = co_await IoAwait<Io::accept>{r, lfd, nullptr, 0};
    if (fd >= 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      r.fds.insert(fd);
      echo(r, fd);
    }
  }
}

}  // namespace

void serve_raw_coro(int lfd, const std::atomic<bool>& stop,
                    std::chrono::steady_clock::time_point deadline, int stop_fd) {
  Ring r;
  raw::init_ring(r.ring);
  acceptor(r, lfd);
  if (stop_fd >= 0) {  // a signalfd: the ring wakes for it (a signal alone may not, under valgrind)
    io_uring_sqe* q = raw::sqe(r.ring);
    io_uring_prep_poll_add(q, stop_fd, POLLIN);
    io_uring_sqe_set_data64(q, kStopTag);
  }
  __kernel_timespec ts{0, 20'000'000};
  while (!r.stopped && !stop.load(std::memory_order_relaxed) &&
         std::chrono::steady_clock::now() < deadline) {
    io_uring_cqe* cqe;
    io_uring_submit_and_wait_timeout(&r.ring, &cqe, 1, &ts, nullptr);
    io_uring_cqe* cqes[64];
    unsigned n;
    while ((n = io_uring_peek_batch_cqe(&r.ring, cqes, 64)) > 0) {
      for (unsigned i = 0; i < n; ++i) {
        const std::uint64_t data = io_uring_cqe_get_data64(cqes[i]);
        if (data == kStopTag) {
          r.stopped = true;
          continue;
        }
        auto* w = reinterpret_cast<raw::Waiter*>(static_cast<std::uintptr_t>(data));
        w->res = cqes[i]->res;
        w->h.resume();
      }
      io_uring_cq_advance(&r.ring, n);
    }
  }
  // The connections' frames go with the process (a measuring program,
  // ended right after this returns; their ops die with the ring).
  io_uring_queue_exit(&r.ring);
  for (int fd : r.fds) ::close(fd);
}
