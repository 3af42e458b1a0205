#pragma once
/// \file
/// How each operation kind becomes an io_uring SQE, and the inline fast
/// path the Loop uses to fill one without a call into the backend. Inline
/// on purpose: when the awaiter's kind is a constant the switch folds away.

#include <liburing.h>

#include <cstddef>

#include "lev/detail/op.hpp"

namespace lev::detail {

/// `zc_threshold`: sends of at least this many bytes go zero-copy
/// (IORING_OP_SEND_ZC); the op then completes when the kernel's
/// notification says the buffer is free again.
inline void prep_sqe(io_uring_sqe* sqe, OpBase& op, std::size_t zc_threshold) noexcept {
  switch (op.kind) {
    case OpKind::nop:
    case OpKind::post:
    case OpKind::timer:  // timers never reach a backend; keep the SQE harmless
      io_uring_prep_nop(sqe);
      break;
    case OpKind::read:
      io_uring_prep_read(sqe, op.fd, op.buf, op.len, op.offset);
      break;
    case OpKind::write:
      io_uring_prep_write(sqe, op.fd, op.buf, op.len, op.offset);
      break;
    case OpKind::recv:
      io_uring_prep_recv(sqe, op.fd, op.buf, op.len, op.flags);
      if (op.select) [[unlikely]] {  // the kernel picks a buffer of ring 0 when data comes
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = 0;
        if (op.select == kSelectMultishot) sqe->ioprio |= IORING_RECV_MULTISHOT;
      }
      break;
    case OpKind::send:
      if (op.len >= zc_threshold && op.zc != 2) [[unlikely]] {
        io_uring_prep_send_zc(sqe, op.fd, op.buf, op.len, op.flags, 0);
        op.zc = 1;
      } else {
        io_uring_prep_send(sqe, op.fd, op.buf, op.len, op.flags);
      }
      break;
    case OpKind::accept:
      if (op.flags & kAcceptMultishot) [[unlikely]] {
        io_uring_prep_multishot_accept(sqe, op.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        break;
      }
      op.addrlen = sizeof(sockaddr_storage);
      io_uring_prep_accept(sqe, op.fd, op.addr, &op.addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
      break;
    case OpKind::connect:
      io_uring_prep_connect(sqe, op.fd, op.addr, op.addrlen);
      break;
    case OpKind::shutdown:
      io_uring_prep_shutdown(sqe, op.fd, op.flags);
      break;
    case OpKind::close:
      io_uring_prep_close(sqe, op.fd);
      break;
    case OpKind::poll:
      io_uring_prep_poll_add(sqe, op.fd, static_cast<unsigned>(op.flags));
      break;
  }
}

/// Set by the io_uring backend when an SQE may be filled straight from the
/// Loop (no batching threshold, no fallback registry); null otherwise.
struct UringFastPath {
  io_uring* ring = nullptr;
  std::size_t* in_flight = nullptr;
  std::size_t zc_threshold = static_cast<std::size_t>(-1);

  /// Fills an SQE for `op`; false when the SQ is full or the op needs a
  /// linked timeout (take the backend's path).
  bool submit(OpBase& op) const noexcept {
    if (op.linked_timeout) [[unlikely]]
      return false;
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    if (!sqe) [[unlikely]]
      return false;
    prep_sqe(sqe, op, zc_threshold);
    io_uring_sqe_set_data(sqe, &op);
    ++*in_flight;
    return true;
  }
};

}  // namespace lev::detail
