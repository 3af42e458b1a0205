#pragma once
/// \file
/// The in-flight operation record every engine and backend works on.
/// Not for users; documented because custom backends read it.
///
/// Lifecycle (docs/cancellation.md):
///   idle --Loop::start--> submitted --backend reports--> completed
///        --Loop drains the queue--> delivered
/// `cancel_requested` may be set while submitted; it never adds a second
/// completion. A backend reports each submitted op exactly once, through
/// CompletionQueue::push, with the kernel's result (>= 0) or -errno.

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
  // kinds from here on never reach a backend
  timer,  // handled by the loop's deadline heap
  post,   // already complete when started: a queued resumption
};

/// Human name of an operation kind, as used in error messages.
const char* op_name(OpKind kind) noexcept;

enum class OpState : std::uint8_t { idle, submitted, completed, delivered };

struct OpBase;
using DeliverFn = void (*)(OpBase&);
/// A multishot op's intermediate result (a CQE flagged F_MORE): recorded by
/// its owner, never delivered from inside the backend.
using MoreFn = void (*)(OpBase&, int res, std::uint32_t cqe_flags) noexcept;

class BufferPool;

/// `flags` bit of an accept op: multishot (one SQE, one CQE per connection).
inline constexpr int kAcceptMultishot = 1;

/// `select` of a recv op with no buffer of its own: the backend picks one
/// of `pool`'s buffers when data arrives and reports it in cqe_flags
/// (IORING_CQE_F_BUFFER | id << IORING_CQE_BUFFER_SHIFT).
enum : std::uint8_t { kSelectNone = 0, kSelectOnce = 1, kSelectMultishot = 2 };

// Fields without an initializer are written before they are read: `next`
// by the queue, deliver/ctx when the op is started, res/cqe_flags by push,
// the I/O fields by setup_io, addr by accept/connect, the timer fields by
// after/at, the links by the backend that uses them. Keeping them
// uninitialised keeps an awaiter cheap to build (it is built per op).
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
  bool cancel_requested = false;
  bool all = false;             // send_all / write_all: resubmit until len is done
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
    sockaddr* addr;    // accept, connect
    BufferPool* pool;  // a recv with `select`
  };
  socklen_t addrlen;    // accept: in/out; connect: in
  std::int64_t lt_sec;  // the linked timeout (a __kernel_timespec)
  std::int64_t lt_nsec;
  // --- timers ---
  TimePoint deadline;
  std::size_t heap_index;
  std::uint64_t seq;      // ties between equal deadlines fire in arming order
  MoreFn more = nullptr;  // multishot ops only
  // --- backend scratch (fake bookkeeping, fallback registries) ---
  std::uintptr_t backend_data = 0;
  OpBase* link_prev;
  OpBase* link_next;
};

}  // namespace lev::detail
