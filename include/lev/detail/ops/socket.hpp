#pragma once
/// \file
/// Descriptions of the stream-socket operations: recv, send, accept,
/// connect, shutdown. See lev/detail/describe.hpp.

#include <sys/socket.h>

#include <cerrno>
#include <cstddef>

#include "lev/address.hpp"
#include "lev/detail/buffer_pool.hpp"
#include "lev/detail/ops/basic.hpp"
#include "lev/detail/results.hpp"
#include "lev/op_types.hpp"

namespace lev::detail {

/// send never raises SIGPIPE: the error comes back as EPIPE.
inline constexpr int kSendFlags = MSG_NOSIGNAL;

/// `flags` bit of an accept op: multishot (one SQE, one CQE per connection).
inline constexpr int kAcceptMultishot = 1;

/// Bytes received; 0 = EOF. With `select` the engine picks a buffer of
/// `pool` when data arrives (IORING_CQE_F_BUFFER | id << SHIFT).
struct RecvOp : OpTraits {
  static constexpr OpKind kind = OpKind::recv;
  static constexpr const char* name = "recv";
  using Result = std::size_t;
  static void setup(OpBase& op, void* buf, std::size_t len, int flags) noexcept {
    setup_io(op, buf, len, 0, flags);
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_recv(sqe, op.fd, op.buf, op.len, op.flags);
    if (op.select) [[unlikely]] {  // the kernel picks a buffer of the pool's ring when data comes
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = op.pool->group();
      if (op.select == kSelectMultishot) sqe->ioprio |= IORING_RECV_MULTISHOT;
    }
  }
  static constexpr Wait wait = Wait::read;
  static long attempt(OpBase& op) noexcept {
    if (!op.select) return ::recv(op.fd, op.buf, op.len, op.flags | MSG_DONTWAIT);
    // A buffer of the loop's pool, taken only now that data may be there.
    return attempt_into_pool(op, [&op](char* buf, std::size_t cap) {
      return ::recv(op.fd, buf, cap, op.flags | MSG_DONTWAIT);
    });
  }
};

/// Bytes sent (never SIGPIPE); `all`: every byte or an error. Sends of at
/// least zc_threshold bytes go zero-copy (IORING_OP_SEND_ZC); the op then
/// completes when the kernel's notification says the buffer is free.
struct SendOp : OpTraits {
  static constexpr OpKind kind = OpKind::send;
  static constexpr const char* name = "send";
  using Result = std::size_t;
  static void setup(OpBase& op, const void* buf, std::size_t len, int flags, bool all) noexcept {
    setup_io(op, const_cast<void*>(buf), len, 0, flags | kSendFlags, all);
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t zc_threshold) noexcept {
    if (op.len >= zc_threshold && op.zc != 2) [[unlikely]] {
      io_uring_prep_send_zc(sqe, op.fd, op.buf, op.len, op.flags, 0);
      op.zc = 1;
    } else {
      io_uring_prep_send(sqe, op.fd, op.buf, op.len, op.flags);
    }
  }
  static constexpr Wait wait = Wait::write;
  static long attempt(OpBase& op) noexcept {
    return ::send(op.fd, op.buf, op.len, op.flags | MSG_DONTWAIT | MSG_NOSIGNAL);
  }
};

/// accept's own record: the peer's address, filled by the kernel.
struct AcceptArgs {
  sockaddr_storage peer;
  socklen_t len;
};

/// A new connection (nonblocking, close-on-exec) and its peer. `args` null
/// with kAcceptMultishot: one SQE, a CQE per connection (no addresses).
struct AcceptOp : OpTraits {
  static constexpr OpKind kind = OpKind::accept;
  static constexpr const char* name = "accept";
  using Result = Accepted;
  using Args = AcceptArgs;
  static constexpr bool yields_fd = true;
  static void setup(OpBase&, AcceptArgs& a) noexcept { a.len = sizeof(a.peer); }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    if (op.flags & kAcceptMultishot) [[unlikely]] {
      io_uring_prep_multishot_accept(sqe, op.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } else {
      auto& a = *static_cast<AcceptArgs*>(op.args);
      a.len = sizeof(a.peer);
      io_uring_prep_accept(sqe, op.fd, reinterpret_cast<sockaddr*>(&a.peer), &a.len,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
    }
  }
  static constexpr Wait wait = Wait::read;
  static long attempt(OpBase& op) noexcept {
    if (!op.args) return ::accept4(op.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    auto& a = *static_cast<AcceptArgs*>(op.args);
    a.len = sizeof(a.peer);
    return ::accept4(op.fd, reinterpret_cast<sockaddr*>(&a.peer), &a.len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
  }
};

template <>
struct ResultOf<Accepted> {
  static Result<Accepted> make(OpBase& op) {
    if (op.res < 0) return op_error(op);
    // Ownership moves into the result here; the op no longer holds it.
    const auto& a = *static_cast<const AcceptArgs*>(op.args);
    Accepted out{Fd{op.res}, SocketAddress{reinterpret_cast<const sockaddr*>(&a.peer), a.len}};
    op.res = 0;
    op.kind = OpKind::nop;
    return out;
  }
};

/// connect's own record: its copy of the address.
struct ConnectArgs {
  SocketAddress to;
};

/// Success once connected. On epoll: connect, then (EINPROGRESS) wait
/// until writable and read SO_ERROR; `flags` records that it is underway.
struct ConnectOp : OpTraits {
  static constexpr OpKind kind = OpKind::connect;
  static constexpr const char* name = "connect";
  using Result = void;
  using Args = ConnectArgs;
  static void setup(OpBase& op, ConnectArgs& a, const SocketAddress& to) noexcept {
    a.to = to;
    op.flags = 0;
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    const auto& a = *static_cast<ConnectArgs*>(op.args);
    io_uring_prep_connect(sqe, op.fd, a.to.data(), a.to.size());
  }
  static constexpr Wait wait = Wait::write;
  static long attempt(OpBase& op) noexcept {
    if (op.flags) {  // underway: the result is the socket's error
      int err = 0;
      socklen_t len = sizeof(err);
      if (::getsockopt(op.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err == 0) return 0;
      errno = err == EINPROGRESS || err == EALREADY ? EAGAIN : err;
      return -1;
    }
    const auto& a = *static_cast<ConnectArgs*>(op.args);
    const int r = ::connect(op.fd, a.to.data(), a.to.size());
    if (r < 0 && errno == EINPROGRESS) {
      op.flags = 1;
      errno = EAGAIN;  // wait until writable
    }
    return r;
  }
};

/// Success; `flags` holds SHUT_RD / SHUT_WR / SHUT_RDWR.
struct ShutdownOp : OpTraits {
  static constexpr OpKind kind = OpKind::shutdown;
  static constexpr const char* name = "shutdown";
  using Result = void;
  static void setup(OpBase& op, int how) noexcept { op.flags = how; }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_shutdown(sqe, op.fd, op.flags);
  }
  static constexpr Wait wait = Wait::none;
  static long attempt(OpBase& op) noexcept { return ::shutdown(op.fd, op.flags); }
};

template <> struct Describe<OpKind::recv> { using type = RecvOp; };
template <> struct Describe<OpKind::send> { using type = SendOp; };
template <> struct Describe<OpKind::accept> { using type = AcceptOp; };
template <> struct Describe<OpKind::connect> { using type = ConnectOp; };
template <> struct Describe<OpKind::shutdown> { using type = ShutdownOp; };

}  // namespace lev::detail
