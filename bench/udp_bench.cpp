// 64-byte UDP ping-pong over loopback: a blocking client sends a datagram
// and waits for its echo, against echo servers on a thread of their own:
// lev proactor (io_uring) and reactor (epoll), each with recv_from into the
// server's buffer and with receive() from the loop's datagram pool (on
// io_uring: one multishot recvmsg), and a hand-written recvmsg/sendmsg
// loop. Round trips per second, each against the loop: the median of
// ROUNDS rounds, the servers alternated within each round.
//   udp_bench [--seconds S] [--rounds R]
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "lev/lev.hpp"
#include "lev/net/datagram.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kSize = 64;

int bound_socket(sockaddr_in& addr) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return fd;
}

// The hand-written server: blocking recvmsg, sendmsg back, until "stop".
void raw_server(int fd) {
  std::array<char, 2048> buf;
  sockaddr_storage peer;
  for (;;) {
    iovec v{buf.data(), buf.size()};
    msghdr m{};
    m.msg_name = &peer;
    m.msg_namelen = sizeof(peer);
    m.msg_iov = &v;
    m.msg_iovlen = 1;
    const ssize_t n = ::recvmsg(fd, &m, 0);
    if (n <= 0) continue;
    if (n == 4 && std::memcmp(buf.data(), "stop", 4) == 0) return;
    v.iov_len = static_cast<std::size_t>(n);
    ::sendmsg(fd, &m, 0);
  }
}

void lev_server(int fd, lev::Model model) {
  lev::Loop loop{model};
  lev::net::DatagramSocket s{loop, lev::Fd{fd}};
  auto serve = [&]() -> lev::Task<> {
    std::array<char, 2048> buf;
    for (;;) {
      auto d = co_await s.recv_from(buf);
      if (!d) continue;
      if (d->size == 4 && std::memcmp(buf.data(), "stop", 4) == 0) co_return;
      (void)co_await s.send_to(lev::ConstBuffer{buf.data(), d->size}, d->peer);
    }
  };
  loop.block_on(serve());
}

// The same server on receive(): pool buffers, the sender with each.
void lev_pool_server(int fd, lev::Model model) {
  lev::Loop loop{model};
  lev::net::DatagramSocket s{loop, lev::Fd{fd}};
  auto serve = [&]() -> lev::Task<> {
    for (;;) {
      auto d = co_await s.receive();
      if (!d) continue;
      if (d->data.view() == "stop") co_return;
      (void)co_await s.send_to(d->data, d->peer);
    }
  };
  loop.block_on(serve());
}

double client(const sockaddr_in& to, double secs) {
  sockaddr_in me{};
  const int fd = bound_socket(me);
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to));
  std::array<char, kSize> out{}, in{};
  std::uint64_t trips = 0;
  const auto t0 = Clock::now();
  const auto until = t0 + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(secs));
  while (Clock::now() < until) {
    for (int i = 0; i < 32; ++i) {
      if (::send(fd, out.data(), out.size(), 0) != static_cast<ssize_t>(kSize)) break;
      if (::recv(fd, in.data(), in.size(), 0) != static_cast<ssize_t>(kSize)) break;
      ++trips;
    }
  }
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  ::send(fd, "stop", 4, 0);
  ::close(fd);
  return static_cast<double>(trips) / wall;
}

template <class Server>
double measure(Server server, double secs) {
  sockaddr_in addr{};
  const int fd = bound_socket(addr);
  std::thread t(server, fd);
  const double rate = client(addr, secs);
  t.join();
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  double secs = 2;
  int rounds = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      secs = std::atof(argv[++i]);
    } else if (std::strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: udp_bench [--seconds S] [--rounds R]\n");
      return 2;
    }
  }
  if (secs <= 0 || rounds <= 0) {
    std::fprintf(stderr, "udp_bench: --seconds and --rounds must be > 0\n");
    return 2;
  }
  struct Row {
    const char* name;
    void (*server)(int);
    std::vector<double> rates;
  };
  std::vector<Row> rows = {
      {"recvmsg/sendmsg loop", [](int fd) { raw_server(fd); ::close(fd); }, {}},
      {"lev proactor recv_from", [](int fd) { lev_server(fd, lev::Model::proactor); }, {}},
      {"lev proactor receive", [](int fd) { lev_pool_server(fd, lev::Model::proactor); }, {}},
      {"lev reactor recv_from", [](int fd) { lev_server(fd, lev::Model::reactor); }, {}},
      {"lev reactor receive", [](int fd) { lev_pool_server(fd, lev::Model::reactor); }, {}},
  };
  for (int r = 0; r < rounds; ++r)
    for (Row& row : rows) row.rates.push_back(measure(row.server, secs));
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double raw = median(rows[0].rates);
  std::printf("\nudp_bench: %zu-byte datagram ping-pong over loopback, %.0f s per row, "
              "median of %d rounds\n", kSize, secs, rounds);
  std::printf("%-24s %14s %10s\n", "server", "round trips/s", "vs raw");
  for (const Row& row : rows) {
    const double m = median(row.rates);
    std::printf("%-24s %14.0f %9.2fx\n", row.name, m, m / raw);
  }
  return 0;
}
