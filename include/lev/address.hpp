#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// `lev::SocketAddress`: an IPv4, IPv6 or unix socket address by value.

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lev {

/// A socket address held by value (sockaddr_storage plus its length).
class SocketAddress {
 public:
  /// An empty address (family AF_UNSPEC, size 0).
  SocketAddress() noexcept = default;
  /// A copy of `len` bytes at `sa` (as accept or getsockname give them);
  /// more than sockaddr_storage holds is cut.
  SocketAddress(const sockaddr* sa, socklen_t len) noexcept;

  /// Parses a numeric IPv4 or IPv6 address ("127.0.0.1", "::1") and a port.
  /// Returns nullopt for anything that is not a numeric address.
  static std::optional<SocketAddress> ip(std::string_view host, std::uint16_t port);
  /// A unix socket path; nullopt when the path does not fit sun_path.
  static std::optional<SocketAddress> unix_path(std::string_view path);

  /// For bind, connect, sendto: the address as a sockaddr.
  [[nodiscard]] const sockaddr* data() const noexcept {
    return reinterpret_cast<const sockaddr*>(&storage_);
  }
  /// For a call that fills the address in; set the size to match.
  [[nodiscard]] sockaddr* data() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
  /// The length of the address in bytes (what data() points at).
  [[nodiscard]] socklen_t size() const noexcept { return len_; }
  /// AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC when empty.
  [[nodiscard]] int family() const noexcept { return storage_.ss_family; }
  /// Port for IPv4/IPv6, 0 otherwise.
  [[nodiscard]] std::uint16_t port() const noexcept;
  /// "127.0.0.1:8080", "[::1]:8080", "unix:/path".
  [[nodiscard]] std::string to_string() const;

 private:
  sockaddr_storage storage_{};
  socklen_t len_ = 0;
};

}  // namespace lev
