#pragma once
/// \file
/// Descriptions of the message operations datagram sockets use: sendmsg
/// (send_to, connected send, gather) and recvmsg (recv_from, scatter, the
/// peer's address and MSG_TRUNC). See lev/detail/describe.hpp.

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstring>
#include <span>

#include "lev/address.hpp"
#include "lev/detail/ops/basic.hpp"
#include "lev/detail/results.hpp"

namespace lev {

/// One datagram received: how many bytes landed in the buffer, who sent
/// it, and whether it was longer than the buffer (the rest is dropped, as
/// UDP does: MSG_TRUNC).
struct Datagram {
  std::size_t size = 0;
  SocketAddress peer;
  bool truncated = false;
};

}  // namespace lev

namespace lev::detail {

/// The msghdr of one message op, the peer's address and one iovec, all in
/// one record (it re-points into itself when copied).
struct MessageArgs {
  msghdr msg;
  iovec one;
  sockaddr_storage peer;
  MessageArgs() noexcept { std::memset(static_cast<void*>(this), 0, sizeof(*this)); }
  MessageArgs(const MessageArgs& o) noexcept { *this = o; }
  MessageArgs& operator=(const MessageArgs& o) noexcept {
    std::memcpy(static_cast<void*>(this), &o, sizeof(*this));
    if (o.msg.msg_iov == &o.one) msg.msg_iov = &one;
    if (o.msg.msg_name == &o.peer) msg.msg_name = &peer;
    return *this;
  }
  void set(std::span<const iovec> iov, const SocketAddress* to, bool want_peer) noexcept {
    msg = msghdr{};
    if (iov.size() == 1) {
      one = iov[0];
      msg.msg_iov = &one;
    } else {
      msg.msg_iov = const_cast<iovec*>(iov.data());
    }
    msg.msg_iovlen = iov.size();
    if (to) {
      std::memcpy(&peer, to->data(), to->size());
      msg.msg_name = &peer;
      msg.msg_namelen = to->size();
    } else if (want_peer) {
      msg.msg_name = &peer;
      msg.msg_namelen = sizeof(peer);
    }
  }
};

/// Bytes sent in one datagram (to `to`, or to the connected peer).
struct SendmsgOp : OpTraits {
  static constexpr OpKind kind = OpKind::sendmsg;
  static constexpr const char* name = "sendmsg";
  using Result = std::size_t;
  using Args = MessageArgs;
  static void setup(OpBase& op, MessageArgs& a, std::span<const iovec> iov,
                    const SocketAddress* to, int flags) noexcept {
    a.set(iov, to, false);
    op.flags = flags | MSG_NOSIGNAL;
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_sendmsg(sqe, op.fd, &static_cast<MessageArgs*>(op.args)->msg,
                          static_cast<unsigned>(op.flags));
  }
  static constexpr Wait wait = Wait::write;
  static long attempt(OpBase& op) noexcept {
    return ::sendmsg(op.fd, &static_cast<MessageArgs*>(op.args)->msg, op.flags | MSG_DONTWAIT);
  }
};

/// One datagram into the iovecs, with its sender and MSG_TRUNC.
struct RecvmsgOp : OpTraits {
  static constexpr OpKind kind = OpKind::recvmsg;
  static constexpr const char* name = "recvmsg";
  using Result = Datagram;
  using Args = MessageArgs;
  static void setup(OpBase& op, MessageArgs& a, std::span<const iovec> iov, int flags) noexcept {
    a.set(iov, nullptr, true);
    op.flags = flags;
    op.total = iov_total(iov);
  }
  static std::size_t iov_total(std::span<const iovec> iov) noexcept {
    std::size_t n = 0;
    for (const iovec& v : iov) n += v.iov_len;
    return n;
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_recvmsg(sqe, op.fd, &static_cast<MessageArgs*>(op.args)->msg,
                          static_cast<unsigned>(op.flags));
  }
  static constexpr Wait wait = Wait::read;
  static long attempt(OpBase& op) noexcept {
    return ::recvmsg(op.fd, &static_cast<MessageArgs*>(op.args)->msg, op.flags | MSG_DONTWAIT);
  }
};

template <>
struct ResultOf<Datagram> {
  static Result<Datagram> make(OpBase& op) {
    if (op.res < 0) return op_error(op);
    const auto& a = *static_cast<const MessageArgs*>(op.args);
    Datagram d;
    d.size = static_cast<std::size_t>(op.res);
    d.truncated = (a.msg.msg_flags & MSG_TRUNC) != 0 || d.size > op.total;
    if (d.size > op.total) d.size = op.total;  // recvmsg with MSG_TRUNC gives the real length
    if (a.msg.msg_namelen > 0)
      d.peer = SocketAddress{reinterpret_cast<const sockaddr*>(&a.peer), a.msg.msg_namelen};
    return d;
  }
};

template <> struct Describe<OpKind::sendmsg> { using type = SendmsgOp; };
template <> struct Describe<OpKind::recvmsg> { using type = RecvmsgOp; };

}  // namespace lev::detail
