#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// What a loop has done (`loop.stats()`) and what it is doing
/// (`loop.set_trace_hook`), for a user to print, export or log.
///
///     std::puts(loop.stats().to_string().c_str());
///     loop.set_trace_hook([](const lev::TraceRecord& r) {
///       std::printf("%s %s fd %d -> %d\n", lev::to_string(r.event), r.op, r.fd, r.result);
///     });
///
/// The counters are kept always (a few additions per operation); the trace
/// hook costs one test of an empty pointer per event when it is not set.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lev {

/// One kind of operation's counts (LoopStats::ops). Kind "timer": every
/// timer operation started (sleeps, after / at / every, IdleDeadline's
/// timer each time it is armed, and the loop timer that bounds an
/// operation's `{.timeout}` on epoll and the fake: io_uring bounds it with
/// a linked timeout in the kernel, counted nowhere), including one that
/// ended at once because its task was already cancelled; timers_armed
/// counts the ones that went on the loop's deadline heap.
struct OpCount {
  const char* kind = "";        ///< "recv", "send", "timer", ...
  std::uint64_t submitted = 0;  ///< operations started
  std::uint64_t completed = 0;  ///< results delivered (cancelled ones included)
};

/// A loop's counters since it was made (Loop::stats()). All grow only,
/// except `live_ops`.
struct LoopStats {
  /// Per kind, the kinds used so far only, in the order of lev's op kinds.
  std::vector<OpCount> ops;
  std::uint64_t submitted = 0;  ///< operations started, all kinds
  std::uint64_t completed = 0;  ///< results delivered, all kinds
  /// Calls into the kernel to submit or wait: io_uring_enter (io_uring;
  /// with SQPOLL some return without a system call), epoll_wait (epoll);
  /// 0 on the fake backend.
  std::uint64_t kernel_enters = 0;
  std::uint64_t drains = 0;   ///< rounds that took at least one result from the queue
  std::uint64_t drained = 0;  ///< results those rounds took (steps of continuing ops too)
  std::uint64_t max_per_drain = 0;  ///< the most results one round took
  /// Rounds in which io_uring's completion queue had overflowed into the
  /// kernel's backlog (the CQ is too small for the load: raise cqe_entries).
  std::uint64_t cq_overflows = 0;
  /// Completions the kernel dropped because even its backlog was full
  /// (io_uring's cq.koverflow; should stay 0).
  std::uint64_t cq_dropped = 0;
  /// Timers put on the loop's deadline heap: ops "timer" submitted, less
  /// those that ended before being armed (started in a cancelled task).
  std::uint64_t timers_armed = 0;
  std::size_t live_ops = 0;        ///< operations live now (Loop::live_op_count())

  /// Results per round that delivered any (0 before the first).
  [[nodiscard]] double mean_per_drain() const noexcept {
    return drains ? static_cast<double>(drained) / static_cast<double>(drains) : 0.0;
  }
  /// The counters as text, one "name value" per line (a kind's line:
  /// "ops.KIND submitted completed"): for logs and text exporters.
  [[nodiscard]] std::string to_string() const;
};

/// What a trace record reports.
enum class TraceEvent : std::uint8_t {
  op_submitted,  ///< an operation was started
  op_completed,  ///< its result is being delivered (from the completion queue; a send that epoll took at once: right after op_submitted)
  task_resumed,  ///< a coroutine is being resumed by that result
};

/// "op_submitted", "op_completed", "task_resumed".
[[nodiscard]] const char* to_string(TraceEvent event) noexcept;

/// One event, passed to the trace hook. Valid during the call only.
struct TraceRecord {
  TraceEvent event{};      ///< what happened
  const char* op = "";      ///< the operation's kind ("recv", "timer", ...)
  int fd = -1;              ///< its fd, or -1
  int result = 0;           ///< op_completed / task_resumed: bytes or -errno; else 0
  const void* id = nullptr; ///< the operation's address: pairs submitted with completed
};

/// Called on the loop thread, inline, for every event. It must not start
/// or cancel operations of the loop (record, count, log, then return).
using TraceHook = std::function<void(const TraceRecord&)>;

/// \cond detail
namespace detail {
/// The loop's raw counters (LoopStats is made from them on request).
struct LoopCounters {
  static constexpr std::size_t kKinds = 64;  // OpKind values are below this
  std::array<std::uint64_t, kKinds> submitted{};
  std::array<std::uint64_t, kKinds> completed{};
  std::uint64_t drains = 0;
  std::uint64_t drained = 0;
  std::uint64_t max_per_drain = 0;
  std::uint64_t timers_armed = 0;
};
}  // namespace detail
/// \endcond

}  // namespace lev
