// The baseline: a hand-written liburing echo server, no runtime at all.
// SINGLE_ISSUER + DEFER_TASKRUN, registered ring fd, one submit_and_wait
// per round, batched CQE reaping; one recv/send in flight per connection.
// With `http`, the same loop answers each HTTP request (a head ending in
// an empty line; no body) with a fixed "Hello, World!" response: the raw
// responder http_hello is measured against (bench/cost.py).
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "raw_ring.hpp"
#include "servers.hpp"

namespace {

enum Kind : std::uint64_t { kAccept = 0, kRecv = 1, kSend = 2, kStop = 3 };

constexpr std::string_view kHello =
    "HTTP/1.1 200 OK\r\nServer: raw\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
    "Hello, World!";

struct Conn {
  int fd = -1;
  std::uint32_t len = 0;
  std::uint32_t sent = 0;
  std::uint32_t matched = 0;  // http: bytes of "\r\n\r\n" seen at the end of the last recv
  char buf[4096];
  char out[4096];  // http: the responses
};

// http: how many request heads end in `p[0, n)`, given how much of the
// terminator the previous bytes had matched (updated).
std::uint32_t count_heads(const char* p, std::size_t n, std::uint32_t& matched) {
  static constexpr char kEnd[] = "\r\n\r\n";
  std::uint32_t heads = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (p[i] == kEnd[matched]) {
      if (++matched == 4) {
        ++heads;
        matched = 0;
      }
    } else {
      matched = p[i] == '\r' ? 1 : 0;
    }
  }
  return heads;
}

struct Server {
  io_uring ring{};
  int lfd;
  bool http = false;
  bool stopped = false;  // the stop fd became readable
  std::vector<Conn*> conns;
  std::vector<std::uint32_t> free_slots;

  static std::uint64_t tag(std::uint32_t slot, Kind k) { return (std::uint64_t{slot} << 2) | k; }

  io_uring_sqe* sqe() { return raw::sqe(ring); }
  void arm_accept() {
    io_uring_sqe* s = sqe();
    io_uring_prep_accept(s, lfd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, tag(0, kAccept));
  }
  void arm_recv(std::uint32_t slot) {
    io_uring_sqe* s = sqe();
    io_uring_prep_recv(s, conns[slot]->fd, conns[slot]->buf, sizeof(Conn::buf), 0);
    io_uring_sqe_set_data64(s, tag(slot, kRecv));
  }
  void arm_send(std::uint32_t slot) {
    Conn& c = *conns[slot];
    io_uring_sqe* s = sqe();
    io_uring_prep_send(s, c.fd, (http ? c.out : c.buf) + c.sent, c.len - c.sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(s, tag(slot, kSend));
  }
  void drop(std::uint32_t slot) {
    ::close(conns[slot]->fd);
    conns[slot]->fd = -1;
    free_slots.push_back(slot);
  }
  void on_cqe(std::uint64_t data, int res) {
    auto slot = static_cast<std::uint32_t>(data >> 2);
    switch (static_cast<Kind>(data & 3)) {
      case kStop:
        stopped = true;
        break;
      case kAccept: {
        if (res >= 0) {
          int one = 1;
          ::setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          std::uint32_t s;
          if (!free_slots.empty()) {
            s = free_slots.back();
            free_slots.pop_back();
          } else {
            s = static_cast<std::uint32_t>(conns.size());
            conns.push_back(new Conn);
          }
          conns[s]->fd = res;
          arm_recv(s);
        }
        arm_accept();
        break;
      }
      case kRecv:
        if (res <= 0) {
          drop(slot);
        } else if (http) {
          Conn& c = *conns[slot];
          std::uint32_t heads = count_heads(c.buf, static_cast<std::size_t>(res), c.matched);
          if (heads == 0) {
            arm_recv(slot);
            break;
          }
          if (heads > sizeof(Conn::out) / kHello.size()) heads = sizeof(Conn::out) / kHello.size();
          for (std::uint32_t i = 0; i < heads; ++i)
            std::memcpy(c.out + i * kHello.size(), kHello.data(), kHello.size());
          c.len = static_cast<std::uint32_t>(heads * kHello.size());
          c.sent = 0;
          arm_send(slot);
        } else {
          conns[slot]->len = static_cast<std::uint32_t>(res);
          conns[slot]->sent = 0;
          arm_send(slot);
        }
        break;
      case kSend:
        if (res < 0) {
          drop(slot);
          break;
        }
        conns[slot]->sent += static_cast<std::uint32_t>(res);
        if (conns[slot]->sent < conns[slot]->len)
          arm_send(slot);
        else
          arm_recv(slot);
        break;
    }
  }
};

}  // namespace

void serve_raw_uring(int lfd, const std::atomic<bool>& stop,
                     std::chrono::steady_clock::time_point deadline, bool http, int stop_fd) {
  Server s;
  s.lfd = lfd;
  s.http = http;
  raw::init_ring(s.ring);
  s.conns.push_back(new Conn);  // slot 0 reserved for the accept tag
  s.arm_accept();
  if (stop_fd >= 0) {  // a signalfd: the ring wakes for it (a signal alone may not, under valgrind)
    io_uring_sqe* q = s.sqe();
    io_uring_prep_poll_add(q, stop_fd, POLLIN);
    io_uring_sqe_set_data64(q, Server::tag(0, kStop));
  }
  __kernel_timespec ts{0, 20'000'000};
  while (!s.stopped && !stop.load(std::memory_order_relaxed) &&
         std::chrono::steady_clock::now() < deadline) {
    io_uring_cqe* cqe;
    io_uring_submit_and_wait_timeout(&s.ring, &cqe, 1, &ts, nullptr);
    io_uring_cqe* cqes[64];
    unsigned n;
    while ((n = io_uring_peek_batch_cqe(&s.ring, cqes, 64)) > 0) {
      for (unsigned i = 0; i < n; ++i) s.on_cqe(io_uring_cqe_get_data64(cqes[i]), cqes[i]->res);
      io_uring_cq_advance(&s.ring, n);
    }
  }
  io_uring_queue_exit(&s.ring);
  for (Conn* c : s.conns) {
    if (c->fd >= 0) ::close(c->fd);
    delete c;
  }
}
