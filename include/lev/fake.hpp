#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// `lev::FakeBackend`: a deterministic completion backend for tests. It
/// records every submitted operation and completes one only when the test
/// says so, in any order, with any result; time is a VirtualClock the test
/// advances (or that jumps to the next timer when the loop would block).
///
///     auto fake = std::make_shared<lev::FakeBackend>();
///     lev::Loop loop{lev::Model::proactor, {.backend = fake}};
///     auto op = loop.recv(fd, buf, cb);
///     fake->complete_with_data(*fake->find(lev::detail::OpKind::recv), "hi");
///     loop.run_once();   // cb runs here, never earlier

#include <cstddef>
#include <memory>
#include <string_view>
#include <vector>

#include "lev/address.hpp"
#include "lev/backend.hpp"
#include "lev/clock.hpp"

namespace lev {

/// The fake backend (see the file comment). Tests use it on the loop's
/// thread; ops are the loop's records (lev::detail::OpBase), which a test
/// reads (kind, fd, buf, len) but should not change.
class FakeBackend final : public CompletionBackend {
 public:
  /// How the fake behaves.
  struct Options {
    /// When the loop would block and only timers are pending, move the
    /// virtual clock forward to the earliest one instead of returning.
    bool auto_advance = true;
    /// `co_await loop.recv(fd)`: serve buffer selection (recv ops take a
    /// pool buffer in complete_with_data). False: the loop takes the plain
    /// path a backend without buffer selection gets (a readiness op, then
    /// a recv into a buffer the loop took).
    bool provide_buffers = true;
    /// Report multishot recv: the first recv(fd) on a connection arms one
    /// multishot recv op, fed by deliver_more() (results flagged F_MORE).
    /// Needs provide_buffers.
    bool multishot_recv = false;
    /// Report linked timeouts: an op with `{.timeout}` carries it
    /// (op.linked_timeout) instead of a loop timer; the fake ends the op
    /// with ECANCELED in the first poll at or after its deadline, as the
    /// kernel's IORING_OP_LINK_TIMEOUT would.
    bool linked_timeouts = false;
    /// Throw from poll() when the loop would block for ever (no timeout)
    /// and nothing changed since the last poll: a test bug, usually. A
    /// driver that completes ops itself between rounds turns it off.
    bool detect_blocking = true;
  };
  FakeBackend();
  /// A fake with `options`.
  explicit FakeBackend(Options options);

  // ---- the backend contract --------------------------------------------
  void attach(CompletionQueue& queue) override;
  [[nodiscard]] std::string_view name() const noexcept override { return "fake"; }
  void submit(detail::OpBase& op) override;
  /// An op not yet flushed by a poll completes with ECANCELED at once (it
  /// never reached the "kernel"); a flushed one is cancelled at the next
  /// poll unless the test completes it first (then its result wins).
  void cancel(detail::OpBase& op) override;
  void cancel_all() override;
  /// Flushes, settles requested cancels; never blocks. When the loop would
  /// block forever (no timeout) and nothing changed since the last poll
  /// (nothing flushed, nothing cancelled) it throws std::logic_error.
  std::size_t poll(std::optional<Duration> timeout) override;
  [[nodiscard]] std::shared_ptr<Clock> preferred_clock() override { return clock_; }
  [[nodiscard]] BackendFeatures features() const noexcept override {
    BackendFeatures f;
    f.multishot_recv = options_.multishot_recv && options_.provide_buffers;
    f.linked_timeouts = options_.linked_timeouts;
    return f;
  }
  [[nodiscard]] std::size_t in_flight() const noexcept override { return pending_.size(); }
  /// Recv ops with `select` take a pool buffer in complete_with_data.
  bool provide_buffers(detail::BufferPool& pool) override {
    (void)pool;
    return options_.provide_buffers;
  }

  // ---- the test's side ---------------------------------------------------
  /// Operations submitted and not completed, oldest first.
  [[nodiscard]] const std::vector<detail::OpBase*>& pending() const noexcept { return pending_; }
  /// The oldest pending op of `kind` (on `fd` when fd >= 0), or nullptr.
  [[nodiscard]] detail::OpBase* find(detail::OpKind kind, int fd = -1) const noexcept;
  /// Records the result (>= 0, or -errno) and queues the op for delivery.
  /// Throws std::logic_error if `op` is not pending (exactly once).
  void complete(detail::OpBase& op, int res);
  /// Completes `op` with the errno value `err` (ECONNRESET, EAGAIN...).
  void fail(detail::OpBase& op, int err) { complete(op, -err); }
  /// Copies `data` into a read/recv op's buffer (at most its length) and
  /// completes it with the number of bytes copied. A recv with `select`
  /// takes a buffer of the loop's pool now (none free: ENOBUFS); a recvmsg
  /// with `select` (DatagramSocket::receive) takes one of the datagram
  /// pool and gets `data` as one datagram from `from` (null: no address).
  void complete_with_data(detail::OpBase& op, std::string_view data,
                          const SocketAddress* from = nullptr);
  /// A multishot recv's intermediate result: `data` goes into a buffer of
  /// the loop's pool and the op's MoreFn gets it with F_MORE (the op stays
  /// pending). No free buffer: the multishot ends with ENOBUFS, as the
  /// kernel's does. Returns false when it ended. A multishot recvmsg
  /// (DatagramSocket::receive) gets `data` as one datagram from `from`;
  /// an empty datagram is one too (only a recv's empty data is EOF).
  bool deliver_more(detail::OpBase& op, std::string_view data,
                    const SocketAddress* from = nullptr);
  /// A send the kernel would not take zero-copy (EOPNOTSUPP, as AF_UNIX
  /// sockets answer IORING_OP_SEND_ZC): queued as a step the loop resends
  /// plain, keeping its time limit and honouring a recorded cancel.
  void refuse_zero_copy(detail::OpBase& op);
  /// Whether the loop asked to cancel `op` (it completes at the next poll
  /// unless the test completes it first).
  [[nodiscard]] bool cancel_requested(const detail::OpBase& op) const noexcept;
  /// `op` has started where a cancel cannot reach it (an io-wq or file
  /// worker inside a syscall on a regular file): from now on a cancel
  /// request, or its linked timeout, is recorded but not honoured, and it
  /// ends only when the test completes it (so a Loop torn down meanwhile
  /// waits for that). Throws std::logic_error if `op` is not pending.
  void run_uncancellable(detail::OpBase& op);
  /// Whether run_uncancellable was called for the pending `op`.
  [[nodiscard]] bool running(const detail::OpBase& op) const noexcept {
    return (op.backend_data & kRunning) != 0;
  }
  /// The deadline of `op`'s linked timeout (linked_timeouts mode), or
  /// TimePoint::max().
  [[nodiscard]] TimePoint linked_deadline(const detail::OpBase& op) const noexcept;
  /// Operations submitted so far.
  [[nodiscard]] std::size_t submit_count() const noexcept { return submits_; }
  /// Cancel requests received so far.
  [[nodiscard]] std::size_t cancel_count() const noexcept { return cancels_; }
  /// Times the loop polled the backend.
  [[nodiscard]] std::size_t poll_count() const noexcept { return polls_; }
  /// The virtual clock the loop runs on (unless LoopOptions::clock says otherwise).
  [[nodiscard]] VirtualClock& clock() noexcept { return *clock_; }
  /// Moves the virtual clock `d` forward; timers due fire at the next round.
  void advance(Duration d) noexcept { clock_->advance(d); }

 private:
  enum : std::uintptr_t { kStaged = 1, kFlushed = 2, kCancel = 4, kRunning = 8 };
  void settle(detail::OpBase& op, int res, unsigned cqe_flags = 0);

  Options options_;
  std::shared_ptr<VirtualClock> clock_;
  CompletionQueue* queue_ = nullptr;
  std::vector<detail::OpBase*> pending_;
  struct Linked {
    detail::OpBase* op;
    TimePoint deadline;
  };
  std::vector<Linked> linked_;  // linked timeouts of pending ops
  std::size_t submits_ = 0;
  std::size_t cancels_ = 0;
  std::size_t polls_ = 0;
};

}  // namespace lev
