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
#include "lev/op_types.hpp"

namespace lev::detail {

/// How a datagram sits in a pool buffer (DatagramSocket::receive): as
/// io_uring's multishot recvmsg lays it out (io_uring_recvmsg_out, then
/// room for the sender's address, no control data, then the payload). The
/// epoll engine and the fake write the same layout, so one parser serves
/// every engine.
struct DatagramLayout {
  static constexpr std::size_t name_room = sizeof(sockaddr_storage);
  static constexpr std::size_t header = sizeof(io_uring_recvmsg_out) + name_room;

  /// The msghdr a multishot recvmsg is armed with: only its name and
  /// control lengths matter (the kernel lays the buffer out by them).
  static void arm(msghdr& m) noexcept {
    m = msghdr{};
    m.msg_namelen = name_room;
  }
  /// One nonblocking recvmsg into `buf` (`cap` bytes) in this layout: the
  /// bytes of the buffer used (header included), or -1 with errno.
  static long receive(int fd, char* buf, std::size_t cap, int flags) noexcept {
    if (cap <= header) {
      errno = EMSGSIZE;
      return -1;
    }
    iovec v{buf + header, cap - header};
    msghdr m{};
    m.msg_name = buf + sizeof(io_uring_recvmsg_out);
    m.msg_namelen = name_room;
    m.msg_iov = &v;
    m.msg_iovlen = 1;
    const long r = ::recvmsg(fd, &m, flags | MSG_DONTWAIT);
    if (r < 0) return r;
    io_uring_recvmsg_out out{};
    out.namelen = m.msg_namelen;
    out.payloadlen = static_cast<__u32>(r);
    out.flags = static_cast<__u32>(m.msg_flags);
    std::memcpy(buf, &out, sizeof(out));
    return static_cast<long>(header) + r;
  }
  /// Writes `payload` from `peer` into `buf` in this layout (the fake's
  /// side); the bytes used, the payload cut to fit (MSG_TRUNC).
  static std::size_t write(char* buf, std::size_t cap, std::span<const char> payload,
                           const SocketAddress* peer) noexcept {
    io_uring_recvmsg_out out{};
    const std::size_t room = cap > header ? cap - header : 0;
    const std::size_t n = payload.size() < room ? payload.size() : room;
    if (peer) {
      out.namelen = static_cast<__u32>(peer->size());
      std::memcpy(buf + sizeof(out), peer->data(), peer->size());
    }
    out.payloadlen = static_cast<__u32>(n);
    out.flags = n < payload.size() ? MSG_TRUNC : 0;
    std::memcpy(buf, &out, sizeof(out));
    if (n) std::memcpy(buf + header, payload.data(), n);
    return header + n;
  }
  /// The header of a buffer holding `used` bytes in this layout; false
  /// when it is too short to be one (then nothing else is read).
  static bool parse(const char* buf, std::size_t used, io_uring_recvmsg_out& out,
                    SocketAddress& peer) noexcept {
    if (used < header) return false;
    std::memcpy(&out, buf, sizeof(out));
    const std::size_t namelen = out.namelen < name_room ? out.namelen : name_room;
    if (namelen > 0)
      peer = SocketAddress{reinterpret_cast<const sockaddr*>(buf + sizeof(out)),
                           static_cast<socklen_t>(namelen)};
    return true;
  }
};

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
  // With `select` (DatagramSocket::receive) the op has no Args: `buf`
  // points at the DatagramLayout msghdr and `pool` names the buffer group.
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    if (op.select) [[unlikely]] {
      auto* m = static_cast<msghdr*>(op.buf);
      if (op.select == kSelectMultishot)
        io_uring_prep_recvmsg_multishot(sqe, op.fd, m, static_cast<unsigned>(op.flags));
      else
        io_uring_prep_recvmsg(sqe, op.fd, m, static_cast<unsigned>(op.flags));
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = op.pool->group();
      return;
    }
    io_uring_prep_recvmsg(sqe, op.fd, &static_cast<MessageArgs*>(op.args)->msg,
                          static_cast<unsigned>(op.flags));
  }
  static constexpr Wait wait = Wait::read;
  static long attempt(OpBase& op) noexcept {
    if (!op.select)
      return ::recvmsg(op.fd, &static_cast<MessageArgs*>(op.args)->msg, op.flags | MSG_DONTWAIT);
    // A buffer of the loop's datagram pool, taken only now that one may be there.
    return attempt_into_pool(op, [&op](char* buf, std::size_t cap) {
      return DatagramLayout::receive(op.fd, buf, cap, op.flags);
    });
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
