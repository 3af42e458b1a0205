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
  timer,  // handled by the loop's deadline heap, never by a backend
  post,   // already complete when started: a queued resumption
  poll,   // readiness: fd + poll mask
};

/// Human name of an operation kind, as used in error messages.
const char* op_name(OpKind kind) noexcept;

enum class OpState : std::uint8_t { idle, submitted, completed, delivered };

struct OpBase;
using DeliverFn = void (*)(OpBase&);

struct OpBase {
  // --- owned by the loop ---
  OpBase* next = nullptr;       // completion-queue link
  OpBase* live_prev = nullptr;  // live registry links
  OpBase* live_next = nullptr;
  DeliverFn deliver = nullptr;  // resumes the coroutine / calls the callback
  void* ctx = nullptr;          // coroutine address or callback record
  // --- result, written by the backend through CompletionQueue::push ---
  std::int32_t res = 0;
  std::uint32_t cqe_flags = 0;
  // --- description ---
  OpKind kind = OpKind::nop;
  OpState state = OpState::idle;
  bool cancel_requested = false;
  bool all = false;        // send_all / write_all: resubmit until len is done
  int fd = -1;
  int flags = 0;           // recv/send flags, shutdown how, poll mask
  void* buf = nullptr;
  std::uint32_t len = 0;
  std::uint64_t offset = static_cast<std::uint64_t>(-1);
  std::size_t done = 0;    // bytes moved so far by an `all` op
  std::size_t total = 0;   // bytes an `all` op must move
  sockaddr* addr = nullptr;
  socklen_t addrlen = 0;   // accept: in/out; connect: in
  // --- timers ---
  TimePoint deadline{};
  std::size_t heap_index = 0;
  std::uint64_t seq = 0;   // ties between equal deadlines fire in arming order
  // --- backend scratch (epoll registration, fake bookkeeping) ---
  std::uintptr_t backend_data = 0;
};

}  // namespace lev::detail
