#pragma once
/// \file
/// The in-flight operation record every engine and backend works on.
/// Not for users; documented because custom backends read it.
///
/// Lifecycle (docs/cancellation.md):
///   idle --Loop::start--> submitted --backend reports--> completed
///        --Loop::settle: deliver--> delivered
///        --Loop::settle: continue (resubmit, re-arm)--> submitted again
/// A cancel request is recorded on the op (`cancel`, sticky until the op is
/// started afresh) while it is submitted, or while an intermediate result
/// of it is queued; it never adds a second completion. A backend reports
/// each submitted op exactly once, through CompletionQueue::push, with the
/// kernel's result (>= 0) or -errno.

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

#include "lev/clock.hpp"

namespace lev::detail {

enum class OpKind : std::uint8_t {
  nop,
  read,
  write,
  recv,
  send,
  accept,
  connect,
  shutdown,
  close,
  poll,  // readiness: fd + poll mask
  // files and directories (detail/ops/file.hpp)
  openat,
  fsync,
  fallocate,
  ftruncate,
  statx,
  unlinkat,
  renameat,
  mkdirat,
  // vectored and splice (detail/ops/vectored.hpp)
  readv,
  writev,
  splice,
  // messages (detail/ops/datagram.hpp)
  sendmsg,
  recvmsg,
  // (new kinds go here: each is described in its family's header under
  // include/lev/detail/ops/ and listed in detail/ops/all.hpp)
  // kinds from here on never reach a backend
  timer,  // handled by the loop's deadline heap
  post,   // already complete when started: a queued resumption
};

/// Human name of an operation kind, as used in error messages.
const char* op_name(OpKind kind) noexcept;

enum class OpState : std::uint8_t { idle, submitted, completed, delivered };

/// Why an op was asked to stop early: the first request is the one
/// recorded (a deadline after a stop stays a stop, and the reverse).
enum class Cancel : std::uint8_t {
  none,
  requested,  // Operation::cancel, a stop token, teardown: errc::operation_canceled
  deadline,   // its time limit passed: errc::timed_out
};

/// `flow` bits: how an op may continue after a result of it was queued
/// (Loop::settle decides, in one place, whether it continues or is
/// delivered; a recorded cancel ends every continuation).
enum : std::uint8_t {
  kFlowAll = 1,    // send_all / write_all: resubmit the rest
  kFlowRetry = 2,  // the backend asks for one resubmission (a refused zero-copy send)
  kFlowHook = 4,   // `cont` classifies the result and continues the op
  kFlowClose = 8,  // close: never cancelled; one that ended ECANCELED before it
                   // reached the kernel (teardown) closes the fd itself
};

struct OpBase;
using DeliverFn = void (*)(OpBase&);

/// An op whose owner continues it after an intermediate result (recv(fd)
/// on the plain path: readiness, then the recv; a pool run dry: wait for a
/// buffer). Loop::settle asks `intermediate` first; only when the result
/// is intermediate and no cancel is recorded does it call `next`, after
/// unregistering the op (next may start it again). A cancelled
/// intermediate result is delivered as ECANCELED.
struct Continuation {
  bool (*intermediate)(const OpBase& op) noexcept;
  void (*next)(OpBase& op) noexcept;
};
/// A multishot op's intermediate result (a CQE flagged F_MORE): recorded by
/// its owner, never delivered from inside the backend.
using MoreFn = void (*)(OpBase&, int res, std::uint32_t cqe_flags) noexcept;

class BufferPool;

/// `select` of a recv op with no buffer of its own: the backend picks one
/// of `pool`'s buffers when data arrives and reports it in cqe_flags
/// (IORING_CQE_F_BUFFER | id << IORING_CQE_BUFFER_SHIFT).
enum : std::uint8_t { kSelectNone = 0, kSelectOnce = 1, kSelectMultishot = 2 };

// Fields without an initializer are written before they are read: `next`
// by the queue, deliver/ctx when the op is started, res/cqe_flags by push,
// the I/O fields by the op's description (setup), the timer fields by
// after/at, the links by the backend that uses them. Keeping them
// uninitialised keeps an awaiter cheap to build (it is built per op).
//
// What only one family needs (an address, a path, a statx buffer, an
// iovec count) is not here: it lives in the family's own `Args` record
// (in the awaiter, or in the callback record) and `args` points at it.
struct OpBase {
  // --- owned by the loop ---
  OpBase* next;       // completion-queue link
  DeliverFn deliver;  // calls the callback; null: resume the coroutine at ctx
  void* ctx;          // coroutine address or callback record
  // --- result, written by the backend through CompletionQueue::push ---
  std::int32_t res;
  std::uint32_t cqe_flags;
  // --- description ---
  OpKind kind = OpKind::nop;
  OpState state = OpState::idle;
  Cancel cancel = Cancel::none;  // recorded request (see Cancel)
  std::uint8_t flow = 0;         // kFlow* bits: how the op may continue
  bool linked_timeout = false;  // io_uring: followed by a LINK_TIMEOUT of lt_sec/lt_nsec
  std::uint8_t zc = 0;          // io_uring send: 1 = sent zero-copy, 2 = the socket refused it
  std::uint8_t select = kSelectNone;  // recv: a buffer from `pool` (see kSelectOnce)
  int fd = -1;
  int flags = 0;         // recv/send flags, shutdown how, poll mask
  std::size_t done = 0;  // bytes moved so far by an `all` op
  void* buf;
  std::uint32_t len;
  std::uint64_t offset;
  std::size_t total;  // bytes an `all` op must move
  union {
    void* args;        // the family's Args record (see the op's description)
    BufferPool* pool;  // a recv with `select`
  };
  std::int64_t lt_sec;  // the linked timeout (a __kernel_timespec)
  std::int64_t lt_nsec;
  // --- timers ---
  TimePoint deadline;
  std::size_t heap_index;
  std::uint64_t seq;      // ties between equal deadlines fire in arming order
  MoreFn more = nullptr;  // multishot ops only
  const Continuation* cont;  // read only with kFlowHook
  // --- backend scratch (fake bookkeeping, fallback registries) ---
  std::uintptr_t backend_data = 0;
  OpBase* link_prev;
  OpBase* link_next;
};

/// Whether the queued result of `op` is a step of it rather than its end
/// (a partial send of send_all, a readiness step of recv(fd), a refused
/// zero-copy send): the classification Loop::cancel and Loop::settle share.
bool is_intermediate(const OpBase& op) noexcept;

}  // namespace lev::detail
