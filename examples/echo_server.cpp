// A TCP echo server: one coroutine per connection.
//   echo_server --port N [--max-seconds S] [--model proactor|reactor]
//               [--backend uring|epoll|auto] [--threads T] [--recv own|pool]
//               [--timeout IDLE] [--send-timeout T] [--max-clients N]   (--help: all)
// First line on stdout: "listening on 127.0.0.1:PORT". SIGINT, SIGTERM and
// SIGHUP stop it. A connection idle for --timeout (60 s, nginx's
// client_body_timeout; 0: never) is closed: an echo serves every byte, so
// any byte is activity.
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
#include <string>
#include <string_view>
#include <vector>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

/// Per-connection limits: idle (0: none) and send timeouts.
struct Limits {
  example::Millis idle{std::chrono::seconds(60)};
  example::Millis send{std::chrono::seconds(60)};
};

// The idle limit is one IdleDeadline per connection: one loop timer that
// looks again when it fires, not a timer (or linked timeout) per recv.
lev::Task<> echo(lev::Loop& loop, lev::Fd fd, Limits limits) {
  std::array<std::byte, 4096> buf;
  lev::IdleDeadline idle{loop, limits.idle};
  for (;;) {
    auto n = co_await idle(loop.recv(fd, buf));
    if (!n || *n == 0) break;  // error, idle too long, or the peer closed
    const std::string_view got(reinterpret_cast<const char*>(buf.data()), *n);
    // A client that reads takes the whole echo now: one send, no timer.
    auto sent = co_await loop.send(fd, got, MSG_DONTWAIT);
    if (sent && *sent == got.size()) continue;
    if (!co_await example::send_rest_within(loop, fd, got, std::move(sent), limits.send)) break;
  }
  (void)co_await loop.close(fd);
}

lev::Task<> echo_pooled(lev::Loop& loop, lev::Fd fd, Limits limits) {
  lev::IdleDeadline idle{loop, limits.idle};
  for (;;) {
    auto got = co_await idle(loop.recv(fd));  // back to the pool when dropped
    if (!got || got->empty()) break;          // error, idle too long, or the peer closed
    auto sent = co_await loop.send(fd, *got, MSG_DONTWAIT);
    if (sent && *sent == got->size()) continue;
    if (!co_await example::send_rest_within(loop, fd, got->view(), std::move(sent), limits.send))
      break;
  }
  (void)co_await loop.close(fd);
}

lev::Task<> echo_with_nodelay(lev::Loop& loop, lev::Fd fd, Limits limits) {
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return echo(loop, std::move(fd), limits);
}

// Thread-per-core: one loop per thread, one listener per loop.
int run_threads(long threads, const example::ServerArgs& args, Limits limits) {
  std::vector<lev::net::Listener> listeners;
  const lev::net::ListenOptions shared{.reuse_port = true};
  listeners.push_back(lev::net::Listener::tcp("127.0.0.1", args.port, shared).value());
  const auto port =
      listeners[0].address().port();  // --port 0: every listener takes the first one's
  for (long i = 1; i < threads; ++i)
    listeners.push_back(lev::net::Listener::tcp("127.0.0.1", port, shared).value());

  // SIGHUP stops the loops too: blocked here, so that every loop thread
  // inherits the block, and watched on loop 0 (the Runtime does the same
  // for SIGINT and SIGTERM).
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  ::pthread_sigmask(SIG_BLOCK, &hup, nullptr);
  example::ignore_unused_signals();
  lev::Runtime rt{{.threads = static_cast<unsigned>(threads),
                   .model = args.loop.loop_model(),
                   .loop = args.loop.options(),
                   .pin = true}};
  std::vector<long> accepted(rt.size(), 0);  // each written by its own loop only
  std::printf("listening on %s\n", listeners[0].address().to_string().c_str());
  std::fflush(stdout);
  for (std::size_t i = 0; i < rt.size(); ++i) {
    const lev::net::Listener* l = &listeners[i];
    long* count = &accepted[i];
    rt.spawn_on(i, [l, count, limits](lev::Loop& loop) -> lev::Task<> {
      lev::net::Acceptor acceptor{loop, *l, [&loop, count, limits](lev::Fd fd, lev::SocketAddress) {
                                    ++*count;
                                    return echo_with_nodelay(loop, std::move(fd), limits);
                                  }};
      co_await acceptor.run();
    });
  }
  rt.spawn_on(0, [&rt](lev::Loop& loop) -> lev::Task<> {
    auto on_hup = loop.signal(SIGHUP, [&rt](int) { rt.stop(); });
    (void)co_await loop.sleep_for(std::chrono::hours(24 * 365));  // ended by the stop
  });
  if (args.max_seconds > 0)
    rt.spawn_on(0, [&rt, max_seconds = args.max_seconds](lev::Loop& loop) -> lev::Task<> {
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
  example::ServerArgs args;
  long threads = 1;
  std::string recv = "own";
  Limits limits;
  example::Cli cli{"echo_server", "A TCP echo server: one coroutine per connection."};
  args.add_to(cli);
  cli.integer("--threads", threads, 1, 1024,
              "loops, one per thread, each with its own listener (SO_REUSEPORT)");
  cli.choice("--recv", recv, {"own", "pool"},
             "receive into a buffer per connection, or with loop.recv(fd) from the loop's pool");
  cli.duration("--timeout", limits.idle, true, std::chrono::hours(24 * 365),
               "close a connection idle this long (0: never)");
  cli.parse(argc, argv);
  args.loop.check(cli);
  limits.send = args.send_timeout;
  if (threads > 1) return run_threads(threads, args, limits);
  const bool pooled = recv == "pool";
  return example::run_server("echo_server", args, [&](lev::Loop& loop, lev::Fd fd) {
    return pooled ? echo_pooled(loop, std::move(fd), limits) : echo(loop, std::move(fd), limits);
  });
} catch (const std::exception& e) {
  std::fprintf(stderr, "echo_server: %s\n", e.what());
  return 1;
}
