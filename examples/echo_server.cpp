// A TCP echo server: one coroutine per connection.
//   echo_server --port N [--max-seconds S] [--model proactor|reactor]
// First line on stdout: "listening on 127.0.0.1:PORT". SIGINT/SIGTERM stop it.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>

#include <array>
#include <chrono>
#include <cstdio>

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
  co_await loop.close(fd);
}

lev::Task<> accept_loop(lev::Loop& loop, const lev::Fd& listener) {
  for (;;) {
    auto conn = co_await loop.accept(listener);
    if (!conn) {
      if (conn.error().is_cancelled()) co_return;
      std::fprintf(stderr, "echo_server: %s\n", conn.error().message().c_str());
      co_await loop.after(std::chrono::milliseconds(10));  // EMFILE and friends: back off
      continue;
    }
    int one = 1;
    ::setsockopt(conn->fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    loop.spawn(echo(loop, std::move(conn->fd)));
  }
}

}  // namespace

int main(int argc, char** argv) try {
  auto port = static_cast<std::uint16_t>(example::arg_num(argc, argv, "--port", 0));
  long max_seconds = example::arg_num(argc, argv, "--max-seconds", 0);
  lev::Loop loop{example::model_arg(argc, argv)};

  // SIGINT / SIGTERM stop the loop; the destructor then cancels the rest.
  auto on_int = loop.signal(SIGINT, [&](int) { loop.stop(); });
  auto on_term = loop.signal(SIGTERM, [&](int) { loop.stop(); });

  lev::SocketAddress bound;
  lev::Fd listener = example::tcp_listen(port, bound);
  std::printf("listening on %s\n", bound.to_string().c_str());
  std::fflush(stdout);

  loop.spawn(accept_loop(loop, listener));
  if (max_seconds > 0)
    loop.after(std::chrono::seconds(max_seconds), [&](lev::Operation&, auto) { loop.stop(); });
  loop.run();
  std::fprintf(stderr, "echo_server: stopped\n");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "echo_server: %s\n", e.what());
  return 1;
}
