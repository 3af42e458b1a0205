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

}  // namespace

int main(int argc, char** argv) try {
  auto port = static_cast<std::uint16_t>(example::arg_num(argc, argv, "--port", 0));
  long max_seconds = example::arg_num(argc, argv, "--max-seconds", 0);
  lev::Loop loop{example::model_arg(argc, argv)};

  // SIGINT / SIGTERM stop the loop; the destructor then cancels the rest.
  auto on_int = loop.signal(SIGINT, [&](int) { loop.stop(); });
  auto on_term = loop.signal(SIGTERM, [&](int) { loop.stop(); });

  auto listener = lev::net::Listener::tcp("127.0.0.1", port).value();
  std::printf("listening on %s\n", listener.address().to_string().c_str());
  std::fflush(stdout);

  // One echo coroutine per connection; EMFILE and friends back off inside.
  lev::net::Acceptor acceptor{loop, listener, [&](lev::Fd fd, lev::SocketAddress) {
                                int one = 1;
                                ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                                return echo(loop, std::move(fd));
                              }};
  loop.spawn(acceptor.run());
  if (max_seconds > 0)
    loop.after(std::chrono::seconds(max_seconds), [&](lev::Operation&, auto) { loop.stop(); });
  loop.run();
  std::fprintf(stderr, "echo_server: stopped\n");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "echo_server: %s\n", e.what());
  return 1;
}
