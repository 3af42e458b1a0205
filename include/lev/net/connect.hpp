#pragma once
/// \file
/// Connect: resolve a host name off the loop thread, then try each address
/// in turn under one deadline.
///
///     auto fd = co_await lev::net::connect(loop, "localhost", 8080, {.timeout = 2s});
///     if (!fd) std::puts(fd.error().message().c_str());  // refused, timed out, unknown host

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "lev/address.hpp"
#include "lev/clock.hpp"
#include "lev/error.hpp"
#include "lev/fd.hpp"
#include "lev/task.hpp"

namespace lev {
class Loop;
}

namespace lev::net {

/// getaddrinfo's errors (EAI_*), with gai_strerror messages.
const std::error_category& resolve_category() noexcept;

struct ConnectOptions {
  /// For the whole attempt, resolution included; zero = no deadline.
  Duration timeout = std::chrono::seconds(30);
};

/// Resolves `host` (numeric addresses are not looked up) on a small worker
/// pool; the loop thread never blocks in getaddrinfo. Loopback-first order
/// as getaddrinfo returns it.
Task<Result<std::vector<SocketAddress>>> resolve(Loop& loop, std::string host, std::uint16_t port);

/// A connected, nonblocking socket to `host:port`: each resolved address is
/// tried in turn until one accepts. Errors: the last connect error
/// (ECONNREFUSED...), errc::timed_out, or a resolve_category() error.
Task<Result<Fd>> connect(Loop& loop, std::string host, std::uint16_t port,
                         ConnectOptions options = {});

}  // namespace lev::net
