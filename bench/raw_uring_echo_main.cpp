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
  auto listener =
      lev::net::Listener::tcp("127.0.0.1", static_cast<std::uint16_t>(port), {.backlog = 4096});
  if (!listener) {
    std::fprintf(stderr, "raw_uring_echo: %s\n", listener.error().message().c_str());
    return 1;
  }
  std::printf("listening on %s\n", listener->address().to_string().c_str());
  std::fflush(stdout);
  std::atomic<bool> stop{false};
  serve_raw_uring(listener->fd(), stop,
                  std::chrono::steady_clock::now() + std::chrono::seconds(max_seconds));
}
