#pragma once
// Small helpers the examples share: argument parsing, the server skeleton.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

#include "lev/lev.hpp"

namespace example {

/// The value after `--name` in argv, or `fallback`.
inline std::string arg(int argc, char** argv, std::string_view name, std::string fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (name == argv[i]) return argv[i + 1];
  return fallback;
}

inline long arg_num(int argc, char** argv, std::string_view name, long fallback) {
  std::string v = arg(argc, argv, name, "");
  if (v.empty()) return fallback;
  char* end = nullptr;
  long n = std::strtol(v.c_str(), &end, 10);
  if (!end || *end)
    throw std::invalid_argument(std::string(name) + " needs a number, got '" + v + "'");
  return n;
}

inline lev::Model model_arg(int argc, char** argv) {
  std::string m = arg(argc, argv, "--model", "proactor");
  if (m == "proactor") return lev::Model::proactor;
  if (m == "reactor") return lev::Model::reactor;
  throw std::invalid_argument("--model must be proactor or reactor, got '" + m + "'");
}

/// `--recv own|pool`: true for pool (receive with loop.recv(fd), buffers
/// from the loop's pool), false for own (a buffer per connection).
inline bool recv_arg(int argc, char** argv, const char* fallback) {
  std::string r = arg(argc, argv, "--recv", fallback);
  if (r == "own") return false;
  if (r == "pool") return true;
  throw std::invalid_argument("--recv must be own or pool, got '" + r + "'");
}

/// For a server that parses received bytes in place (loop.recv(fd)): the
/// start of a message that the next receive completes, kept between
/// receives. `bytes(fresh)` is what to parse: the fresh bytes alone when
/// nothing was kept (no copy), else the kept ones followed by them.
/// `keep(data, pos)` keeps what the parser left of `data` from `pos` on.
class Carry {
 public:
  std::string_view bytes(std::string_view fresh) {
    if (kept_.empty()) return fresh;
    kept_.append(fresh);
    return kept_;
  }
  void keep(std::string_view data, std::size_t pos) {
    if (!kept_.empty() && data.data() == kept_.data())
      kept_.erase(0, pos);
    else
      kept_.assign(data.substr(pos));
  }
  [[nodiscard]] std::size_t size() const noexcept { return kept_.size(); }

 private:
  std::string kept_;
};

/// The one-loop TCP server every example server is: listens on
/// 127.0.0.1:--port (0: any), prints "listening on 127.0.0.1:PORT" first,
/// spawns `serve(loop, fd)` per connection (TCP_NODELAY set), stops on
/// SIGINT / SIGTERM or after --max-seconds. Returns the exit code.
template <class Serve>
int run_server(const char* name, int argc, char** argv, Serve serve) {
  auto port = static_cast<std::uint16_t>(arg_num(argc, argv, "--port", 0));
  long max_seconds = arg_num(argc, argv, "--max-seconds", 0);
  lev::Loop loop{model_arg(argc, argv)};
  // SIGINT / SIGTERM stop the loop; its destructor then cancels the rest.
  auto on_int = loop.signal(SIGINT, [&](int) { loop.stop(); });
  auto on_term = loop.signal(SIGTERM, [&](int) { loop.stop(); });

  auto listener = lev::net::Listener::tcp("127.0.0.1", port, {.backlog = 4096}).value();
  std::printf("listening on %s\n", listener.address().to_string().c_str());
  std::fflush(stdout);

  // One coroutine per connection; EMFILE and friends back off inside.
  lev::net::Acceptor acceptor{loop, listener, [&](lev::Fd fd, lev::SocketAddress) {
                                int one = 1;
                                ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                                return serve(loop, std::move(fd));
                              }};
  loop.spawn(acceptor.run());
  if (max_seconds > 0)
    loop.after(std::chrono::seconds(max_seconds), [&](lev::Operation&, auto) { loop.stop(); });
  loop.run();
  std::fprintf(stderr, "%s: stopped\n", name);
  return 0;
}

}  // namespace example
