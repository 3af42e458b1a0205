// docs/tutorial.md, step 2: a coroutine echo server.
//   tutorial_echo_server [PORT]     (none or 0: a free port)
// Prints "listening on 127.0.0.1:PORT"; Ctrl-C stops it.
// [echo_server]
#include <array>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <lev/lev.hpp>
#include <span>
#include <stop_token>

// One coroutine per connection: receive, send it back, until the peer closes.
lev::Task<> echo(lev::Loop& loop, lev::Fd fd) {
  std::array<std::byte, 4096> buf;
  for (;;) {
    auto n = co_await loop.recv(fd, buf);  // lev::Result<std::size_t>
    if (!n || *n == 0) break;              // an error, or the peer closed
    if (!co_await loop.send_all(fd, std::span{buf}.first(*n))) break;
  }
  (void)co_await loop.close(fd);
}

// The port in `text`: digits only, 0..65535.
bool parse_port(const char* text, std::uint16_t& port) {
  const char* end = text + std::strlen(text);
  auto [ptr, ec] = std::from_chars(text, end, port);
  return ec == std::errc{} && ptr == end;
}

int main(int argc, char** argv) {
  std::uint16_t port = 0;
  const bool help = argc == 2 && std::strcmp(argv[1], "--help") == 0;
  if (help || argc > 2 || (argc == 2 && !parse_port(argv[1], port))) {
    std::fprintf(help ? stdout : stderr, "usage: tutorial_echo_server [PORT]\n");
    return help ? 0 : 2;
  }
  // A loop (io_uring, else epoll) running this coroutine; Ctrl-C or SIGTERM
  // stops `stop`, and the coroutine's value is the exit code.
  return lev::run([port](lev::Loop& loop, std::stop_token stop) -> lev::Task<int> {
    auto listener = lev::net::Listener::tcp("127.0.0.1", port).value();  // throws on error
    std::printf("listening on %s\n", listener.address().to_string().c_str());
    std::fflush(stdout);

    lev::net::Acceptor acceptor{
        loop, listener, [&](lev::Fd fd, lev::SocketAddress) { return echo(loop, std::move(fd)); }};
    loop.spawn(acceptor.run());
    co_await lev::until_stopped(stop);  // Ctrl-C
    co_return 0;  // the acceptor stops; lev::run cancels the connections still open
  });
}
// [/echo_server]
