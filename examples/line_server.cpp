// The seed's TCP server: replies "echo: <line>" to each line.
//   line_server --port N [--model proactor|reactor] [--backend uring|epoll|auto]
//               [--max-seconds S] [--timeout T] [--send-timeout T]
//               [--max-clients N]   (--help: all, with defaults)
// First line on stdout: "listening on 127.0.0.1:PORT". SIGINT, SIGTERM and
// SIGHUP stop it. Limits (docs/servers.md): a client must send each line
// whole within --timeout (60 s, nginx's client_header_timeout) of the
// server asking for it, so a client that sends nothing and one that
// trickles a line a byte at a time are both cut off; a client that stops
// reading while more than 1 MiB of replies wait for it is cut off after
// --send-timeout.
#include <sys/socket.h>

#include <cstdio>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

struct Limits {
  example::Millis line{std::chrono::seconds(60)};  // 0: none
  example::Millis send{std::chrono::seconds(60)};
};

// The line limit is one IdleDeadline per connection: its timer is moved
// later with each line (a store) and fires about once per limit, rather
// than a timer (or a with_timeout task) per line.
lev::Task<> session(lev::Loop& loop, lev::Fd fd, Limits limits) {
  const lev::net::StreamOptions options{.codec = lev::net::Codec::line()};
  lev::net::Stream stream{loop, std::move(fd), options};
  lev::IdleDeadline deadline{loop, lev::Duration::max()};
  bool cut = false;  // cut off: what is still queued is dropped
  for (;;) {
    if (limits.line.count() > 0) deadline.limit_until(loop.now() + limits.line);
    auto line = co_await stream.read_message(deadline);
    if (!line) {
      if (!line.error().is_timeout())
        std::fprintf(stderr, "line_server: %s\n", line.error().message().c_str());
      cut = line.error().is_timeout();
      break;
    }
    if (!*line) break;  // the client closed
    if (!stream.enqueue("echo: " + **line)) {
      cut = true;
      break;
    }
    // A client that does not read: above the high watermark, wait for the
    // queue to drain, within --send-timeout (only then is a timer armed).
    if (stream.queued() > options.high_watermark &&
        !co_await lev::with_timeout(loop, stream.flush(), limits.send)) {
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
  cli.duration("--timeout", limits.line, true, std::chrono::hours(24 * 365),
               "close a connection that sends no whole line for this long (0: never)");
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
