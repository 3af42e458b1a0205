// Connects to an echo server, sends --count messages of --size bytes one at
// a time (reading each echo while it is being written, so a message larger
// than the socket buffers cannot deadlock), checks every echo, prints
// "echoed N messages".
//   echo_client --port N [--host 127.0.0.1] [--count 1000] [--size 64]
#include <sys/socket.h>

#include <cstdio>
#include <vector>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

lev::Task<bool> send_message(lev::Loop& loop, lev::FdRef s, const std::vector<char>& out) {
  auto r = co_await loop.send_all(s, out);
  if (!r) std::fprintf(stderr, "echo_client: %s\n", r.error().message().c_str());
  co_return bool(r);
}

lev::Task<bool> read_echo(lev::Loop& loop, lev::FdRef s, std::vector<char>& in) {
  std::size_t got = 0;
  while (got < in.size()) {
    auto n = co_await loop.recv(s, std::span(in).subspan(got));
    if (!n || *n == 0) {
      std::fprintf(stderr, "echo_client: server closed early\n");
      co_return false;
    }
    got += *n;
  }
  co_return true;
}

lev::Task<int> run(lev::Loop& loop, lev::SocketAddress to, long count, std::size_t size) {
  lev::Fd s{::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (auto c = co_await loop.connect(s, to); !c) {
    std::fprintf(stderr, "echo_client: %s\n", c.error().message().c_str());
    co_return 1;
  }
  std::vector<char> out(size), in(size);
  for (long i = 0; i < count; ++i) {
    for (std::size_t j = 0; j < size; ++j) out[j] = static_cast<char>('a' + (i + j) % 26);
    // Write and read at once: the server echoes while we are still writing.
    auto [sent, read] = co_await lev::when_all(send_message(loop, s, out), read_echo(loop, s, in));
    if (!sent || !read) co_return 1;
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
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  long count = 1000;
  std::size_t size = 64;
  example::LoopArgs loop_args;
  example::Cli cli{"echo_client", "Sends messages to an echo server and checks every echo."};
  cli.text("--host", host, "the server's numeric address");
  cli.port("--port", port, "the server's port (required)");
  cli.integer("--count", count, 1, 1'000'000'000, "messages to send");
  cli.bytes("--size", size, 1, std::size_t(1) << 30, "bytes per message");
  loop_args.add_to(cli);
  cli.parse(argc, argv);
  loop_args.check(cli);
  if (port == 0) cli.fail("--port is required");
  auto to = lev::SocketAddress::ip(host, port);
  if (!to) cli.fail("--host needs a numeric IPv4 or IPv6 address, got '" + host + "'");
  lev::Loop loop{loop_args.loop_model(), loop_args.options()};
  return loop.block_on(run(loop, *to, count, size));
} catch (const std::exception& e) {
  std::fprintf(stderr, "echo_client: %s\n", e.what());
  return 1;
}
