#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// What operations give back beyond a byte count, and their option enums.

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "lev/address.hpp"
#include "lev/buffer.hpp"
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

/// What statx reports of a file (File::stat, lev::stat).
struct FileStat {
  std::uint64_t size = 0;  ///< bytes (stx_size)
  std::uint32_t mode = 0;  ///< type and permission bits (S_ISREG(mode), mode & 0777)
  std::uint64_t inode = 0;   ///< inode number (stx_ino)
  std::uint64_t device = 0;  ///< the device holding it, as st_dev (makedev of stx_dev_major/minor)
  std::uint32_t links = 0;   ///< hard links (stx_nlink)
  std::uint64_t blocks = 0;  ///< 512-byte blocks allocated
  std::chrono::system_clock::time_point modified{};  ///< last modification (stx_mtime)
};

/// One datagram received into the caller's buffer (recv_from, recvmsg):
/// how many bytes landed there, who sent it, and whether it was longer
/// than the buffer (the rest is dropped, as UDP does: MSG_TRUNC).
struct Datagram {
  std::size_t size = 0;    ///< bytes placed in the buffer (at most its size)
  SocketAddress peer;      ///< the sender (empty when the socket has none to say)
  bool truncated = false;  ///< the datagram was longer than the buffer (MSG_TRUNC)
};

/// One datagram received into a buffer of the loop's datagram pool
/// (DatagramSocket::receive): the payload (an owned Buffer, back to the
/// pool when dropped), who sent it, and whether it was longer than a pool
/// buffer (LoopOptions::datagram_buffer_size; the rest is dropped).
struct ReceivedDatagram {
  Buffer data;             ///< the payload, in a pool buffer (may be empty: an empty datagram)
  SocketAddress peer;      ///< the sender (empty when the socket has none to say)
  bool truncated = false;  ///< longer than a pool buffer: the rest was dropped (MSG_TRUNC)
};

}  // namespace lev
