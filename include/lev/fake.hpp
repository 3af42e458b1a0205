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
///     loop.spawn(client(loop));                  // the code under test
///     lev::FakeOp send = fake->run_until(loop, "send");   // it is waiting to send
///     CHECK(send.data() == "hello\n");
///     send.complete();                           // every byte went
///     fake->run_until(loop, "recv").complete_with_data("HELLO\n");
///     loop.run_once();   // the client resumes here, never earlier
///
/// The test's side is public: a FakeOp names its operation as errors and
/// stats do ("recv", "send", "openat", "statx", "sendmsg"...), says what it
/// asks for (fd, data, size, path, peer) and completes it; nothing in
/// `lev::detail` need be named.
///
/// Time: the loop's clock is the fake's VirtualClock (unless
/// LoopOptions::clock says otherwise), so deadlines, sleeps and
/// `{.timeout}`s run in virtual time, in microseconds. Code under test
/// must therefore read time from the loop (`loop.now()`, `loop.clock()`)
/// and wait with the loop's timers (`loop.sleep_for`, `{.timeout}`,
/// with_timeout): `std::chrono::steady_clock::now()` and
/// `std::this_thread::sleep_for` know nothing of the virtual clock.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "lev/address.hpp"
#include "lev/backend.hpp"
#include "lev/clock.hpp"
#include "lev/op_types.hpp"

namespace lev {

class Loop;
class FakeBackend;

/// A pending operation on the fake backend, as a test sees it (see the
/// file comment): what it asks for, and the ways to complete it. A small
/// copyable handle; it refers to the operation only while that is pending
/// (a completion, or the loop's own cancel, ends it). Loop thread only.
class FakeOp {
 public:
  /// No operation (what find() returns when none matches): false.
  FakeOp() noexcept = default;
  /// An operation is there.
  explicit operator bool() const noexcept { return op_ != nullptr; }
  /// Its name as errors, stats and traces spell it: "read", "write",
  /// "recv", "send", "accept", "connect", "close", "poll", "openat",
  /// "fsync", "statx", "sendmsg", "recvmsg"...
  [[nodiscard]] std::string_view name() const noexcept;
  /// The fd it is on (AT_FDCWD for a path op, -1 for none).
  [[nodiscard]] int fd() const noexcept;
  /// The bytes a write-type op carries (write, send, writev, sendmsg), in
  /// order; empty for any other.
  [[nodiscard]] std::string data() const;
  /// The room a read-type op has (read, recv, readv, recvmsg: the bytes its
  /// buffers hold; a recv from the loop's pool: one pool buffer); for a
  /// write-type op, data().size().
  [[nodiscard]] std::size_t size() const noexcept;
  /// The file offset of a read / write at an offset; -1 for none (a
  /// stream, or the file position).
  [[nodiscard]] std::uint64_t offset() const noexcept;
  /// The path of a path op (openat, statx by path, mkdirat, unlinkat;
  /// renameat: the old path), empty for any other.
  [[nodiscard]] std::string_view path() const noexcept;
  /// The address a connect or a sendmsg (send_to) goes to; empty for any other.
  [[nodiscard]] SocketAddress peer() const;
  /// Whether the loop asked to cancel it (it completes with
  /// operation_canceled at the next round unless the test completes it first).
  [[nodiscard]] bool cancel_requested() const noexcept;

  /// Completes it with `res`: a byte count, an fd, 0 for success.
  void complete(int res) const;
  /// Completes a write-type op with all of data(), any other with 0.
  void complete() const;
  /// Fails it with the errno value `err` (ECONNRESET, EAGAIN, ENOENT...).
  void fail(int err) const;
  /// Fails it with `err` (std::errc::connection_reset...).
  void fail(std::errc err) const { fail(static_cast<int>(err)); }
  /// A read-type op receives `data` (cut to its room); a recvmsg gets it as
  /// one datagram from `from` (see FakeBackend::complete_with_data).
  void complete_with_data(std::string_view data, const SocketAddress* from = nullptr) const;
  /// A multishot recv's next result (see FakeBackend::deliver_more);
  /// false when the multishot ended.
  bool deliver_more(std::string_view data, const SocketAddress* from = nullptr) const;
  /// A send the kernel would not take zero-copy (EOPNOTSUPP, as AF_UNIX
  /// sockets answer IORING_OP_SEND_ZC): the loop resends it plain, keeping
  /// its time limit and honouring a recorded cancel.
  void refuse_zero_copy() const;
  /// The deadline of its linked timeout (Options::linked_timeouts), or
  /// TimePoint::max().
  [[nodiscard]] TimePoint linked_deadline() const noexcept;
  /// An accept gets the new connection `fd` (now owned by the loop's
  /// code) from `peer`.
  void complete_accept(int fd, const SocketAddress& peer) const;
  /// A statx (File::stat, lev::stat) reports `st`.
  void complete_stat(const FileStat& st) const;

  /// \cond extension
  /// The loop's own record of the op (lev::detail::OpBase): for lev's own
  /// tests, which look further inside; its layout may change in any release.
  [[nodiscard]] detail::OpBase& record() const noexcept { return *op_; }
  /// \endcond

 private:
  friend class FakeBackend;
  FakeOp(FakeBackend* fake, detail::OpBase* op) noexcept : fake_(fake), op_(op) {}
  FakeBackend* fake_ = nullptr;
  detail::OpBase* op_ = nullptr;
};

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
    /// Report IORING_OP_FTRUNCATE (BackendFeatures::ftruncate_op). False:
    /// File::truncate runs ftruncate(2) on the offload pool, as on a ring
    /// whose kernel lacks the op (before 6.9).
    bool ftruncate_op = true;
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
    f.ftruncate_op = options_.ftruncate_op;
    return f;
  }
  [[nodiscard]] std::size_t in_flight() const noexcept override { return pending_.size(); }
  /// Recv ops with `select` take a pool buffer in complete_with_data.
  bool provide_buffers(detail::BufferPool& pool) override {
    (void)pool;
    return options_.provide_buffers;
  }

  // ---- the test's side ---------------------------------------------------
  /// The oldest pending operation called `name` ("recv", "send", "openat";
  /// see FakeOp::name), on `fd` when fd >= 0; an empty FakeOp when none
  /// is. Throws std::invalid_argument for a name no operation has (a
  /// timer is never a backend operation: advance() the clock instead).
  [[nodiscard]] FakeOp find(std::string_view name, int fd = -1);
  /// Runs rounds of `loop` (the loop this fake serves) until an operation
  /// called `name` (on `fd` when fd >= 0) is pending, and returns it.
  /// Throws std::logic_error when the loop has nothing left to do and none
  /// came (the code under test waits on something else), or after a
  /// million rounds.
  FakeOp run_until(Loop& loop, std::string_view name, int fd = -1);
  /// Every pending operation, oldest first.
  [[nodiscard]] std::vector<FakeOp> pending_ops();

  /// \cond extension
  // The same on lev's records (lev::detail::OpBase), for lev's own tests;
  // FakeOp's members say what each does.
  /// Operations submitted and not completed, oldest first (lev's records;
  /// pending_ops() is the public view).
  [[nodiscard]] const std::vector<detail::OpBase*>& pending() const noexcept { return pending_; }
  /// The oldest pending op of `kind` (on `fd` when fd >= 0), or nullptr
  /// (lev's own tests; find(name) is the public form).
  [[nodiscard]] detail::OpBase* find(detail::OpKind kind, int fd = -1) const noexcept;
  /// Records the result (>= 0, or -errno) and queues the op for delivery.
  /// Throws std::logic_error if `op` is not pending (exactly once).
  void complete(detail::OpBase& op, int res);
  /// Completes `op` with the errno value `err` (ECONNRESET, EAGAIN...).
  void fail(detail::OpBase& op, int err) { complete(op, -err); }
  /// Copies `data` into a read/recv op's buffer (at most its length), or
  /// over a readv's iovecs in order, and completes it with the number of
  /// bytes copied. A recvmsg (recv_from, DatagramSocket::recvmsg) gets
  /// `data` as one datagram from `from` (null: no address) scattered over
  /// its iovecs, MSG_TRUNC when they are too short. A recv with `select`
  /// takes a buffer of the loop's pool now (none free: ENOBUFS); a recvmsg
  /// with `select` (DatagramSocket::receive) takes one of the datagram
  /// pool. Throws std::logic_error for an op that receives no data (a
  /// write, an accept...: complete() those).
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
  /// \endcond
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
