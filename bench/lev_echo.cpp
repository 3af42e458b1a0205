// The lev echo server under test: the same code a user writes.
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <array>
#include <chrono>

#include "lev/lev.hpp"
#include "servers.hpp"

namespace {

lev::Task<> echo(lev::Loop& loop, lev::Fd fd) {
  std::array<std::byte, 4096> buf;
  for (;;) {
    auto n = co_await loop.recv(fd, buf);
    if (!n || *n == 0) break;
    if (!co_await loop.send_all(fd, std::span{buf}.first(*n))) break;
  }
  co_await loop.close(fd);
}

lev::Task<> accept_loop(lev::Loop& loop, int lfd) {
  for (;;) {
    auto conn = co_await loop.accept(lfd);
    if (!conn) {
      if (conn.error().is_cancelled()) co_return;
      co_await loop.after(std::chrono::milliseconds(1));
      continue;
    }
    int one = 1;
    ::setsockopt(conn->fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    loop.spawn(echo(loop, std::move(conn->fd)));
  }
}

lev::Task<> watch(lev::Loop& loop, const std::atomic<bool>& stop) {
  while (!stop.load(std::memory_order_relaxed)) co_await loop.after(std::chrono::milliseconds(20));
  loop.stop();
}

}  // namespace

void serve_lev(int lfd, const std::atomic<bool>& stop, lev::Model model) {
  lev::Loop loop{model};
  loop.spawn(accept_loop(loop, lfd));
  loop.spawn(watch(loop, stop));
  loop.run();
}
