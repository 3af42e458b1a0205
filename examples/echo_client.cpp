// Connects to an echo server, sends --count messages of --size bytes one at
// a time, checks every echo, prints "echoed N messages".
//   echo_client --port N [--host 127.0.0.1] [--count 1000] [--size 64]
#include <sys/socket.h>

#include <cstdio>
#include <vector>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

lev::Task<int> run(lev::Loop& loop, lev::SocketAddress to, long count, std::size_t size) {
  lev::Fd s{::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (auto c = co_await loop.connect(s, to); !c) {
    std::fprintf(stderr, "echo_client: %s\n", c.error().message().c_str());
    co_return 1;
  }
  std::vector<char> out(size), in(size);
  for (long i = 0; i < count; ++i) {
    for (std::size_t j = 0; j < size; ++j) out[j] = static_cast<char>('a' + (i + j) % 26);
    (co_await loop.send_all(s, out)).value();
    std::size_t got = 0;
    while (got < size) {
      auto n = co_await loop.recv(s, std::span(in).subspan(got));
      if (!n || *n == 0) {
        std::fprintf(stderr, "echo_client: server closed early\n");
        co_return 1;
      }
      got += *n;
    }
    if (in != out) {
      std::fprintf(stderr, "echo_client: message %ld came back different\n", i);
      co_return 1;
    }
  }
  (void)co_await loop.close(s);
  std::printf("echoed %ld messages\n", count);
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  auto host = example::arg(argc, argv, "--host", "127.0.0.1");
  auto port = static_cast<std::uint16_t>(example::arg_num(argc, argv, "--port", 0));
  long count = example::arg_num(argc, argv, "--count", 1000);
  auto size = static_cast<std::size_t>(example::arg_num(argc, argv, "--size", 64));
  auto to = lev::SocketAddress::ip(host, port);
  if (!to || port == 0) throw std::invalid_argument("need --port N and a numeric --host");
  lev::Loop loop{example::model_arg(argc, argv)};
  return loop.block_on(run(loop, *to, count, size));
} catch (const std::exception& e) {
  std::fprintf(stderr, "echo_client: %s\n", e.what());
  return 1;
}
