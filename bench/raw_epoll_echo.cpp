// The readiness baseline: a hand-written level-triggered epoll echo server.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "servers.hpp"

void serve_raw_epoll(int lfd, const std::atomic<bool>& stop,
                     std::chrono::steady_clock::time_point deadline, int stop_fd) {
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  ::fcntl(lfd, F_SETFL, ::fcntl(lfd, F_GETFL) | O_NONBLOCK);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  if (stop_fd >= 0) {  // a signalfd: epoll wakes for it (a signal alone may not, under valgrind)
    epoll_event sev{};
    sev.events = EPOLLIN;
    sev.data.fd = stop_fd;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, stop_fd, &sev);
  }
  std::vector<int> open_fds;
  char buf[4096];
  epoll_event events[256];
  while (!stop.load(std::memory_order_relaxed)) {
    int n = ::epoll_wait(ep, events, 256, 20);
    if (n <= 0 && std::chrono::steady_clock::now() >= deadline) break;  // idle: look at the time
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == stop_fd) goto done;
      if (fd == lfd) {
        for (;;) {
          int c = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          int one = 1;
          ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = c;
          ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
          open_fds.push_back(c);
        }
        continue;
      }
      ssize_t r = ::recv(fd, buf, sizeof(buf), 0);
      if (r <= 0) {
        ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
        continue;
      }
      ssize_t off = 0;
      while (off < r) {  // small echoes fit the send buffer; spin if not
        ssize_t w = ::send(fd, buf + off, static_cast<std::size_t>(r - off), MSG_NOSIGNAL);
        if (w < 0) break;
        off += w;
      }
    }
  }
done:
  for (int fd : open_fds) ::close(fd);
  ::close(ep);
}
