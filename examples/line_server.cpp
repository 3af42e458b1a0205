// The seed's TCP server: replies "echo: <line>" to each line.
//   line_server --port N [--model proactor|reactor] [--backend uring|epoll|auto]
//               [--max-seconds S] [--timeout IDLE] [--send-timeout T]
//               [--max-clients N]   (--help: all, with defaults)
// First line on stdout: "listening on 127.0.0.1:PORT". SIGINT/SIGTERM stop it.
// A client that stops reading while lines queue up for it is cut off after
// --send-timeout; one that sends nothing for --timeout (when set) too.
#include <sys/socket.h>

#include <cstdio>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

struct Limits {
  example::Millis idle{0};  // 0: none
  example::Millis send{std::chrono::seconds(60)};
};

lev::Task<lev::Result<std::optional<std::string>>> next_line(lev::Loop& loop,
                                                              lev::net::Stream& stream,
                                                              example::Millis idle) {
  if (idle.count() == 0) co_return co_await stream.read_message();
  co_return co_await lev::with_timeout(loop, stream.read_message(), idle);
}

lev::Task<> session(lev::Loop& loop, lev::Fd fd, Limits limits) {
  lev::net::Stream stream{loop, std::move(fd), {.codec = lev::net::Codec::line()}};
  bool cut = false;  // cut off: what is still queued is dropped
  for (;;) {
    auto line = co_await next_line(loop, stream, limits.idle);
    if (!line) {
      if (!line.error().is_timeout())
        std::fprintf(stderr, "line_server: %s\n", line.error().message().c_str());
      cut = line.error().is_timeout();
      break;
    }
    if (!*line) break;  // the client closed
    // Waits while more than the Stream's high watermark is queued for a
    // client that does not read; --send-timeout bounds that wait.
    auto w = co_await lev::with_timeout(loop, stream.write_message("echo: " + **line), limits.send);
    if (!w) {
      cut = true;
      break;
    }
  }
  // A client cut off gets no flush: shutting the socket down makes the
  // flusher's send fail, so close() returns at once.
  if (cut) ::shutdown(stream.fd(), SHUT_RDWR);
  (void)co_await stream.close();
}

}  // namespace

int main(int argc, char** argv) try {
  example::ServerArgs args;
  Limits limits;
  example::Cli cli{"line_server", "Replies \"echo: <line>\" to each line (lev::net::Stream)."};
  args.add_to(cli);
  cli.duration("--timeout", limits.idle, true, std::chrono::hours(24 * 365),
               "close a connection idle this long (0: never)");
  cli.parse(argc, argv);
  args.loop.check(cli);
  limits.send = args.send_timeout;
  return example::run_server("line_server", args, [&](lev::Loop& loop, lev::Fd fd) {
    return session(loop, std::move(fd), limits);
  });
} catch (const std::exception& e) {
  std::fprintf(stderr, "line_server: %s\n", e.what());
  return 1;
}
