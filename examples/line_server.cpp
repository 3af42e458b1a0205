// The seed's TCP server: replies "echo: <line>" to each line.
//   line_server --port N [--model proactor|reactor] [--max-seconds S]
// First line on stdout: "listening on 127.0.0.1:PORT".
#include <csignal>
#include <cstdio>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

lev::Task<> session(lev::Loop& loop, lev::Fd fd) {
  lev::net::Stream stream{loop, std::move(fd), {.codec = lev::net::Codec::line()}};
  for (;;) {
    auto line = co_await stream.read_message();
    if (!line) {
      std::fprintf(stderr, "line_server: %s\n", line.error().message().c_str());
      break;
    }
    if (!*line) break;  // the client closed
    if (!co_await stream.write_message("echo: " + **line)) break;
  }
  (void)co_await stream.close();
}

}  // namespace

int main(int argc, char** argv) try {
  auto port = static_cast<std::uint16_t>(example::arg_num(argc, argv, "--port", 0));
  long max_seconds = example::arg_num(argc, argv, "--max-seconds", 0);
  lev::Loop loop{example::model_arg(argc, argv)};
  auto listener = lev::net::Listener::tcp("127.0.0.1", port).value();
  std::printf("listening on %s\n", listener.address().to_string().c_str());
  std::fflush(stdout);
  lev::net::Acceptor acceptor{
      loop, listener, [&](lev::Fd fd, lev::SocketAddress) { return session(loop, std::move(fd)); }};
  loop.spawn(acceptor.run());
  auto on_int = loop.signal(SIGINT, [&](int) { loop.stop(); });
  auto on_term = loop.signal(SIGTERM, [&](int) { loop.stop(); });
  if (max_seconds > 0)
    loop.after(std::chrono::seconds(max_seconds), [&](lev::Operation&, auto) { loop.stop(); });
  loop.run();
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "line_server: %s\n", e.what());
  return 1;
}
