#pragma once
// How each operation kind becomes an io_uring SQE. Inline: it runs once per
// submitted operation.
#include <liburing.h>

#include "lev/detail/op.hpp"

namespace lev {

inline void prep_sqe(io_uring_sqe* sqe, detail::OpBase& op) noexcept {
  using detail::OpKind;
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
      break;
    case OpKind::send:
      io_uring_prep_send(sqe, op.fd, op.buf, op.len, op.flags);
      break;
    case OpKind::accept:
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

}  // namespace lev
