#include "lev/net/datagram.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>

namespace lev::net {

Result<DatagramSocket> DatagramSocket::open(Loop& loop, int family) {
  Fd s{::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (!s) return Error::from_errno(errno, "socket");
  return DatagramSocket(loop, std::move(s));
}

Result<DatagramSocket> DatagramSocket::bind(Loop& loop, const SocketAddress& local) {
  auto s = open(loop, local.family());
  if (!s) return s;
  if (local.family() == AF_INET6) {
    const int one = 1;  // ::1 means v6 only; v4-mapped peers stay with v4 sockets
    ::setsockopt(s->fd(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  if (::bind(s->fd(), local.data(), local.size()) != 0)
    return Error::from_errno(errno, "bind", s->fd());
  return s;
}

Result<void> DatagramSocket::connect(const SocketAddress& peer) {
  if (::connect(fd_.get(), peer.data(), peer.size()) != 0)
    return Error::from_errno(errno, "connect", fd_.get());
  return {};
}

SocketAddress DatagramSocket::local_address() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return SocketAddress{reinterpret_cast<sockaddr*>(&ss), len};
}

bool DatagramSocket::receive_buffer(int bytes) noexcept {
  return ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes)) == 0;
}

}  // namespace lev::net
