// The lev echo server under test: the same code a user writes.
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <array>
#include <chrono>
#include <cstdlib>

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
  (void)co_await loop.close(fd);
}

// The same, receiving into the loop's pool (`loop.recv(fd)`: a multishot
// recv and the kernel's provided buffers on io_uring).
lev::Task<> echo_pooled(lev::Loop& loop, lev::Fd fd) {
  for (;;) {
    auto got = co_await loop.recv(fd);
    if (!got || got->empty()) break;
    if (!co_await loop.send_all(fd, *got)) break;
  }
  (void)co_await loop.close(fd);
}

lev::Task<> watch(lev::Loop& loop, const std::atomic<bool>& stop) {
  while (!stop.load(std::memory_order_relaxed))
    (void)co_await loop.after(std::chrono::milliseconds(20));
  loop.stop();
}

}  // namespace

void serve_lev(int lfd, const std::atomic<bool>& stop, lev::Model model, bool pooled) {
  lev::LoopOptions o;
  if (const char* n = std::getenv("LEV_BENCH_POOL")) o.recv_buffer_count = std::atoi(n);
  lev::Loop loop{model, o};
  lev::net::Acceptor acceptor{loop, lfd, [&](lev::Fd fd, lev::SocketAddress) {
                                int one = 1;
                                ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                                return pooled ? echo_pooled(loop, std::move(fd))
                                              : echo(loop, std::move(fd));
                              }};
  loop.spawn(acceptor.run());
  loop.spawn(watch(loop, stop));
  loop.run();
}

// The same server on `threads` loops (lev::Runtime), every loop accepting
// from the one listening socket.
void serve_lev_threads(int lfd, const std::atomic<bool>& stop, unsigned threads) {
  lev::Runtime rt{{.threads = threads, .stop_on_signals = false}};
  for (std::size_t i = 0; i < rt.size(); ++i)
    rt.spawn_on(i, [lfd](lev::Loop& loop) -> lev::Task<> {
      lev::net::Acceptor acceptor{loop, lfd, [&loop](lev::Fd fd, lev::SocketAddress) {
                                    int one = 1;
                                    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one,
                                                 sizeof(one));
                                    return echo(loop, std::move(fd));
                                  }};
      co_await acceptor.run();
    });
  rt.spawn_on(0, [&stop, &rt](lev::Loop& loop) -> lev::Task<> {
    while (!stop.load(std::memory_order_relaxed))
      (void)co_await loop.after(std::chrono::milliseconds(20));
    rt.stop();
  });
  rt.wait();
}
