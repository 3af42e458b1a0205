// 64-byte UDP ping-pong over loopback: a blocking client sends a datagram
// and waits for its echo, against three echo servers on a thread of their
// own: lev proactor (io_uring), lev reactor (epoll) and a hand-written
// recvmsg/sendmsg loop. Round trips per second, and each against the loop.
//   udp_bench [--seconds S]
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

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
  double secs = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      secs = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: udp_bench [--seconds S]\n");
      return 2;
    }
  }
  const double raw = measure([](int fd) { raw_server(fd); ::close(fd); }, secs);
  const double pro = measure([](int fd) { lev_server(fd, lev::Model::proactor); }, secs);
  const double rea = measure([](int fd) { lev_server(fd, lev::Model::reactor); }, secs);
  std::printf("\nudp_bench: %zu-byte datagram ping-pong over loopback, %.0f s per row\n", kSize,
              secs);
  std::printf("%-22s %14s %10s\n", "server", "round trips/s", "vs raw");
  std::printf("%-22s %14.0f %9.2fx\n", "recvmsg/sendmsg loop", raw, 1.0);
  std::printf("%-22s %14.0f %9.2fx\n", "lev proactor", pro, pro / raw);
  std::printf("%-22s %14.0f %9.2fx\n", "lev reactor", rea, rea / raw);
  return 0;
}
