#pragma once
/// \file
/// How each operation kind becomes an io_uring SQE, and the inline fast
/// path the Loop uses to fill one without a call into the backend. Inline
/// on purpose: an awaiter knows its kind at compile time (prep_kind).

#include <liburing.h>

#include <cstddef>

#include "lev/detail/op.hpp"

namespace lev::detail {

/// Fills `sqe` for an op of kind `K`. `zc_threshold`: sends of at least
/// this many bytes go zero-copy (IORING_OP_SEND_ZC); the op then completes
/// when the kernel's notification says the buffer is free again.
template <OpKind K>
inline void prep_kind(io_uring_sqe* sqe, OpBase& op, std::size_t zc_threshold) noexcept {
  if constexpr (K == OpKind::read) {
    io_uring_prep_read(sqe, op.fd, op.buf, op.len, op.offset);
  } else if constexpr (K == OpKind::write) {
    io_uring_prep_write(sqe, op.fd, op.buf, op.len, op.offset);
  } else if constexpr (K == OpKind::recv) {
    io_uring_prep_recv(sqe, op.fd, op.buf, op.len, op.flags);
    if (op.select) [[unlikely]] {  // the kernel picks a buffer of ring 0 when data comes
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = 0;
      if (op.select == kSelectMultishot) sqe->ioprio |= IORING_RECV_MULTISHOT;
    }
  } else if constexpr (K == OpKind::send) {
    if (op.len >= zc_threshold && op.zc != 2) [[unlikely]] {
      io_uring_prep_send_zc(sqe, op.fd, op.buf, op.len, op.flags, 0);
      op.zc = 1;
    } else {
      io_uring_prep_send(sqe, op.fd, op.buf, op.len, op.flags);
    }
  } else if constexpr (K == OpKind::accept) {
    if (op.flags & kAcceptMultishot) [[unlikely]] {
      io_uring_prep_multishot_accept(sqe, op.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } else {
      op.addrlen = sizeof(sockaddr_storage);
      io_uring_prep_accept(sqe, op.fd, op.addr, &op.addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    }
  } else if constexpr (K == OpKind::connect) {
    io_uring_prep_connect(sqe, op.fd, op.addr, op.addrlen);
  } else if constexpr (K == OpKind::shutdown) {
    io_uring_prep_shutdown(sqe, op.fd, op.flags);
  } else if constexpr (K == OpKind::close) {
    io_uring_prep_close(sqe, op.fd);
  } else if constexpr (K == OpKind::poll) {
    io_uring_prep_poll_add(sqe, op.fd, static_cast<unsigned>(op.flags));
  } else {  // nop; timers and posts never reach a backend: keep the SQE harmless
    io_uring_prep_nop(sqe);
  }
}

/// prep_kind for a kind known only at run time.
inline void prep_sqe(io_uring_sqe* sqe, OpBase& op, std::size_t zc_threshold) noexcept {
  switch (op.kind) {
    case OpKind::read: return prep_kind<OpKind::read>(sqe, op, zc_threshold);
    case OpKind::write: return prep_kind<OpKind::write>(sqe, op, zc_threshold);
    case OpKind::recv: return prep_kind<OpKind::recv>(sqe, op, zc_threshold);
    case OpKind::send: return prep_kind<OpKind::send>(sqe, op, zc_threshold);
    case OpKind::accept: return prep_kind<OpKind::accept>(sqe, op, zc_threshold);
    case OpKind::connect: return prep_kind<OpKind::connect>(sqe, op, zc_threshold);
    case OpKind::shutdown: return prep_kind<OpKind::shutdown>(sqe, op, zc_threshold);
    case OpKind::close: return prep_kind<OpKind::close>(sqe, op, zc_threshold);
    case OpKind::poll: return prep_kind<OpKind::poll>(sqe, op, zc_threshold);
    case OpKind::nop:
    case OpKind::timer:
    case OpKind::post: return prep_kind<OpKind::nop>(sqe, op, zc_threshold);
  }
}

/// A submission queue with no room: where a Loop's fast path points when
/// its backend is not io_uring (or cannot take SQEs from the Loop), so
/// that the fast path needs no test of its own.
inline constinit unsigned no_sq_head = 0;
inline constinit io_uring_sq no_sq = [] {
  io_uring_sq sq{};  // ring_entries 0: never room
  sq.khead = &no_sq_head;
  return sq;
}();

/// Set by the io_uring backend when an SQE may be filled straight from the
/// Loop (no batching threshold, no fallback registry); otherwise it points
/// at no_sq, where every submit fails and the op takes the backend's path.
struct UringFastPath {
  io_uring_sq* sq = &no_sq;
  std::size_t* in_flight = nullptr;
  std::size_t zc_threshold = static_cast<std::size_t>(-1);

  /// Fills an SQE for `op`, of kind `K`; false when the SQ is full (take
  /// the backend's path). Not for ops with a linked timeout.
  template <OpKind K>
  bool submit(OpBase& op) const noexcept {
    io_uring_sqe* sqe;
    if (!take_sqe(sqe)) [[unlikely]]
      return false;
    prep_kind<K>(sqe, op, zc_threshold);
    io_uring_sqe_set_data(sqe, &op);
    ++*in_flight;
    return true;
  }
  /// The same for a kind known at run time; false also when the op needs a
  /// linked timeout (the backend pairs the two SQEs).
  bool submit(OpBase& op) const noexcept {
    io_uring_sqe* sqe;
    if (op.linked_timeout || !take_sqe(sqe)) [[unlikely]]
      return false;
    prep_sqe(sqe, op, zc_threshold);
    io_uring_sqe_set_data(sqe, &op);
    ++*in_flight;
    return true;
  }

  /// io_uring_get_sqe for this ring, which the backend sets up without
  /// IORING_SETUP_SQE128 (so no entry-size test): false when the SQ is
  /// full. The kernel's head is read with acquire order (needed with
  /// SQPOLL, a plain load on x86). A flag rather than a null pointer, so
  /// the caller tests the comparison itself.
  bool take_sqe(io_uring_sqe*& out) const noexcept {
    io_uring_sq* q = sq;  // in a register across the acquire load
    const unsigned tail = q->sqe_tail;
    if (tail - io_uring_smp_load_acquire(q->khead) >= q->ring_entries) [[unlikely]]
      return false;
    q->sqe_tail = tail + 1;
    out = &q->sqes[tail & q->ring_mask];
    return true;
  }
};

}  // namespace lev::detail
