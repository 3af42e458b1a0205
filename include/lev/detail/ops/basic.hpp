#pragma once
/// \file
/// Descriptions of the operations every fd has: nop, read, write, close,
/// poll (readiness). See lev/detail/describe.hpp.

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>

#include "lev/detail/buffer_pool.hpp"
#include "lev/detail/describe.hpp"

namespace lev::detail {

/// The readiness engines' side of `select` (epoll, the fake): takes a
/// buffer of `op.pool` now that data may be there, runs `receive(buf, cap)`
/// (a nonblocking syscall: bytes used, or -1 with errno) and reports the
/// buffer as the kernel would (IORING_CQE_F_BUFFER | id); a buffer nothing
/// landed in goes back. No free buffer: -1 with ENOBUFS.
template <class Receive>
long attempt_into_pool(OpBase& op, Receive receive) noexcept {
  const int id = op.pool->take();
  if (id < 0) {
    errno = ENOBUFS;
    return -1;
  }
  const auto bid = static_cast<std::uint16_t>(id);
  const long r = receive(op.pool->data(bid), static_cast<std::size_t>(op.pool->size()));
  if (r > 0) {
    op.cqe_flags = IORING_CQE_F_BUFFER | (static_cast<unsigned>(id) << IORING_CQE_BUFFER_SHIFT);
  } else {
    const int e = errno;
    op.pool->untake(bid);
    op.cqe_flags = 0;
    errno = e;
  }
  return r;
}

/// One submission moves at most this many bytes; longer read/recv/send
/// complete short, and send_all/write_all continue where they stopped.
inline constexpr std::size_t kMaxIoChunk = std::size_t{1} << 30;

/// The I/O fields of a byte-moving op: `all` ops (write_all, send_all)
/// continue through Loop::settle until every byte moved (kFlowAll).
inline void setup_io(OpBase& op, void* buf, std::size_t len, std::uint64_t offset, int flags,
                     bool all = false) noexcept {
  op.buf = buf;
  op.len = static_cast<std::uint32_t>(std::min(len, kMaxIoChunk));
  op.offset = offset;
  op.flags = flags;
  op.flow = all ? kFlowAll : 0;
  op.done = 0;
  op.total = len;
  op.zc = 0;
}

/// The thread's hook for an fd lev closes (epoll registrations, multishot
/// recvs let go); defined in the runtime.
void fd_closing(int fd) noexcept;

struct NopOp : OpTraits {
  static constexpr OpKind kind = OpKind::nop;
  static constexpr const char* name = "nop";
  using Result = void;
  static void setup(OpBase&) noexcept {}
  static void prep(io_uring_sqe* sqe, OpBase&, std::size_t) noexcept { io_uring_prep_nop(sqe); }
  static constexpr Wait wait = Wait::none;
  static long attempt(OpBase&) noexcept { return 0; }
};

/// Bytes read; 0 = end of file. offset -1: the file position / a stream.
struct ReadOp : OpTraits {
  static constexpr OpKind kind = OpKind::read;
  static constexpr const char* name = "read";
  using Result = std::size_t;
  static void setup(OpBase& op, void* buf, std::size_t len, std::uint64_t offset) noexcept {
    setup_io(op, buf, len, offset, 0);
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_read(sqe, op.fd, op.buf, op.len, op.offset);
  }
  static constexpr Wait wait = Wait::read;
  static constexpr bool may_be_file = true;
  static long attempt(OpBase& op) noexcept {
    return op.offset == static_cast<std::uint64_t>(-1)
               ? ::read(op.fd, op.buf, op.len)
               : ::pread(op.fd, op.buf, op.len, static_cast<off_t>(op.offset));
  }
};

/// Bytes written; `all`: every byte, or an error with `transferred`.
struct WriteOp : OpTraits {
  static constexpr OpKind kind = OpKind::write;
  static constexpr const char* name = "write";
  using Result = std::size_t;
  static void setup(OpBase& op, const void* buf, std::size_t len, std::uint64_t offset,
                    bool all) noexcept {
    setup_io(op, const_cast<void*>(buf), len, offset, 0, all);
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_write(sqe, op.fd, op.buf, op.len, op.offset);
  }
  static constexpr Wait wait = Wait::write;
  static constexpr bool may_be_file = true;
  static constexpr bool writes = true;
  static long attempt(OpBase& op) noexcept {
    return op.offset == static_cast<std::uint64_t>(-1)
               ? ::write(op.fd, op.buf, op.len)
               : ::pwrite(op.fd, op.buf, op.len, static_cast<off_t>(op.offset));
  }
};

/// Never cancelled (kFlowClose): whatever happens, the fd is closed.
struct CloseOp : OpTraits {
  static constexpr OpKind kind = OpKind::close;
  static constexpr const char* name = "close";
  using Result = void;
  static void setup(OpBase& op) noexcept { op.flow = kFlowClose; }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_close(sqe, op.fd);
  }
  static constexpr Wait wait = Wait::none;
  static long attempt(OpBase& op) noexcept {
    fd_closing(op.fd);  // every engine of this thread forgets it
    return ::close(op.fd);
  }
};

/// Readiness: the poll(2) revents seen (`flags` holds the mask).
struct PollOp : OpTraits {
  static constexpr OpKind kind = OpKind::poll;
  static constexpr const char* name = "poll";
  using Result = unsigned;
  static void setup(OpBase& op, unsigned mask) noexcept { op.flags = static_cast<int>(mask); }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_poll_add(sqe, op.fd, static_cast<unsigned>(op.flags));
  }
  static constexpr Wait wait = Wait::mask;
  static long attempt(OpBase& op) noexcept {
    pollfd p{op.fd, static_cast<short>(op.flags), 0};
    const int r = ::poll(&p, 1, 0);
    if (r == 0) {
      errno = EAGAIN;
      return -1;
    }
    if (r > 0 && (p.revents & POLLNVAL)) {
      errno = EBADF;
      return -1;
    }
    return r < 0 ? r : p.revents;
  }
};

template <> struct Describe<OpKind::nop> { using type = NopOp; };
template <> struct Describe<OpKind::read> { using type = ReadOp; };
template <> struct Describe<OpKind::write> { using type = WriteOp; };
template <> struct Describe<OpKind::close> { using type = CloseOp; };
template <> struct Describe<OpKind::poll> { using type = PollOp; };

}  // namespace lev::detail
