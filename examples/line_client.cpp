// Connects by host name, sends each line of stdin, prints each reply
// (pipelined: lines go out while replies come back).
//   line_client --port N [--host localhost] [--model proactor|reactor] [--backend ...]
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <stop_token>
#include <string>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

// Sends every stdin line (backpressure-paced) while a second task prints the
// replies; when stdin ends, shuts down the write side and reads to EOF.
lev::Task<> send_lines(lev::net::Stream& stream, bool& failed) {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (auto w = co_await stream.write_message(line); !w) {
      std::fprintf(stderr, "line_client: %s\n", w.error().message().c_str());
      failed = true;
      co_return;
    }
  }
  if (auto r = co_await stream.shutdown_write(); !r) failed = true;
}

lev::Task<int> run(lev::Loop& loop, std::string host, std::uint16_t port) {
  auto fd = co_await lev::net::connect(loop, host, port, {.timeout = std::chrono::seconds(5)});
  if (!fd) {
    std::fprintf(stderr, "line_client: %s\n", fd.error().message().c_str());
    co_return 1;
  }
  lev::net::Stream stream{loop, std::move(*fd)};
  bool failed = false;
  loop.spawn(send_lines(stream, failed));
  for (;;) {
    auto reply = co_await stream.read_message();
    if (!reply) {
      std::fprintf(stderr, "line_client: %s\n", reply.error().message().c_str());
      co_return 1;
    }
    if (!*reply) break;  // the server closed after our shutdown
    std::printf("%s\n", (*reply)->c_str());
  }
  (void)co_await stream.close();
  co_return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string host = "localhost";
  std::uint16_t port = 0;
  example::LoopArgs loop_args;
  example::Cli cli{"line_client", "Sends each line of stdin to a line server, prints each reply."};
  cli.text("--host", host, "the server's host name or address");
  cli.port("--port", port, "the server's port (required)");
  loop_args.add_to(cli);
  cli.parse(argc, argv);
  loop_args.check(cli);
  if (port == 0) cli.fail("--port is required");
  // Ctrl-C (or SIGTERM) cancels what the client waits on: it ends at once.
  return lev::run(
      [&](lev::Loop& loop, std::stop_token stop) {
        return run(loop, host, port).with_stop_token(std::move(stop));
      },
      {.model = loop_args.loop_model(), .loop = loop_args.options()});
} catch (const std::exception& e) {
  std::fprintf(stderr, "line_client: %s\n", e.what());
  return 1;
}
