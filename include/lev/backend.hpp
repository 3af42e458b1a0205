#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// The completion-backend contract: what the proactor asks of io_uring, of
/// the fake backend, or of a backend a user plugs in.
///
/// A backend never delivers: it records results with CompletionQueue::push
/// and the Loop resumes coroutines / calls callbacks only while it drains
/// that queue (run_once, drain_callbacks). All calls come from the loop's
/// thread.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "lev/clock.hpp"
#include "lev/detail/op.hpp"

namespace lev {

/// The loop's completion queue: an intrusive FIFO of operations whose
/// result is recorded but not yet delivered.
class CompletionQueue {
 public:
  /// Records `res` (>= 0, or -errno) on `op` and queues it for delivery.
  /// Must be called exactly once per submitted operation.
  void push(detail::OpBase& op, int res, unsigned cqe_flags = 0) noexcept {
    op.res = res;
    op.cqe_flags = cqe_flags;
    op.state = detail::OpState::completed;
    op.next = nullptr;
    if (tail_)
      tail_->next = &op;
    else
      head_ = &op;
    tail_ = &op;
  }
  /// Appends a chain first..last (linked through `next`, last->next null)
  /// whose results the caller has already recorded (state completed).
  void append(detail::OpBase* first, detail::OpBase* last) noexcept {
    if (!first) return;
    if (tail_)
      tail_->next = first;
    else
      head_ = first;
    tail_ = last;
  }
  /// Nothing is queued.
  [[nodiscard]] bool empty() const noexcept { return head_ == nullptr; }
  /// The oldest op queued, the next pop() (nullptr when empty).
  [[nodiscard]] detail::OpBase* front() const noexcept { return head_; }
  /// The newest op queued (nullptr when empty).
  [[nodiscard]] detail::OpBase* back() const noexcept { return tail_; }

  /// Removes and returns the oldest op, or nullptr.
  detail::OpBase* pop() noexcept {
    detail::OpBase* h = head_;
    if (!h) return nullptr;
    head_ = h->next;
    if (!head_) tail_ = nullptr;
    return h;
  }
  /// How many ops are queued (O(n); for Loop::census).
  [[nodiscard]] std::size_t size() const noexcept {
    std::size_t n = 0;
    for (const detail::OpBase* op = head_; op; op = op->next) ++n;
    return n;
  }
  /// Removes one op from the queue (O(n); used on teardown only).
  bool remove(detail::OpBase& op) noexcept;

 private:
  detail::OpBase* head_ = nullptr;
  detail::OpBase* tail_ = nullptr;
};

/// The fast paths a loop's backend runs with (Loop::features()); each is
/// probed at start-up and off where the kernel lacks it.
struct BackendFeatures {
  bool single_issuer = false;       ///< IORING_SETUP_SINGLE_ISSUER + DEFER_TASKRUN
  bool coop_taskrun = false;        ///< IORING_SETUP_COOP_TASKRUN (the fallback)
  bool sqpoll = false;              ///< IORING_SETUP_SQPOLL
  bool registered_ring_fd = false;  ///< io_uring_register_ring_fd
  bool cancel_any = false;          ///< IORING_ASYNC_CANCEL_ANY (teardown in one request)
  bool msg_ring = false;            ///< cross-loop wakeups by IORING_OP_MSG_RING
  bool multishot_poll = false;      ///< the wakeup eventfd watched by one multishot poll
  bool multishot_accept = false;    ///< Acceptor: one accept SQE for many connections
  bool linked_timeouts = false;     ///< {.timeout} as IORING_OP_LINK_TIMEOUT
  bool zero_copy_send = false;      ///< sends above zero_copy_threshold use SEND_ZC
  bool provided_buffers = false;    ///< loop.recv(fd): the kernel's provided-buffer ring
  bool multishot_recv = false;      ///< loop.recv(fd): one multishot recv per connection
  /// The backend runs FtruncateOp (io_uring: IORING_OP_FTRUNCATE is in the
  /// ring's probe); otherwise File::truncate takes the offload pool.
  bool ftruncate_op = true;
  /// IORING_ASYNC_CANCEL_FD: closing an fd through lev cancels the ring's
  /// waiting pool receives on it first (CompletionBackend::cancel_fd).
  bool cancel_fd = false;
};

/// What a backend counts (CompletionBackend::stats(), in Loop::stats()).
struct BackendStats {
  std::uint64_t kernel_enters = 0;  ///< io_uring_enter / epoll_wait calls
  std::uint64_t cq_overflows = 0;   ///< rounds that found the CQ overflowed
  std::uint64_t cq_dropped = 0;     ///< completions the kernel dropped
};

/// A completion backend. One instance serves one Loop.
class CompletionBackend {
 public:
  virtual ~CompletionBackend() = default;

  /// Called once by the Loop before any other call.
  virtual void attach(CompletionQueue& queue) = 0;
  /// "uring", "fake", ...
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  /// Hands `op` to the backend. May batch; must not push its completion
  /// from inside this call unless the backend cannot do otherwise (the loop
  /// would still deliver it only from the queue).
  virtual void submit(detail::OpBase& op) = 0;
  /// Asks the backend to stop `op` early. The op still completes exactly
  /// once: with -ECANCELED, or with its real result if that won the race.
  virtual void cancel(detail::OpBase& op) = 0;
  /// Asks the backend to stop every op it holds (the loop is going away).
  /// Each still completes exactly once, as with cancel().
  virtual void cancel_all() = 0;
  /// Flushes pending submissions and waits up to `timeout` (nullopt: until
  /// something completes; zero: do not block) for completions, pushing each
  /// onto the queue. Returns how many completions it pushed.
  virtual std::size_t poll(std::optional<Duration> timeout) = 0;
  /// The loop's wakeup eventfd (written by other threads): poll() must
  /// return soon after it becomes readable. The loop reads it itself; the
  /// backend only watches it and reports nothing for it. A backend that
  /// ignores it still works: cross-thread posts then wait for its next round.
  virtual void set_wakeup_fd(int fd) { (void)fd; }
  /// Offers one of the loop's receive-buffer pools (stream recvs: group 0;
  /// datagrams: group 1, see BufferPool::group) for recv ops with `select`.
  /// Returns true when the backend serves them: it picks one of the pool's
  /// buffers only when data has arrived (io_uring: by registering the pool
  /// as the kernel's provided-buffer ring; epoll, fake: by take()). A
  /// backend returning false (the default) gets plain recv ops instead.
  virtual bool provide_buffers(detail::BufferPool& pool) {
    (void)pool;
    return false;
  }
  /// The pool is going away (the loop is): forget it.
  virtual void withdraw_buffers(detail::BufferPool& pool) noexcept { (void)pool; }
  /// `fd` is about to be closed (it is still open): every op of this
  /// backend on it is asked to stop, and completes exactly once (with
  /// -ECANCELED, or with its result if that won the race). For a backend
  /// whose ops would outlive the close (io_uring's requests hold the
  /// file); the default does nothing.
  virtual void cancel_fd(int fd) noexcept { (void)fd; }
  /// What this backend runs with (all false for a backend without io_uring).
  [[nodiscard]] virtual BackendFeatures features() const noexcept { return {}; }
  /// A clock the backend wants the loop to use (the fake's virtual clock).
  [[nodiscard]] virtual std::shared_ptr<Clock> preferred_clock() { return nullptr; }
  /// What the backend counted (zeros where it counts nothing).
  [[nodiscard]] virtual BackendStats stats() const noexcept { return {}; }
  /// Ops handed to the backend and not yet pushed.
  [[nodiscard]] virtual std::size_t in_flight() const noexcept = 0;
};

}  // namespace lev
