// A TCP echo server: one coroutine per connection.
//   echo_server --port N [--max-seconds S] [--model proactor|reactor] [--threads T]
//               [--recv own|pool]
// First line on stdout: "listening on 127.0.0.1:PORT". SIGINT/SIGTERM stop it.
// With --threads T > 1: T loops (lev::Runtime), each with its own listener
// on the same port (SO_REUSEPORT), so the kernel spreads connections.
// --recv pool receives with loop.recv(fd): buffers from the loop's pool,
// taken only when data arrives (on io_uring: one multishot recv per
// connection and the kernel's provided-buffer ring); --recv own (the
// default) receives into a 4 KiB buffer each connection keeps.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <vector>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

lev::Task<> echo(lev::Loop& loop, lev::Fd fd) {
  std::array<std::byte, 4096> buf;
  for (;;) {
    auto n = co_await loop.recv(fd, buf);
    if (!n || *n == 0) break;  // error, or the peer closed
    if (!co_await loop.send_all(fd, std::span{buf}.first(*n))) break;
  }
  (void)co_await loop.close(fd);
}

lev::Task<> echo_pooled(lev::Loop& loop, lev::Fd fd) {
  for (;;) {
    auto got = co_await loop.recv(fd);  // a lev::Buffer, back to the pool when dropped
    if (!got || got->empty()) break;    // error, or the peer closed
    if (!co_await loop.send_all(fd, *got)) break;
  }
  (void)co_await loop.close(fd);
}

lev::Task<> echo_with_nodelay(lev::Loop& loop, lev::Fd fd) {
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return echo(loop, std::move(fd));
}

// Thread-per-core: one loop per thread, one listener per loop.
int run_threads(long threads, std::uint16_t port, long max_seconds, lev::Model model) {
  std::vector<lev::net::Listener> listeners;
  const lev::net::ListenOptions shared{.reuse_port = true};
  listeners.push_back(lev::net::Listener::tcp("127.0.0.1", port, shared).value());
  port = listeners[0].address().port();  // --port 0: every listener takes the first one's
  for (long i = 1; i < threads; ++i)
    listeners.push_back(lev::net::Listener::tcp("127.0.0.1", port, shared).value());

  lev::Runtime rt{{.threads = static_cast<unsigned>(threads), .model = model, .pin = true}};
  std::vector<long> accepted(rt.size(), 0);  // each written by its own loop only
  std::printf("listening on %s\n", listeners[0].address().to_string().c_str());
  std::fflush(stdout);
  for (std::size_t i = 0; i < rt.size(); ++i) {
    const lev::net::Listener* l = &listeners[i];
    long* count = &accepted[i];
    rt.spawn_on(i, [l, count](lev::Loop& loop) -> lev::Task<> {
      lev::net::Acceptor acceptor{loop, *l, [&loop, count](lev::Fd fd, lev::SocketAddress) {
                                    ++*count;
                                    return echo_with_nodelay(loop, std::move(fd));
                                  }};
      co_await acceptor.run();
    });
  }
  if (max_seconds > 0)
    rt.spawn_on(0, [&rt, max_seconds](lev::Loop& loop) -> lev::Task<> {
      (void)co_await loop.sleep_for(std::chrono::seconds(max_seconds));
      rt.stop();
    });
  rt.wait();
  std::printf("connections per loop:");
  for (long n : accepted) std::printf(" %ld", n);
  std::printf("\n");
  std::fprintf(stderr, "echo_server: stopped\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  auto port = static_cast<std::uint16_t>(example::arg_num(argc, argv, "--port", 0));
  long max_seconds = example::arg_num(argc, argv, "--max-seconds", 0);
  long threads = example::arg_num(argc, argv, "--threads", 1);
  if (threads < 1 || threads > 1024) {
    std::fprintf(stderr, "echo_server: --threads must be between 1 and 1024\n");
    return 2;
  }
  const bool pooled = example::recv_arg(argc, argv, "own");
  if (threads > 1) return run_threads(threads, port, max_seconds, example::model_arg(argc, argv));
  return example::run_server("echo_server", argc, argv, pooled ? echo_pooled : echo);
} catch (const std::exception& e) {
  std::fprintf(stderr, "echo_server: %s\n", e.what());
  return 1;
}
