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

// One connection: send `size` bytes tagged with `id`, read them back.
lev::Task<std::size_t> exchange(lev::Loop& loop, lev::SocketAddress to, int id, std::size_t size) {
  lev::Fd s{::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  (co_await loop.connect(s, to)).value();  // throws: when_all cancels the others
  std::string out(size, static_cast<char>('A' + id % 26));
  (co_await loop.send_all(s, out)).value();
  std::string in(size, '\0');
  std::size_t got = 0;
  while (got < size) {
    auto n = (co_await loop.recv(s, std::span(in).subspan(got))).value();
    if (n == 0) throw std::runtime_error("connection " + std::to_string(id) + " closed early");
    got += n;
  }
  if (in != out) throw std::runtime_error("connection " + std::to_string(id) + ": wrong echo");
  (void)co_await loop.close(s);
  co_return got;
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
  auto port = static_cast<std::uint16_t>(example::arg_num(argc, argv, "--port", 0));
  auto connections = static_cast<int>(example::arg_num(argc, argv, "--connections", 8));
  auto size = static_cast<std::size_t>(example::arg_num(argc, argv, "--size", 100));
  auto to = lev::SocketAddress::ip("127.0.0.1", port);
  if (!to || port == 0) throw std::invalid_argument("need --port N");
  if (connections < 1 || connections > 10000)
    throw std::invalid_argument("--connections must be between 1 and 10000");
  lev::Loop loop{example::model_arg(argc, argv)};
  return loop.block_on(run(loop, *to, connections, size));
} catch (const std::exception& e) {
  std::fprintf(stderr, "fan_out: %s\n", e.what());
  return 1;
}
