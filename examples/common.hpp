#pragma once
// Small helpers the examples share: argument parsing and a listening
// socket. (The Listen companion will replace tcp_listen.)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

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

/// A nonblocking listening TCP socket on 127.0.0.1:port (0 = any free one).
inline lev::Fd tcp_listen(std::uint16_t port, lev::SocketAddress& bound) {
  lev::Fd s{::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (!s) throw std::system_error(errno, std::system_category(), "socket");
  int one = 1;
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  auto addr = *lev::SocketAddress::ip("127.0.0.1", port);
  if (::bind(s.get(), addr.data(), addr.size()) != 0)
    throw std::system_error(errno, std::system_category(),
                            "bind 127.0.0.1:" + std::to_string(port));
  if (::listen(s.get(), 1024) != 0)
    throw std::system_error(errno, std::system_category(), "listen");
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  bound = lev::SocketAddress{reinterpret_cast<sockaddr*>(&ss), len};
  return s;
}

}  // namespace example
