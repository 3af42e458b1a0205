#include "load_client.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {
using Clock = std::chrono::steady_clock;

struct Conn {
  int fd = -1;
  std::size_t got = 0;
  Clock::time_point sent_at;
};
}  // namespace

LoadResult run_load(const lev::SocketAddress& to, const LoadOptions& o) {
  LoadResult result;
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<Conn> conns(static_cast<std::size_t>(o.connections));
  std::vector<char> out(o.size, 'x'), in(o.size);
  for (std::size_t i = 0; i < conns.size(); ++i) {
    int fd = ::socket(to.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd, to.data(), to.size()) != 0) {
      std::perror("load client: connect");
      result.ok = false;
      ::close(fd);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ::fcntl(fd, F_SETFL, O_NONBLOCK);
    conns[i].fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  std::vector<double> lat;
  lat.reserve(4'000'000);
  const auto start = Clock::now();
  const auto window_start = start + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(o.warmup_seconds));
  const auto window_end = window_start + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(o.seconds));
  for (auto& c : conns) {
    if (c.fd < 0) continue;
    c.sent_at = Clock::now();
    if (::send(c.fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size()))
      result.ok = false;
  }
  bool in_window = false;
  epoll_event events[256];
  for (;;) {
    auto now = Clock::now();
    if (!in_window && now >= window_start) {
      in_window = true;
      if (o.on_window_start) o.on_window_start();
    }
    if (now >= window_end) break;
    int n = ::epoll_wait(ep, events, 256, 10);
    for (int i = 0; i < n; ++i) {
      Conn& c = conns[events[i].data.u64];
      ssize_t r = ::recv(c.fd, in.data(), o.size - c.got, 0);
      if (r <= 0) {
        if (r < 0 && errno == EAGAIN) continue;
        result.ok = false;
        ::epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
        continue;
      }
      c.got += static_cast<std::size_t>(r);
      if (c.got < o.size) continue;
      c.got = 0;
      auto t = Clock::now();
      if (in_window && t < window_end) {
        ++result.messages;
        if (lat.size() < lat.capacity())
          lat.push_back(std::chrono::duration<double, std::micro>(t - c.sent_at).count());
      }
      c.sent_at = t;
      if (::send(c.fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size()))
        result.ok = false;
    }
  }
  if (o.on_window_end) o.on_window_end();
  result.seconds = o.seconds;
  for (auto& c : conns)
    if (c.fd >= 0) ::close(c.fd);
  ::close(ep);
  if (!lat.empty()) {
    std::sort(lat.begin(), lat.end());
    result.p50_us = lat[lat.size() / 2];
    result.p99_us = lat[lat.size() * 99 / 100];
  }
  return result;
}
