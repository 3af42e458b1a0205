#pragma once
/// \file
/// Datagram sockets: UDP over IPv4 and IPv6, and unix datagram sockets.
///
///     auto s = lev::net::DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
///     auto d = co_await s->recv_from(buf);        // lev::Datagram: size, peer, truncated
///     co_await s->send_to(std::span{buf}.first(d->size), d->peer);
///
/// A datagram longer than the buffer is cut (Datagram::truncated, MSG_TRUNC);
/// datagrams that arrive while nobody receives wait in the socket's receive
/// buffer (SO_RCVBUF) and are dropped by the kernel when it is full, as UDP
/// may: size the buffer (receive_buffer()) for bursts.

#include <sys/socket.h>
#include <sys/uio.h>

#include <optional>
#include <span>

#include "lev/address.hpp"
#include "lev/buffer.hpp"
#include "lev/detail/ops/datagram.hpp"
#include "lev/error.hpp"
#include "lev/fd.hpp"
#include "lev/loop.hpp"

namespace lev::net {

/// A datagram socket owned by this object (nonblocking, close-on-exec).
/// Operations run on the Loop it was made with; one loop thread.
class DatagramSocket {
 public:
  /// An empty socket: assign one from bind() or open().
  DatagramSocket() = default;
  /// Adopts the datagram socket `fd` (owned from now on; it must be nonblocking).
  DatagramSocket(Loop& loop, Fd fd) noexcept : loop_(&loop), fd_(std::move(fd)) {}

  /// A socket of `local`'s family bound to it (port 0: the kernel picks;
  /// a unix path: bound there). Errors name "bind" or "socket".
  static Result<DatagramSocket> bind(Loop& loop, const SocketAddress& local);
  /// An unbound socket of `family` (AF_INET, AF_INET6, AF_UNIX).
  static Result<DatagramSocket> open(Loop& loop, int family);
  /// Sets the default peer (and filters what arrives to it). A datagram
  /// connect never waits, so this is immediate.
  Result<void> connect(const SocketAddress& peer);
  /// The address bound (the port the kernel picked).
  [[nodiscard]] SocketAddress local_address() const;
  /// Sets SO_RCVBUF (the kernel doubles it); false when refused.
  bool receive_buffer(int bytes) noexcept;

  /// The fd (borrowed; -1 when empty).
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  /// True while the socket owns an fd.
  [[nodiscard]] bool is_open() const noexcept { return static_cast<bool>(fd_); }

  /// One datagram to `to`; bytes sent (all of it, or an error).
  Loop::Awaiter<lev::detail::SendmsgOp> send_to(ConstBuffer buf, const SocketAddress& to,
                                           int flags = 0) {
    const iovec v{const_cast<void*>(buf.data), buf.size};
    return loop_->make<lev::detail::SendmsgOp>(fd_, std::span<const iovec>(&v, 1), &to, flags);
  }
  /// send_to() with `o.flags`, bounded by `o.timeout` (errc::timed_out: a
  /// send waits only while the socket's buffer, or a unix peer's queue, is full).
  Loop::Deadline<lev::detail::SendmsgOp> send_to(ConstBuffer buf, const SocketAddress& to,
                                                 IoOptions o) {
    const iovec v{const_cast<void*>(buf.data), buf.size};
    return loop_->make_until<lev::detail::SendmsgOp>(o.timeout, fd_, std::span<const iovec>(&v, 1),
                                                     &to, o.flags);
  }
  /// One datagram, its sender, and whether it was cut.
  Loop::Awaiter<lev::detail::RecvmsgOp> recv_from(MutableBuffer buf, int flags = 0) {
    const iovec v{buf.data, buf.size};
    return loop_->make<lev::detail::RecvmsgOp>(fd_, std::span<const iovec>(&v, 1), flags);
  }
  /// recv_from() with `o.flags`, bounded by `o.timeout` (errc::timed_out).
  Loop::Deadline<lev::detail::RecvmsgOp> recv_from(MutableBuffer buf, IoOptions o) {
    const iovec v{buf.data, buf.size};
    return loop_->make_until<lev::detail::RecvmsgOp>(o.timeout, fd_, std::span<const iovec>(&v, 1),
                                                o.flags);
  }
  /// Gather: one datagram from several buffers (the iovecs stay valid until
  /// the awaiter resumes); `to` null: the connected peer.
  Loop::Awaiter<lev::detail::SendmsgOp> sendmsg(std::span<const iovec> iov,
                                           const SocketAddress* to = nullptr, int flags = 0) {
    return loop_->make<lev::detail::SendmsgOp>(fd_, iov, to, flags);
  }
  /// sendmsg() with `o.flags`, bounded by `o.timeout`.
  Loop::Deadline<lev::detail::SendmsgOp> sendmsg(std::span<const iovec> iov,
                                                 const SocketAddress* to, IoOptions o) {
    return loop_->make_until<lev::detail::SendmsgOp>(o.timeout, fd_, iov, to, o.flags);
  }
  /// Scatter: one datagram into several buffers.
  Loop::Awaiter<lev::detail::RecvmsgOp> recvmsg(std::span<const iovec> iov, int flags = 0) {
    return loop_->make<lev::detail::RecvmsgOp>(fd_, iov, flags);
  }
  /// recvmsg() with `o.flags`, bounded by `o.timeout`.
  Loop::Deadline<lev::detail::RecvmsgOp> recvmsg(std::span<const iovec> iov, IoOptions o) {
    return loop_->make_until<lev::detail::RecvmsgOp>(o.timeout, fd_, iov, o.flags);
  }
  /// One datagram into a buffer of the loop's datagram pool, taken only
  /// when it has arrived: the payload (a lev::Buffer, back to the pool when
  /// dropped), its sender, and whether it was cut to
  /// LoopOptions::datagram_buffer_size. For servers: on io_uring the first
  /// receive arms one multishot recvmsg that stays armed while the socket
  /// is open, so datagrams that come between two receives are taken and
  /// kept in order (up to 16 per socket, fewer when the pool runs low;
  /// then the multishot pauses and the kernel's receive buffer holds the
  /// rest). A datagram for which no pool buffer is free waits in the
  /// socket's receive buffer, and the kernel drops what does not fit there,
  /// as UDP may: size the pool (LoopOptions::datagram_buffer_count) and
  /// receive_buffer() for bursts. Use receive() alone on a socket: once it
  /// has armed the multishot, a recv_from / recvmsg would overtake the
  /// datagrams the multishot already took. `o.timeout` bounds the wait
  /// (errc::timed_out); a datagram that comes later waits for the next one.
  /// `o.flags` must be 0: a pool receive takes no MSG_* flags (the
  /// receive ends with EINVAL, "recvmsg(fd N): Invalid argument", on every
  /// engine); recv_from and recvmsg take them.
  lev::detail::DatagramReceiveAwaiter receive(IoOptions o = {}) {
    return lev::detail::DatagramReceiveAwaiter(*loop_, loop_->datagram_registry(), fd_.get(),
                                               o.flags, o.timeout);
  }
  /// receive({.timeout = timeout}) (the form before IoOptions; an empty
  /// `timeout`: no limit).
  lev::detail::DatagramReceiveAwaiter receive(std::optional<Duration> timeout) {
    return receive(IoOptions{.timeout = timeout});
  }
  /// On a connected socket: one datagram to the peer (bytes sent).
  Loop::Awaiter<lev::detail::SendOp> send(ConstBuffer buf) { return loop_->send(fd_, buf); }
  /// On a connected socket: one datagram from the peer (bytes; cut to the
  /// buffer without telling: use recv_from to learn of truncation).
  Loop::Awaiter<lev::detail::RecvOp> recv(MutableBuffer buf) { return loop_->recv(fd_, buf); }
  /// send() with `o.flags`, bounded by `o.timeout`.
  Loop::Deadline<lev::detail::SendOp> send(ConstBuffer buf, IoOptions o) {
    return loop_->send(fd_, buf, o);
  }
  /// recv() with `o.flags`, bounded by `o.timeout`.
  Loop::Deadline<lev::detail::RecvOp> recv(MutableBuffer buf, IoOptions o) {
    return loop_->recv(fd_, buf, o);
  }

 private:
  Loop* loop_ = nullptr;
  Fd fd_;
};

}  // namespace lev::net
