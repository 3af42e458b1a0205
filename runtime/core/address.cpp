#include "lev/address.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace lev {

SocketAddress::SocketAddress(const sockaddr* sa, socklen_t len) noexcept {
  len_ = std::min<socklen_t>(len, sizeof(storage_));
  if (sa && len_) std::memcpy(&storage_, sa, len_);
}

std::optional<SocketAddress> SocketAddress::ip(std::string_view host, std::uint16_t port) {
  std::string h(host);
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  SocketAddress a;
  sockaddr_in v4{};
  if (::inet_pton(AF_INET, h.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(port);
    std::memcpy(&a.storage_, &v4, sizeof(v4));
    a.len_ = sizeof(v4);
    return a;
  }
  sockaddr_in6 v6{};
  if (::inet_pton(AF_INET6, h.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(port);
    std::memcpy(&a.storage_, &v6, sizeof(v6));
    a.len_ = sizeof(v6);
    return a;
  }
  return std::nullopt;
}

std::optional<SocketAddress> SocketAddress::unix_path(std::string_view path) {
  sockaddr_un un{};
  if (path.empty() || path.size() >= sizeof(un.sun_path)) return std::nullopt;
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, path.data(), path.size());
  SocketAddress a;
  std::memcpy(&a.storage_, &un, sizeof(un));
  a.len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return a;
}

std::uint16_t SocketAddress::port() const noexcept {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (family() == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

std::string SocketAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family() == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf,
                sizeof(buf));
    std::string out(buf);
    out.push_back(':');
    out.append(std::to_string(port()));
    return out;
  }
  if (family() == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf,
                sizeof(buf));
    std::string out;  // appended piecewise: GCC 12 -O3 misfires -Wrestrict on operator+
    out.reserve(INET6_ADDRSTRLEN + 8);
    out.push_back('[');
    out.append(buf);
    out.append("]:");
    out.append(std::to_string(port()));
    return out;
  }
  if (family() == AF_UNIX) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
    std::size_t n =
        len_ > offsetof(sockaddr_un, sun_path) ? len_ - offsetof(sockaddr_un, sun_path) : 0;
    std::string p(un->sun_path, strnlen(un->sun_path, n));
    p.insert(0, "unix:");
    return p;
  }
  return "unknown";
}

}  // namespace lev
