// The hand-written baselines as a program, for callgrind (bench/callgrind.sh,
// bench/cost.py):
//   raw_uring_echo --port N [--max-seconds S] [--epoll] [--http]
// The raw liburing echo server; --epoll: the raw epoll one instead; --http:
// the raw liburing loop answering HTTP requests (what http_hello is
// measured against). SIGTERM or SIGINT ends it (checked every 20 ms).
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "lev/lev.hpp"
#include "servers.hpp"

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }
}  // namespace

int main(int argc, char** argv) {
  int port = 0, max_seconds = 600;
  bool epoll = false, http = false;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--epoll") {
      epoll = true;
    } else if (k == "--http") {
      http = true;
    } else if (i + 1 < argc && k == "--port") {
      port = std::atoi(argv[++i]);
    } else if (i + 1 < argc && k == "--max-seconds") {
      max_seconds = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "raw_uring_echo: unknown option %s (--port --max-seconds --epoll --http)\n",
                   k.c_str());
      return 2;
    }
  }
  if (epoll && http) {
    std::fprintf(stderr, "raw_uring_echo: --http is served by the io_uring loop only\n");
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  auto listener =
      lev::net::Listener::tcp("127.0.0.1", static_cast<std::uint16_t>(port), {.backlog = 4096});
  if (!listener) {
    std::fprintf(stderr, "raw_uring_echo: %s\n", listener.error().message().c_str());
    return 1;
  }
  std::printf("listening on %s\n", listener->address().to_string().c_str());
  std::fflush(stdout);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(max_seconds);
  if (epoll)
    serve_raw_epoll(listener->fd(), g_stop, deadline);
  else
    serve_raw_uring(listener->fd(), g_stop, deadline, http);
}
