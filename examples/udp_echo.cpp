// A UDP echo server and its client.
//   udp_echo server [--port N] [--max-seconds S] [--model proactor|reactor]
//   udp_echo client --port N [--count C] [--model proactor|reactor]
// The server's first line on stdout: "listening on 127.0.0.1:PORT"; it
// sends every datagram back to its sender. The client sends C datagrams
// one at a time, waits for each echo (1 s at most) and prints
// "echoed C of C". Exit 1 when an echo is missing, 2 on a bad command line.
#include <signal.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "common.hpp"
#include "lev/lev.hpp"
#include "lev/net/datagram.hpp"

using namespace std::chrono_literals;

namespace {

struct Args {
  std::uint16_t port = 0;
  long max_seconds = 0;
  long count = 100;
  example::LoopArgs loop;
};

// Each datagram arrives in a buffer of the loop's datagram pool (on
// io_uring: one multishot recvmsg for the socket's life) and goes back to
// the pool when `d` does, after its echo.
lev::Task<> serve(lev::net::DatagramSocket& s) {
  for (;;) {
    auto d = co_await s.receive();
    if (!d) {
      if (d.error().is_cancelled()) co_return;
      continue;  // e.g. an ICMP error for an earlier reply: keep serving
    }
    (void)co_await s.send_to(d->data, d->peer);
  }
}

int run_server(const Args& a) {
  lev::Loop loop{a.loop.loop_model(), a.loop.options()};
  auto on_int = loop.signal(SIGINT, [&](int) { loop.stop(); });
  auto on_term = loop.signal(SIGTERM, [&](int) { loop.stop(); });
  auto addr = lev::SocketAddress::ip("127.0.0.1", a.port);
  auto s = lev::net::DatagramSocket::bind(loop, *addr);
  if (!s) {
    std::fprintf(stderr, "udp_echo: %s\n", s.error().message().c_str());
    return 1;
  }
  s->receive_buffer(1 << 20);
  std::printf("listening on %s\n", s->local_address().to_string().c_str());
  std::fflush(stdout);
  loop.spawn(serve(*s));
  if (a.max_seconds > 0)
    loop.after(std::chrono::seconds(a.max_seconds), [&](lev::Operation&, auto) { loop.stop(); });
  loop.run();
  std::fprintf(stderr, "udp_echo: stopped\n");
  return 0;
}

lev::Task<int> client(lev::Loop& loop, const Args& a) {
  auto s = lev::net::DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
  if (!s) co_return 1;
  const auto to = *lev::SocketAddress::ip("127.0.0.1", a.port);
  long echoed = 0;
  std::array<char, 64> buf;
  for (long i = 0; i < a.count; ++i) {
    const std::string msg = "datagram " + std::to_string(i);
    if (!co_await s->send_to(msg, to)) break;
    auto d = co_await s->recv_from(buf, lev::IoOptions{.timeout = 1s});
    if (d && std::string_view(buf.data(), d->size) == msg) ++echoed;
  }
  std::printf("echoed %ld of %ld\n", echoed, a.count);
  co_return echoed == a.count ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode != "server" && mode != "client") {
    example::Cli top{"udp_echo", "A UDP echo server and its client: udp_echo server [options] or\n"
                                 "udp_echo client [options] (--help after either lists them)."};
    top.parse(argc, argv);  // --help: exit 0; anything else: exit 2
    top.fail("needs server or client first");
  }
  Args a;
  const bool server = mode == "server";
  example::Cli cli{"udp_echo " + mode, server ? "Sends every datagram back to its sender."
                                              : "Sends datagrams one at a time, checks each echo."};
  if (server) {
    cli.port("--port", a.port, "bind 127.0.0.1:PORT (0: any free port)");
    cli.integer("--max-seconds", a.max_seconds, 0, 1'000'000'000, "stop after N seconds (0: never)");
  } else {
    cli.port("--port", a.port, "the server's port (required)");
    cli.integer("--count", a.count, 1, 10'000'000, "datagrams to send");
  }
  a.loop.add_to(cli);
  cli.parse(argc - 1, argv + 1);  // argv[1], the mode, stands for the program
  a.loop.check(cli);
  if (!server && a.port == 0) cli.fail("--port is required");
  if (server) return run_server(a);
  lev::Loop loop{a.loop.loop_model(), a.loop.options()};
  return loop.block_on(client(loop, a));
} catch (const std::exception& e) {
  std::fprintf(stderr, "udp_echo: %s\n", e.what());
  return 1;
}
