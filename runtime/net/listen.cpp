#include "lev/net/listen.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>

#include "lev/loop.hpp"

namespace lev::net {

namespace {

Error sys_error(const char* op, int fd, int err = errno) {
  return Error{std::error_code(err, std::system_category()), op, fd, 0};
}

Result<Fd> open_listening(const SocketAddress& addr, const ListenOptions& o) {
  Fd s{::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (!s) return sys_error("socket", -1);
  int one = 1;
  if (addr.family() != AF_UNIX) {
    if (o.reuse_addr) ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (o.reuse_port && ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
      return sys_error("setsockopt(SO_REUSEPORT)", s.get());
  }
  if (::bind(s.get(), addr.data(), addr.size()) != 0) return sys_error("bind", s.get());
  if (::listen(s.get(), o.backlog) != 0) return sys_error("listen", s.get());
  return s;
}

SocketAddress bound_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return SocketAddress{reinterpret_cast<sockaddr*>(&ss), len};
}

}  // namespace

Result<Listener> Listener::tcp(std::string_view host, std::uint16_t port, ListenOptions o) {
  std::string_view h = host;
  if (h.empty()) h = "0.0.0.0";
  if (h == "localhost") h = "127.0.0.1";
  auto addr = SocketAddress::ip(h, port);
  if (!addr)
    return Error{std::make_error_code(std::errc::invalid_argument), "listen: not a numeric address",
                 -1, 0};
  auto s = open_listening(*addr, o);
  if (!s) return s.error();
  Listener l;
  l.fd_ = std::move(*s);
  l.address_ = bound_address(l.fd_.get());
  return l;
}

Result<Listener> Listener::unix_socket(std::string_view path, ListenOptions o) {
  auto addr = SocketAddress::unix_path(path);
  if (!addr)
    return Error{std::make_error_code(std::errc::filename_too_long), "listen: unix path", -1, 0};
  std::string p(path);
  struct stat st {};
  if (::lstat(p.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Error{std::make_error_code(std::errc::file_exists), "listen: path is not a socket", -1,
                   0};
    // Stale (nobody accepts) or live? Ask it.
    Fd probe{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (::connect(probe.get(), addr->data(), addr->size()) == 0)
      return Error{std::make_error_code(std::errc::address_in_use), "listen: unix socket in use",
                   -1, 0};
    ::unlink(p.c_str());
  }
  auto s = open_listening(*addr, o);
  if (!s) return s.error();
  Listener l;
  l.fd_ = std::move(*s);
  l.address_ = *addr;
  l.unix_path_ = std::move(p);
  return l;
}

Listener::~Listener() {
  if (fd_ && !unix_path_.empty()) ::unlink(unix_path_.c_str());
}

Acceptor::Acceptor(Loop& loop, const Listener& listener, Handler handler)
    : Acceptor(loop, listener.fd(), std::move(handler)) {}

Acceptor::Acceptor(Loop& loop, int listening_fd, Handler handler)
    : loop_(loop), fd_(listening_fd), handler_(std::move(handler)) {}

void Acceptor::stop() {
  stopping_ = true;
  if (pending_) loop_.cancel(*pending_);
}

Task<> Acceptor::run() {
  auto backoff = std::chrono::milliseconds(10);
  bool reported = false;
  while (!stopping_) {
    auto&& accept = loop_.accept(fd_);
    pending_ = &accept.op();
    auto conn = co_await accept;
    pending_ = nullptr;
    if (stopping_) break;  // a connection accepted meanwhile closes with `conn`
    if (conn) {
      ++accepted_;
      backoff = std::chrono::milliseconds(10);
      reported = false;
      loop_.spawn(handler_(std::move(conn->fd), conn->peer));
      continue;
    }
    const int err = conn.error().code.value();
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
      ++resource_errors_;
      if (!reported)
        std::fprintf(stderr, "lev: accept on fd %d: %s; backing off\n", fd_,
                     conn.error().code.message().c_str());
      reported = true;
      co_await loop_.after(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
      continue;
    }
    if (err == ECONNABORTED || err == EINTR || err == EPROTO) continue;  // the peer gave up
    std::fprintf(stderr, "lev: accept on fd %d: %s; accept loop ends\n", fd_,
                 conn.error().message().c_str());
    break;
  }
}

}  // namespace lev::net
