#pragma once
/// \file
/// Descriptions of scatter/gather and splice: readv, writev (writev_all
/// continues through Loop::settle), splice. On the epoll engine they wait
/// for readiness on sockets and pipes and run on the file workers for
/// regular files. See lev/detail/describe.hpp.

#include <fcntl.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "lev/detail/ops/basic.hpp"

namespace lev {
class Loop;
}

namespace lev::detail {

inline std::size_t iov_bytes(std::span<const iovec> iov) noexcept {
  std::size_t n = 0;
  for (const iovec& v : iov) n += v.iov_len;
  return n;
}

/// Bytes read into the iovecs (`buf` points at them, `len` counts them);
/// offset -1: the file position / a stream.
struct ReadvOp : OpTraits {
  static constexpr OpKind kind = OpKind::readv;
  static constexpr const char* name = "readv";
  using Result = std::size_t;
  static void setup(OpBase& op, std::span<const iovec> iov, std::uint64_t offset) noexcept {
    setup_io(op, const_cast<iovec*>(iov.data()), iov.size(), offset, 0);
    op.total = iov_bytes(iov);
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_readv(sqe, op.fd, static_cast<const iovec*>(op.buf), op.len, op.offset);
  }
  static constexpr Wait wait = Wait::read;
  static constexpr bool may_be_file = true;
  static long attempt(OpBase& op) noexcept {
    const auto* v = static_cast<const iovec*>(op.buf);
    const int n = static_cast<int>(op.len);
    return op.offset == static_cast<std::uint64_t>(-1)
               ? ::readv(op.fd, v, n)
               : ::preadv(op.fd, v, n, static_cast<off_t>(op.offset));
  }
};

/// writev_all's own record: a copy of the iovecs it advances as bytes go.
/// Left unwritten past the iovecs given (it is built per op); copied
/// bytewise, so that a move copies those unwritten slots without reading
/// them as values.
struct WritevArgs {
  static constexpr std::size_t kMax = 16;
  iovec iov[kMax];
  Loop* loop;
  WritevArgs() noexcept {}  // NOLINT: written by WritevOp::setup
  WritevArgs(const WritevArgs& o) noexcept {
    std::memcpy(static_cast<void*>(this), &o, sizeof(*this));
  }
  WritevArgs& operator=(const WritevArgs& o) noexcept {
    std::memcpy(static_cast<void*>(this), &o, sizeof(*this));
    return *this;
  }
};

/// Advances writev_all past `moved` bytes and starts it again (its
/// Continuation: Loop::settle calls it only when no cancel is recorded).
void writev_continue(OpBase& op) noexcept;
bool writev_intermediate(const OpBase& op) noexcept;
inline constexpr Continuation kWritevAll{&writev_intermediate, &writev_continue};

/// Bytes written from the iovecs; with `all` (writev_all, at most
/// WritevArgs::kMax iovecs, else EIO) every byte or an error with
/// `transferred`, continuing through Loop::settle.
struct WritevOp : OpTraits {
  static constexpr OpKind kind = OpKind::writev;
  static constexpr const char* name = "writev";
  using Result = std::size_t;
  using Args = WritevArgs;
  static constexpr bool writes = true;
  static void setup(OpBase& op, WritevArgs& a, std::span<const iovec> iov, std::uint64_t offset,
                    bool all, Loop* loop = nullptr) noexcept {
    setup_io(op, const_cast<iovec*>(iov.data()), iov.size(), offset, 0);
    op.total = iov_bytes(iov);
    if (!all) return;
    a.loop = loop;
    if (iov.size() > WritevArgs::kMax || !loop) {
      op.len = 0;  // writes nothing: Loop::settle ends it with EIO
      op.flow = kFlowAll;
      return;
    }
    std::copy(iov.begin(), iov.end(), a.iov);
    op.buf = a.iov;
    op.flow = kFlowAll | kFlowHook;
    op.cont = &kWritevAll;
  }
  /// writev_all walks its own copy of the iovecs: `buf` follows the copy.
  static void moved(OpBase& op, WritevArgs& a) noexcept {
    if (op.flow & kFlowHook) op.buf = a.iov;
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_writev(sqe, op.fd, static_cast<const iovec*>(op.buf), op.len, op.offset);
  }
  static constexpr Wait wait = Wait::write;
  static constexpr bool may_be_file = true;
  static long attempt(OpBase& op) noexcept {
    const auto* v = static_cast<const iovec*>(op.buf);
    const int n = static_cast<int>(op.len);
    return op.offset == static_cast<std::uint64_t>(-1)
               ? ::writev(op.fd, v, n)
               : ::pwritev(op.fd, v, n, static_cast<off_t>(op.offset));
  }
};

struct SpliceArgs {
  int fd_out;
  std::int64_t off_out;  // -1: none (a pipe or socket)
};

/// Bytes moved from `fd` (the input: waited on for readiness on epoll) to
/// args.fd_out without a copy through user space; one of the two must be
/// a pipe. `offset` is the input's offset (-1: none).
struct SpliceOp : OpTraits {
  static constexpr OpKind kind = OpKind::splice;
  static constexpr const char* name = "splice";
  using Result = std::size_t;
  using Args = SpliceArgs;
  static void setup(OpBase& op, SpliceArgs& a, std::int64_t off_in, int fd_out,
                    std::int64_t off_out, std::size_t len) noexcept {
    setup_io(op, nullptr, len, static_cast<std::uint64_t>(off_in), SPLICE_F_MOVE);
    a.fd_out = fd_out;
    a.off_out = off_out;
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    const auto& a = *static_cast<SpliceArgs*>(op.args);
    io_uring_prep_splice(sqe, op.fd, static_cast<std::int64_t>(op.offset), a.fd_out, a.off_out,
                         op.len, static_cast<unsigned>(op.flags));
  }
  static constexpr Wait wait = Wait::read;
  /// io_uring runs a splice in an io-wq worker, blocking (always: the
  /// kernel forces it async), and a timeout linked to it never fires there
  /// (seen on 6.18); a cancel by user_data does end it. So its time limit
  /// is a loop timer that cancels it (finding F2).
  static constexpr bool links_timeout = false;
  static long attempt(OpBase& op) noexcept {
    auto& a = *static_cast<SpliceArgs*>(op.args);
    loff_t in = static_cast<loff_t>(op.offset);
    loff_t out = a.off_out;
    const long r = ::splice(op.fd, op.offset == static_cast<std::uint64_t>(-1) ? nullptr : &in,
                            a.fd_out, a.off_out < 0 ? nullptr : &out, op.len,
                            static_cast<unsigned>(op.flags) | SPLICE_F_NONBLOCK);
    return r;
  }
};

template <> struct Describe<OpKind::readv> { using type = ReadvOp; };
template <> struct Describe<OpKind::writev> { using type = WritevOp; };
template <> struct Describe<OpKind::splice> { using type = SpliceOp; };

}  // namespace lev::detail
