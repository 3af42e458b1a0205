// Connects, sends one line, and waits for the reply under a deadline.
//   timeout_client --port N [--host 127.0.0.1] [--message hello] [--timeout-ms 1000]
// Prints "reply: <line>" (exit 0), or says clearly what timed out (exit 3).
#include <chrono>
#include <cstdio>
#include <stop_token>
#include <string>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

// Reads until a newline: the reply line, without it.
lev::Task<lev::Result<std::string>> read_line(lev::Loop& loop, lev::FdRef fd) {
  std::string line;
  std::array<char, 256> buf;
  for (;;) {
    auto n = co_await loop.recv(fd, buf);  // cancelled by with_timeout's token
    if (!n) co_return n.error();
    if (*n == 0)
      co_return lev::Error{std::make_error_code(std::errc::connection_reset), "recv", fd.fd};
    line.append(buf.data(), *n);
    if (auto nl = line.find('\n'); nl != std::string::npos) co_return line.substr(0, nl);
  }
}

lev::Task<int> run(lev::Loop& loop, std::string host, std::uint16_t port, std::string message,
                   std::chrono::milliseconds limit) {
  auto fd = co_await lev::net::connect(loop, host, port, {.timeout = limit});
  if (!fd) {
    std::fprintf(stderr, "timeout_client: %s\n", fd.error().message().c_str());
    co_return fd.error().is_timeout() ? 3 : 1;
  }
  message += '\n';
  if (auto s = co_await loop.send_all(*fd, message); !s) {
    std::fprintf(stderr, "timeout_client: %s\n", s.error().message().c_str());
    co_return 1;
  }
  auto reply = co_await lev::with_timeout(read_line(loop, *fd), limit);
  if (!reply) {
    if (reply.error().is_timeout()) {
      std::printf("timed out: no reply from %s:%u within %lld ms\n", host.c_str(), port,
                  static_cast<long long>(limit.count()));
      co_return 3;
    }
    std::fprintf(stderr, "timeout_client: %s\n", reply.error().message().c_str());
    co_return 1;
  }
  std::printf("reply: %s\n", reply->c_str());
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string host = "127.0.0.1", message = "hello";
  std::uint16_t port = 0;
  long timeout_ms = 1000;
  example::LoopArgs loop_args;
  example::Cli cli{"timeout_client",
                   "Sends one line and waits for the reply under a deadline (exit 3: timed out)."};
  cli.text("--host", host, "the server's host name or address");
  cli.port("--port", port, "the server's port (required)");
  cli.text("--message", message, "the line to send");
  cli.integer("--timeout-ms", timeout_ms, 1, 86'400'000, "the deadline for connect and reply");
  loop_args.add_to(cli);
  cli.parse(argc, argv);
  loop_args.check(cli);
  if (port == 0) cli.fail("--port is required");
  const std::chrono::milliseconds limit(timeout_ms);
  // Ctrl-C (or SIGTERM) cancels what the client waits on: it ends at once.
  return lev::run(
      [&](lev::Loop& loop, std::stop_token stop) {
        return run(loop, host, port, message, limit).with_stop_token(std::move(stop));
      },
      {.model = loop_args.loop_model(), .loop = loop_args.options()});
} catch (const std::exception& e) {
  std::fprintf(stderr, "timeout_client: %s\n", e.what());
  return 1;
}
