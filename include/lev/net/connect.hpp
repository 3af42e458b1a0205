#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Connect: resolve a host name off the loop thread, then try each address
/// in turn under one deadline.
///
///     auto fd = co_await lev::net::connect(loop, "localhost", 8080, {.timeout = 2s});
///     if (!fd) std::puts(fd.error().message().c_str());  // refused, timed out, unknown host

#include <chrono>
#include <cstdint>
#include <functional>
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

/// Looks a host name up, blocking: called on the offload pool, never on a
/// loop thread. An error is returned as a value (a thrown exception is
/// reported as EAI_FAIL).
using Resolver =
    std::function<Result<std::vector<SocketAddress>>(const std::string& host, std::uint16_t port)>;

/// How connect() tries.
struct ConnectOptions {
  /// For the whole attempt, resolution included; zero = no deadline.
  Duration timeout = std::chrono::seconds(30);
  /// How names are looked up; empty = getaddrinfo.
  Resolver resolver{};
};

/// Resolves `host` (numeric addresses are not looked up) on a small worker
/// pool; the loop thread never blocks in getaddrinfo. Loopback-first order
/// as getaddrinfo returns it. `resolver` replaces getaddrinfo. Cancelled
/// (the task's stop token) while the lookup runs, it returns
/// operation_canceled at once; the lookup, which owns copies of its inputs,
/// finishes in the background and its answer is dropped.
Task<Result<std::vector<SocketAddress>>> resolve(Loop& loop, std::string host, std::uint16_t port,
                                                 Resolver resolver = {});

/// A connected, nonblocking socket to `host:port`: each resolved address is
/// tried in turn until one accepts. `options.timeout` bounds the whole call,
/// the lookup included (a lookup still running at the deadline is left to
/// finish in the background, as resolve() does when cancelled). Errors: the
/// last connect error (ECONNREFUSED...), errc::timed_out, or a
/// resolve_category() error.
Task<Result<Fd>> connect(Loop& loop, std::string host, std::uint16_t port,
                         ConnectOptions options = {});

}  // namespace lev::net
