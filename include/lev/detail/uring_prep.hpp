#pragma once
/// \file
/// The inline fast path the Loop uses to fill an io_uring SQE without a
/// call into the backend. Inline on purpose: an awaiter knows its kind at
/// compile time (prep_kind, from the op's description).

#include <liburing.h>

#include <cstddef>

#include "lev/detail/describe.hpp"
#include "lev/detail/ops/all.hpp"

namespace lev::detail {

/// prep_kind (detail/describe.hpp) for a kind known only at run time.
inline void prep_sqe(io_uring_sqe* sqe, OpBase& op, std::size_t zc_threshold) noexcept {
  if (op.kind < OpKind::timer) [[likely]] {
    kind_entry(op.kind).prep(sqe, op, zc_threshold);
    return;
  }
  io_uring_prep_nop(sqe);  // timers and posts never reach a backend: keep the SQE harmless
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

  /// Fills an SQE for `op`, of kind `K`; false when the SQ is full, and
  /// for a splice (take the backend's path: io_uring keeps a list of the
  /// splices in flight, which a close of their input cancels, finding F3).
  /// Not for ops with a linked timeout.
  template <OpKind K>
  bool submit(OpBase& op) const noexcept {
    if constexpr (K == OpKind::splice) {
      return false;
    } else {
      io_uring_sqe* sqe;
      if (!take_sqe(sqe)) [[unlikely]]
        return false;
      prep_kind<K>(sqe, op, zc_threshold);
      io_uring_sqe_set_data(sqe, &op);
      ++*in_flight;
      return true;
    }
  }
  /// The same for a kind known at run time; false also when the op needs a
  /// linked timeout (the backend pairs the two SQEs).
  bool submit(OpBase& op) const noexcept {
    io_uring_sqe* sqe;
    if (op.linked_timeout || op.kind == OpKind::splice || !take_sqe(sqe)) [[unlikely]]
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
