// Talks to one server over several connections at once and gathers the
// answers with when_all: a request each, every echo checked.
//   fan_out --port N [--connections 8] [--size 100]
// Prints "N replies, B bytes" (exit 0).
#include <sys/socket.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

lev::Task<> read_exact(lev::Loop& loop, lev::FdRef s, std::string& in, int id) {
  std::size_t got = 0;
  while (got < in.size()) {
    auto n = (co_await loop.recv(s, std::span(in).subspan(got))).value();
    if (n == 0) throw std::runtime_error("connection " + std::to_string(id) + " closed early");
    got += n;
  }
}

lev::Task<> write_all(lev::Loop& loop, lev::FdRef s, const std::string& out) {
  (co_await loop.send_all(s, out)).value();
}

// One connection: send `size` bytes tagged with `id` while reading them back.
lev::Task<std::size_t> exchange(lev::Loop& loop, lev::SocketAddress to, int id, std::size_t size) {
  lev::Fd s{::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  (co_await loop.connect(s, to)).value();  // throws: when_all cancels the others
  std::string out(size, static_cast<char>('A' + id % 26)), in(size, '\0');
  co_await lev::when_all(write_all(loop, s, out), read_exact(loop, s, in, id));
  if (in != out) throw std::runtime_error("connection " + std::to_string(id) + ": wrong echo");
  (void)co_await loop.close(s);
  co_return size;
}

lev::Task<int> run(lev::Loop& loop, lev::SocketAddress to, int connections, std::size_t size) {
  std::vector<lev::Task<std::size_t>> tasks;
  for (int i = 0; i < connections; ++i) tasks.push_back(exchange(loop, to, i, size));
  auto sizes = co_await lev::when_all(std::move(tasks));  // all concurrently
  std::size_t bytes = 0;
  for (std::size_t n : sizes) bytes += n;
  std::printf("%zu replies, %zu bytes\n", sizes.size(), bytes);
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  std::uint16_t port = 0;
  long connections = 8;
  std::size_t size = 100;
  example::LoopArgs loop_args;
  example::Cli cli{"fan_out", "Exchanges a message over several connections at once (when_all)."};
  cli.port("--port", port, "the echo server's port on 127.0.0.1 (required)");
  cli.integer("--connections", connections, 1, 10000, "connections at once");
  cli.bytes("--size", size, 1, 64 << 20, "bytes each connection sends");
  loop_args.add_to(cli);
  cli.parse(argc, argv);
  loop_args.check(cli);
  if (port == 0) cli.fail("--port is required");
  auto to = lev::SocketAddress::ip("127.0.0.1", port);
  lev::Loop loop{loop_args.loop_model(), loop_args.options()};
  return loop.block_on(run(loop, *to, static_cast<int>(connections), size));
} catch (const std::exception& e) {
  std::fprintf(stderr, "fan_out: %s\n", e.what());
  return 1;
}
