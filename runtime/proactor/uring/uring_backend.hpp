#pragma once
// The io_uring completion backend. Not a public header.
#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "lev/backend.hpp"
#include "lev/detail/uring_prep.hpp"

namespace lev {

struct LoopOptions;
namespace detail {
struct Inbox;
}
struct IssuerHooks;  // the SINGLE_ISSUER rings bound to one thread (uring_backend.cpp)

class UringBackend final : public CompletionBackend {
 public:
  /// Throws std::system_error naming the cause when io_uring cannot start.
  explicit UringBackend(const LoopOptions& options);
  ~UringBackend() override;
  UringBackend(const UringBackend&) = delete;
  UringBackend& operator=(const UringBackend&) = delete;

  void attach(CompletionQueue& queue) override { queue_ = &queue; }
  [[nodiscard]] std::string_view name() const noexcept override { return "uring"; }
  void submit(detail::OpBase& op) override;
  void cancel(detail::OpBase& op) override;
  void cancel_all() override;
  std::size_t poll(std::optional<Duration> timeout) override;
  /// poll(), but the loop walks the completions itself (Loop::run_once,
  /// when nothing is queued before them): each plain coroutine completion
  /// (no continuation to settle, no callback) goes to `deliver(op)` at
  /// once, with its result recorded and the ring consistent (its CQE
  /// consumed, the op no longer in flight), so that what the resumed
  /// coroutine does, a nested poll included, finds nothing half done; the
  /// others are queued as poll() queues them. At most the CQEs present
  /// when the walk starts are taken (a nop loop cannot keep one walk
  /// going). A template so that the loop's delivery is inlined into the
  /// walk.
  struct Walked {
    std::size_t taken;   // CQEs of ops taken
    std::size_t queued;  // of those, queued rather than delivered
  };
  template <class Deliver>
  Walked poll_direct(std::optional<Duration> timeout, Deliver&& deliver) {
    if (foreign_teardown_) [[unlikely]] {  // poll()'s path (see cancel_all): all queued
      const std::size_t n = poll(timeout);
      return {n, n};
    }
    wait(timeout);
    if (!queue_->empty()) [[unlikely]] {
      // wait() moved the loop to a new ring (another thread runs it) and
      // queued what the old one left: newer completions queue behind those.
      const std::size_t n = reap();
      return {n, n};
    }
    // Without cancel-any the ops are tracked: a walk of its own, so that
    // the common one has no test per CQE.
    return cancel_any_ ? reap_direct<false>(deliver) : reap_direct<true>(deliver);
  }
  [[nodiscard]] std::size_t in_flight() const noexcept override { return in_flight_; }
  void set_wakeup_fd(int fd) override;
  [[nodiscard]] BackendFeatures features() const noexcept override;
  [[nodiscard]] BackendStats stats() const noexcept override;
  bool provide_buffers(detail::BufferPool& pool) override;
  void withdraw_buffers(detail::BufferPool& pool) noexcept override;
  /// The ring's fd, for other rings' MSG_RING; -1 when MSG_RING is off.
  [[nodiscard]] int msg_ring_target() const noexcept { return msg_ring_ ? ring_.ring_fd : -1; }
  /// Wakes the loop whose ring is `target_ring` with a MSG_RING from this
  /// ring (this loop's thread only), submitted at once. False when MSG_RING
  /// is off here (the caller writes the target's eventfd instead). The
  /// message holds a reference to `target` until its completion is reaped;
  /// should it fail, the target's eventfd is written then.
  bool send_wake(int target_ring, detail::Inbox& target) noexcept;
  /// Lets the Loop fill SQEs inline (see UringFastPath).
  detail::UringFastPath fast_path() noexcept;
  /// IORING_ASYNC_CANCEL_FD | ALL for `fd`, submitted now (before the fd is
  /// closed: the kernel resolves the number when the request runs). Off
  /// where the kernel lacks it (before 5.19), and from a thread that is
  /// not running the loop.
  void cancel_fd(int fd) noexcept override;
  /// `fd` is about to be closed by this loop's thread (core/fd_hooks). A
  /// splice resolves its input fd only when io-wq runs it, and a cancel by
  /// fd matches its output only: each splice in flight whose input is `fd`
  /// is cancelled by its user_data, the cancels are submitted now, and the
  /// splices' completions are waited for (queued, not delivered; at most
  /// about a second), so that none of them reaches a new file given the
  /// number (finding F3). Nothing to do, and one test, without splices.
  void closing_input(int fd) noexcept;
  /// Called on the thread this ring is SINGLE_ISSUER bound to, as that
  /// thread exits (a thread-local hook), with the hooks' lock held: every
  /// request it submitted is cancelled and its completion posted to the CQ
  /// ring's memory, where any thread can reap it (the kernel would
  /// complete them only for this thread, which is going away).
  void issuer_exiting() noexcept;

 private:
  io_uring_sqe* get_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    return sqe ? sqe : get_sqe_slow();
  }
  io_uring_sqe* get_sqe_slow();
  std::size_t reap() noexcept;
  template <bool Tracked, class Deliver>
  Walked reap_direct(Deliver& deliver) noexcept;
  /// reap_direct's CQEs off the common path (a tag, a multishot step, a
  /// zero-copy send's two CQEs): the op to go on with, or null (consumed).
  [[gnu::cold]] detail::OpBase* unusual_cqe(std::uint64_t data, int& res,
                                            std::uint32_t& flags) noexcept;
  /// After a walk: the cancels deferred meanwhile; true when the CQ ring
  /// overflowed (walk again).
  bool after_walk() noexcept;
  int wait(std::optional<Duration> timeout);
  int enter(std::optional<Duration> timeout) noexcept;
  void flush();
  /// Before anything enters the ring: the calling thread becomes the one
  /// that runs it (see adopt_thread).
  void here();
  void adopt_thread();
  void replace_ring();
  void register_ring_fd() noexcept;
  /// The calling thread is now the ring's issuer: its exit hook knows us.
  void bind_issuer();
  void unbind_issuer() noexcept;
  /// True when the ring is bound to another thread than the caller's.
  [[nodiscard]] bool bound_elsewhere() const noexcept;
  /// Reads the CQ ring (no syscall) until what was submitted to the
  /// kernel has completed, at most `limit_ms`; returns what is still owed.
  std::size_t reap_owed(int limit_ms) noexcept;
  /// Ops filled in the SQ but never submitted.
  [[nodiscard]] std::size_t unsubmitted_ops() const noexcept;
  /// Teardown on a thread that may not enter the ring: the ops still in
  /// the SQ end cancelled, without reaching the kernel.
  void cancel_unsubmitted() noexcept;
  void track(detail::OpBase& op) noexcept;
  void untrack(detail::OpBase& op) noexcept;
  void untrack_splice(detail::OpBase& op) noexcept;
  [[nodiscard]] bool splices_from(int fd) const noexcept;
  void arm_wakeup();

  io_uring ring_{};
  // Cancels asked for while reap() walks the CQ ring with the SQ full: a
  // flush then could reap inside the walk. Submitted once the walk is done.
  bool reaping_ = false;
  std::vector<detail::OpBase*> deferred_cancels_;
  // IORING_ASYNC_CANCEL_ANY works (5.19+); otherwise ops are tracked so
  // that cancel_all can name each one.
  bool cancel_any_ = false;
  detail::OpBase* tracked_ = nullptr;
  // The splices in flight (their user_data is the op's address | kSpliceTag,
  // so reap finds them in its branch for tags, off the path of other ops).
  std::vector<detail::OpBase*> splices_;
  bool cancel_fd_ = false;  // IORING_ASYNC_CANCEL_FD (5.19+): see cancel_fd()
  CompletionQueue* queue_ = nullptr;
  std::size_t in_flight_ = 0;
  unsigned batch_ = 0;
  unsigned unflushed_ = 0;
  BackendStats stats_{};  // kernel_enters, cq_overflows (cq_dropped is the kernel's)
  int wake_fd_ = -1;  // watched by a multishot poll whose user_data is kWakeTag
  bool wake_multishot_ = true;
  bool closing_ = false;   // cancel_all ran: do not re-arm the wakeup poll
  bool msg_ring_ = false;  // IORING_OP_MSG_RING usable between lev rings
  bool ftruncate_op_ = false;  // IORING_OP_FTRUNCATE in the probe (6.9+)
  unsigned setup_flags_ = 0;
  unsigned queue_size_ = 0;
  unsigned cqe_entries_ = 0;
  std::size_t zc_threshold_ = static_cast<std::size_t>(-1);  // -1: zero-copy send off
  bool own_enter_ = false;  // poll() enters itself (see enter()), not through liburing

  // Threads (see adopt_thread). The ring is made disabled (R_DISABLED) and
  // enabled by the first thread that enters it, which SINGLE_ISSUER then
  // binds; its fd is registered in that thread's table of registered
  // rings (a per-task table: the index means nothing on another thread).
  // Threads are told apart by a serial number of their own (0: none): a
  // std::thread::id is given again to a thread made after one was joined.
  bool enabled_ = true;
  std::uint64_t runner_ = 0;  // the thread that last entered the ring
  std::uint64_t issuer_ = 0;  // the thread that enabled it (SINGLE_ISSUER binds it)
  std::uint64_t creator_ = 0;  // the thread that built it
  bool reg_ok_ = false;       // registered ring fds work here (probed)
  int reg_index_ = -1;        // the ring fd's index in reg_thread_'s table
  std::uint64_t reg_thread_ = 0;
  bool use_reg_ = false;  // enter() passes the registered index (runner_ == reg_thread_)
  std::shared_ptr<IssuerHooks> hooks_;  // the issuer's exit hook (SINGLE_ISSUER only)
  // Teardown (cancel_all) on a thread the ring is not bound to, after the
  // issuer's requests were reaped: nothing enters the ring any more;
  // what is started ends cancelled at once.
  bool foreign_teardown_ = false;
  // The provided-buffer rings, one per buffer group (0: stream recvs, 1:
  // datagrams), each fed from one of the loop's BufferPools.
  struct BufRing {
    io_uring_buf_ring* ring = nullptr;
    std::size_t bytes = 0;
    detail::BufferPool* pool = nullptr;
  };
  static constexpr std::size_t kBufGroups = 2;
  BufRing buf_rings_[kBufGroups];
  // Each buffer ring's head (the next entry the kernel takes) as the
  // issuer's exit hook read it, so that replace_ring can move the buffers
  // nobody took to the new ring; -1: unknown (the thread lives, or the
  // kernel is before 6.8), and the loop cannot move.
  std::int64_t exit_buf_head_[kBufGroups] = {-1, -1};
  void withdraw_group(std::size_t group) noexcept;
  /// Makes a buffer ring for `pool` and registers it (provide_buffers
  /// without the thread check: replace_ring calls it for the new ring).
  bool register_buf_ring(detail::BufferPool& pool);
  bool multishot_recv_ = false;  // IORING_RECV_MULTISHOT (6.0+)
  bool buf_ring_ok_ = false;     // a provided-buffer ring can be (or is) registered
};

// The loop's own walk of the CQ ring (poll_direct). Unlike reap(), each CQE
// is consumed (khead moved past it) and its op taken out of flight before
// anything is done with it, because a plain completion resumes its
// coroutine right here: whatever that coroutine does (submit, cancel,
// flush, abandon an op and poll for it, which reaps) meets a consistent
// ring. Anything else (a multishot step, a zero-copy send's two CQEs, an
// op with a continuation for Loop::settle, a callback) is queued as reap()
// queues it. (Recording a chunk of CQEs first and resuming afterwards was
// measured too: more instructions per completion, not fewer.)
template <bool Tracked, class Deliver>
UringBackend::Walked UringBackend::reap_direct(Deliver& deliver) noexcept {
  std::size_t total = 0;
  std::size_t queued = 0;
  // Fixed for the ring's life: kept out of memory that a resumed
  // coroutine might (as far as the compiler knows) have written.
  io_uring_cqe* const cqes = ring_.cq.cqes;
  const unsigned mask = ring_.cq.ring_mask;
  unsigned* const khead = ring_.cq.khead;
  const unsigned* const ktail = ring_.cq.ktail;
  do {
    // At most what is there now: a coroutine that keeps submitting cannot
    // keep one walk going.
    const unsigned end = io_uring_smp_load_acquire(ktail);
    for (;;) {
      const unsigned head = *khead;  // read again: a nested reap may have moved it
      if (static_cast<int>(end - head) <= 0) break;
      const io_uring_cqe& slot = cqes[head & mask];
      const std::uint64_t data = slot.user_data;
      const std::uint32_t flags = slot.flags;
      auto* op = reinterpret_cast<detail::OpBase*>(static_cast<std::uintptr_t>(data));
      if (((data & 7) | (flags & IORING_CQE_F_MORE)) != 0 || op->zc == 1) [[unlikely]] {
        if ((data & 7) == 0 && op->more && op->zc != 1) {
          // A multishot step (a pooled recv's data): its owner records it,
          // the op stays in flight.
          const int r = slot.res;
          io_uring_smp_store_release(khead, head + 1);
          op->more(*op, r, flags);
          continue;
        }
        int r = slot.res;
        std::uint32_t f = flags;
        io_uring_smp_store_release(khead, head + 1);  // the slot is the kernel's again
        op = unusual_cqe(data, r, f);
        if (!op) continue;
        op->res = r;
        op->cqe_flags = f;
      } else {
        op->res = slot.res;
        op->cqe_flags = flags;
        io_uring_smp_store_release(khead, head + 1);  // the slot is the kernel's again
      }
      --in_flight_;
      if constexpr (Tracked) untrack(*op);
      ++total;
      // Straight to its coroutine only when nothing was queued before it
      // (in this walk or by a step's owner): delivery stays in CQE order.
      if (op->flow == 0 && !op->deliver && queue_->empty()) [[likely]] {
        deliver(*op);
      } else {
        ++queued;
        queue_->push(*op, op->res, op->cqe_flags);
      }
    }
  } while ((!deferred_cancels_.empty() ||
            (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_CQ_OVERFLOW)) &&
           after_walk());
  return {total, queued};
}

}  // namespace lev
