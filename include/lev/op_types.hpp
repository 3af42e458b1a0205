#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// What operations give back beyond a byte count, and their option enums.

#include <sys/socket.h>

#include "lev/address.hpp"
#include "lev/clock.hpp"
#include "lev/fd.hpp"

namespace lev {

/// The result of accept: the new connection (owned: closed when dropped)
/// and the peer's address. The socket is nonblocking and close-on-exec.
struct Accepted {
  Fd fd;               ///< the connected socket, owned
  SocketAddress peer;  ///< who connected
};

/// The result of after/at: the timer expired at (or after) `deadline`.
struct Expired {
  TimePoint deadline;  ///< when the timer was due (on the loop's clock)
};

/// Which direction shutdown closes. The numeric SHUT_RD / SHUT_WR /
/// SHUT_RDWR constants are accepted too.
enum class Shutdown : int { read = SHUT_RD, write = SHUT_WR, both = SHUT_RDWR };

}  // namespace lev
