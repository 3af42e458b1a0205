// The hand-written baselines as a program, for callgrind (bench/callgrind.sh,
// bench/cost.py):
//   raw_uring_echo --port N [--max-seconds S] [--epoll] [--http] [--coro]
// The raw liburing echo server; --epoll: the raw epoll one instead; --http:
// the raw liburing loop answering HTTP requests (what http_hello is
// measured against); --coro: the same liburing loop resuming a C++20
// coroutine per connection (the coroutine floor, raw_coro_echo.cpp). SIGTERM or SIGINT ends it, through a signalfd the loop
// waits on (under valgrind a signal alone does not end a wait in the
// kernel, so a blocked loop would never see it).
#include <signal.h>
#include <sys/signalfd.h>
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
}  // namespace

int main(int argc, char** argv) {
  int port = 0, max_seconds = 600;
  bool epoll = false, http = false, coro = false;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--epoll") {
      epoll = true;
    } else if (k == "--http") {
      http = true;
    } else if (k == "--coro") {
      coro = true;
    } else if (i + 1 < argc && k == "--port") {
      port = std::atoi(argv[++i]);
    } else if (i + 1 < argc && k == "--max-seconds") {
      max_seconds = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "raw_uring_echo: unknown option %s (--port --max-seconds --epoll --http --coro)\n",
                   k.c_str());
      return 2;
    }
  }
  if (epoll + http + coro > 1) {
    std::fprintf(stderr, "raw_uring_echo: --epoll, --http and --coro are separate servers\n");
    return 2;
  }
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  ::sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
  const int stop_fd = ::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK);
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
    serve_raw_epoll(listener->fd(), g_stop, deadline, stop_fd);
  else if (coro)
    serve_raw_coro(listener->fd(), g_stop, deadline, stop_fd);
  else
    serve_raw_uring(listener->fd(), g_stop, deadline, http, stop_fd);
}
