// A UDP echo server and its client.
//   udp_echo server --port N [--max-seconds S] [--model proactor|reactor]
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

#include "lev/lev.hpp"
#include "lev/net/datagram.hpp"

using namespace std::chrono_literals;

namespace {

struct Args {
  bool server = true;
  long port = -1;
  long max_seconds = 0;
  long count = 100;
  lev::Model model = lev::Model::proactor;
};

void usage(std::FILE* to) {
  std::fputs(
      "usage: udp_echo server --port N [--max-seconds S] [--model proactor|reactor]\n"
      "       udp_echo client --port N [--count C] [--model proactor|reactor]\n",
      to);
}

bool parse(int argc, char** argv, Args& a) {
  if (argc < 2) return false;
  const std::string mode = argv[1];
  if (mode == "server") a.server = true;
  else if (mode == "client") a.server = false;
  else return false;
  for (int i = 2; i < argc; ++i) {
    const std::string k = argv[i];
    auto number = [&](long& out, long lo, long hi) {
      if (i + 1 >= argc) return false;
      char* end = nullptr;
      out = std::strtol(argv[++i], &end, 10);
      return end && !*end && out >= lo && out <= hi;
    };
    if (k == "--port") {
      if (!number(a.port, 0, 65535)) return false;
    } else if (k == "--max-seconds" && a.server) {
      if (!number(a.max_seconds, 0, 86400)) return false;
    } else if (k == "--count" && !a.server) {
      if (!number(a.count, 1, 10000000)) return false;
    } else if (k == "--model") {
      if (i + 1 >= argc) return false;
      const std::string m = argv[++i];
      if (m == "proactor") a.model = lev::Model::proactor;
      else if (m == "reactor") a.model = lev::Model::reactor;
      else return false;
    } else {
      return false;
    }
  }
  return a.port >= 0 && (a.server || a.port > 0);
}

lev::Task<> serve(lev::net::DatagramSocket& s) {
  std::array<char, 65536> buf;
  for (;;) {
    auto d = co_await s.recv_from(buf);
    if (!d) {
      if (d.error().is_cancelled()) co_return;
      continue;  // e.g. an ICMP error for an earlier reply: keep serving
    }
    (void)co_await s.send_to(lev::ConstBuffer{buf.data(), d->size}, d->peer);
  }
}

int run_server(const Args& a) {
  lev::Loop loop{a.model};
  auto on_int = loop.signal(SIGINT, [&](int) { loop.stop(); });
  auto on_term = loop.signal(SIGTERM, [&](int) { loop.stop(); });
  auto addr = lev::SocketAddress::ip("127.0.0.1", static_cast<std::uint16_t>(a.port));
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
  const auto to = *lev::SocketAddress::ip("127.0.0.1", static_cast<std::uint16_t>(a.port));
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

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    }
  Args a;
  if (!parse(argc, argv, a)) {
    usage(stderr);
    return 2;
  }
  if (a.server) return run_server(a);
  lev::Loop loop{a.model};
  return loop.block_on(client(loop, a));
}
