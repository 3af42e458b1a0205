// docs/tutorial.md, step 3: a client with timeouts and cancellation.
//   tutorial_client PORT [QUESTION]
// Prints "answer: <line>" (exit 0); a timeout exits 3, Ctrl-C exits 130.
// [client]
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <lev/lev.hpp>
#include <stop_token>
#include <string>

#include "tutorial_ask.hpp"

using namespace std::chrono_literals;

lev::Task<int> ask_once(lev::Loop& loop, std::uint16_t port, std::string question) {
  auto fd = co_await lev::net::connect(loop, "127.0.0.1", port, {.timeout = 2s});
  if (!fd) {
    std::fprintf(stderr, "%s\n", fd.error().message().c_str());
    co_return fd.error().is_cancelled() ? 130 : 1;
  }
  auto answer = co_await ask(loop, *fd, std::move(question), 1s);
  if (!answer) {
    const lev::Error& e = answer.error();
    std::fprintf(stderr, "%s\n", e.message().c_str());
    if (e.is_timeout()) co_return 3;
    co_return e.is_cancelled() ? 130 : 1;
  }
  std::printf("answer: %s\n", answer->c_str());
  co_return 0;
}

// The port in `text`: digits only, 0..65535.
bool parse_port(const char* text, std::uint16_t& port) {
  const char* end = text + std::strlen(text);
  auto [ptr, ec] = std::from_chars(text, end, port);
  return ec == std::errc{} && ptr == end;
}

int main(int argc, char** argv) {
  std::uint16_t port = 0;
  const bool help = argc == 2 && std::strcmp(argv[1], "--help") == 0;
  if (help || argc < 2 || argc > 3 || !parse_port(argv[1], port)) {
    std::fprintf(help ? stdout : stderr, "usage: tutorial_client PORT [QUESTION]\n");
    return help ? 0 : 2;
  }
  std::string question = argc == 3 ? argv[2] : "hello";
  return lev::run([&](lev::Loop& loop, std::stop_token stop) {
    // The task carries the token: Ctrl-C cancels the operation it waits
    // on, which ends with errc::operation_canceled.
    return ask_once(loop, port, question).with_stop_token(stop);
  });
}
// [/client]
