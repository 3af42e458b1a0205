// docs/tutorial.md, step 4: a Stream with a codec. Each line a client
// sends comes back in capitals.
//   tutorial_upper_server [PORT]     (none or 0: a free port)
// Prints "listening on 127.0.0.1:PORT"; Ctrl-C stops it.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <lev/lev.hpp>
#include <stop_token>
#include <string>

// [upper]
lev::Task<> shout(lev::Loop& loop, lev::Fd fd) {
  lev::net::Stream stream{loop, std::move(fd), {.codec = lev::net::Codec::line()}};
  for (;;) {
    auto line = co_await stream.read_message();  // Result<std::optional<std::string>>
    if (!line || !*line) break;                  // an error, or the end of the stream
    std::string reply = std::move(**line);
    std::ranges::transform(reply, reply.begin(), [](unsigned char c) { return std::toupper(c); });
    if (!co_await stream.write_message(reply)) break;  // waits while the peer reads slowly
  }
  (void)co_await stream.close();  // sends what is still queued, then closes
}
// [/upper]

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
    std::fprintf(help ? stdout : stderr, "usage: tutorial_upper_server [PORT]\n");
    return help ? 0 : 2;
  }
  return lev::run([port](lev::Loop& loop, std::stop_token stop) -> lev::Task<int> {
    auto listener = lev::net::Listener::tcp("127.0.0.1", port).value();
    std::printf("listening on %s\n", listener.address().to_string().c_str());
    std::fflush(stdout);
    lev::net::Acceptor acceptor{
        loop, listener, [&](lev::Fd fd, lev::SocketAddress) { return shout(loop, std::move(fd)); }};
    loop.spawn(acceptor.run());
    co_await lev::until_stopped(stop);
    co_return 0;
  });
}
