// The raw liburing echo baseline as a program, for callgrind:
//   raw_uring_echo --port N --max-seconds S
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "lev/lev.hpp"
#include "servers.hpp"

int main(int argc, char** argv) {
  int port = 0, max_seconds = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--port")
      port = std::atoi(argv[i + 1]);
    else if (k == "--max-seconds")
      max_seconds = std::atoi(argv[i + 1]);
  }
  lev::Fd lfd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  int one = 1;
  ::setsockopt(lfd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  auto addr = *lev::SocketAddress::ip("127.0.0.1", static_cast<std::uint16_t>(port));
  if (::bind(lfd.get(), addr.data(), addr.size()) != 0 || ::listen(lfd.get(), 4096) != 0) {
    std::perror("raw_uring_echo: bind/listen");
    return 1;
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(lfd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  std::printf("listening on %s\n",
              lev::SocketAddress{reinterpret_cast<sockaddr*>(&ss), len}.to_string().c_str());
  std::fflush(stdout);
  std::atomic<bool> stop{false};
  serve_raw_uring(lfd.get(), stop,
                  std::chrono::steady_clock::now() + std::chrono::seconds(max_seconds));
}
