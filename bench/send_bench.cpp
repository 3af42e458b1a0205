// Zero-copy send vs plain send through lev (io_uring), over loopback TCP, at
// several message sizes: picks the zero_copy_threshold. A receiver thread
// on the other CPU drains the socket.
//   send_bench [--mib 256] [--rounds 3]
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "lev/lev.hpp"

namespace {

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// Seconds to push `total` bytes in `size`-byte send_all calls.
double run(std::size_t size, std::size_t total, bool zero_copy) {
  auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
  lev::Fd c{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (::connect(c.get(), l.address().data(), l.address().size()) != 0) std::abort();
  lev::Fd s{::accept4(l.fd(), nullptr, nullptr, SOCK_CLOEXEC)};
  std::thread receiver([&] {
    pin(1);
    std::vector<char> buf(1 << 20);
    std::size_t got = 0;
    while (got < total) {
      ssize_t n = ::recv(c.get(), buf.data(), buf.size(), 0);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
  });
  pin(0);
  lev::Loop loop{lev::Model::proactor, {.zero_copy_threshold = zero_copy ? 1 : std::size_t{0}}};
  std::vector<char> msg(size, 'z');
  auto t0 = std::chrono::steady_clock::now();
  auto sender = [&]() -> lev::Task<> {
    for (std::size_t sent = 0; sent < total; sent += size) (void)co_await loop.send_all(s, msg);
  };
  loop.block_on(sender());
  receiver.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t mib = 256;
  int rounds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--mib")
      mib = static_cast<std::size_t>(std::atol(argv[i + 1]));
    else if (k == "--rounds")
      rounds = std::atoi(argv[i + 1]);
  }
  std::printf("send: %zu MiB per run over loopback TCP, %d rounds, medians (GiB/s)\n", mib, rounds);
  std::printf("%10s %12s %12s %10s\n", "size", "send", "send_zc", "zc/send");
  for (std::size_t size : {4096u, 16384u, 65536u, 262144u, 1048576u}) {
    const std::size_t total = mib << 20;
    std::vector<double> plain, zc;
    for (int r = 0; r < rounds; ++r) {  // alternate
      plain.push_back(run(size, total, false));
      zc.push_back(run(size, total, true));
    }
    std::sort(plain.begin(), plain.end());
    std::sort(zc.begin(), zc.end());
    const double gib = static_cast<double>(total) / (1 << 30);
    const double p = gib / plain[plain.size() / 2], z = gib / zc[zc.size() / 2];
    std::printf("%10zu %12.2f %12.2f %9.2fx\n", size, p, z, z / p);
  }
}
