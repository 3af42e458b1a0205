#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// `lev::Loop`, the front door. The model is explicit:
///
///     lev::Loop loop{lev::Model::proactor};                      // io_uring
///     lev::Loop fake{lev::Model::proactor, {.backend = "fake"}}; // for tests
///
/// Every operation is an awaitable (`co_await loop.recv(fd, buf)`) and has a
/// callback form returning an Operation. Whatever completes an operation,
/// the coroutine is resumed (or the callback called) only while run_once()
/// or drain_callbacks() drains the loop's completion queue: never inline in
/// the call that starts it. (On epoll, a send the socket takes at once does
/// not suspend the coroutine at all: see send().) A Loop and its
/// operations belong to one thread.

#include <poll.h>
#include <pthread.h>
#include <sys/uio.h>
#include <sys/types.h>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "lev/address.hpp"
#include "lev/backend.hpp"
#include "lev/buffer.hpp"
#include "lev/clock.hpp"
#include "lev/detail/awaiter.hpp"
#include "lev/detail/offload.hpp"
#include "lev/detail/op.hpp"
#include "lev/detail/ops/all.hpp"
#include "lev/detail/recv.hpp"
#include "lev/detail/remote.hpp"
#include "lev/detail/root.hpp"
#include "lev/detail/timer_heap.hpp"
#include "lev/detail/timer_slab.hpp"
#include "lev/detail/uring_prep.hpp"
#include "lev/error.hpp"
#include "lev/fd.hpp"
#include "lev/join_handle.hpp"
#include "lev/op_types.hpp"
#include "lev/operation.hpp"
#include "lev/stats.hpp"
#include "lev/task.hpp"
#include "lev/watchers.hpp"

namespace lev {
namespace net {
class DatagramSocket;
}

namespace detail {
struct SignalHub;
struct Inbox;
struct FdSet;
TimePoint loop_round_time(const Loop& loop) noexcept;
struct CloseLink;
/// Reports an operation started off the loop's thread, then aborts.
[[noreturn]] void wrong_thread() noexcept;
}  // namespace detail
class UringBackend;
class EpollBackend;
namespace detail {
/// EpollBackend::try_send (Now as an int: 0 declined, 1 done, 2 held).
int reactor_try_send(EpollBackend& engine, OpBase& op) noexcept;

/// An event source built on loop ops (watcher, signal hub, waker, pid
/// watch). The loop lists it while alive and detaches it at teardown, so a
/// handle that outlives its loop no longer touches it.
struct Source {
  Loop* loop = nullptr;
  Source* src_prev = nullptr;
  Source* src_next = nullptr;
  bool keeps_alive = true;  // false: its ops alone do not keep run() going
  virtual ~Source() { detach(); }
  void attach(Loop& l) noexcept;
  void detach() noexcept;
  /// Turns keeps_alive on or off (the loop counts the sources that are off).
  void set_keeps_alive(bool on) noexcept;
  /// How many of the loop's live ops are this source's now.
  [[nodiscard]] virtual std::size_t live_ops() const noexcept = 0;
};
}  // namespace detail

/// Completion-based (io_uring, fake) or readiness-based (epoll).
enum class Model {
  proactor,  ///< operations are submitted and their completions reported
  reactor,   ///< readiness is waited for, then a nonblocking syscall runs
};

/// A backend by name ("uring", "fake") or a backend object of your own.
class BackendChoice {
 public:
  /// The model's default backend.
  BackendChoice() = default;
  /// A backend by name: "uring", "epoll", "auto" or "fake".
  BackendChoice(const char* name) : name_(name) {}  // NOLINT
  /// A backend by name: "uring", "epoll", "auto" or "fake".
  BackendChoice(std::string name) : name_(std::move(name)) {}  // NOLINT
  /// A backend object (one loop's only: a backend serves one loop).
  BackendChoice(std::shared_ptr<CompletionBackend> b)  // NOLINT
      : object_(std::move(b)) {}
  /// A backend object of a type derived from CompletionBackend.
  template <class B>
  requires std::is_base_of_v<CompletionBackend, B> BackendChoice(std::shared_ptr<B> b)
      : object_(std::move(b)) {}  // NOLINT

  /// The name given (empty when an object, or nothing, was).
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  /// The object given (null when a name, or nothing, was).
  [[nodiscard]] const std::shared_ptr<CompletionBackend>& object() const noexcept {
    return object_;
  }

 private:
  std::string name_;
  std::shared_ptr<CompletionBackend> object_;
};

/// How a Loop is set up: `lev::Loop loop{lev::Model::proactor, {.queue_size = 1024}}`.
/// Counts and sizes are std::size_t, the type a program holds them in
/// (`{.file_workers = v.size()}` needs no cast); the Loop constructor checks
/// each against its range (std::invalid_argument names the option).
struct LoopOptions {
  /// "uring" (default for the proactor), "fake", or a backend object.
  BackendChoice backend{};
  /// Submission queue entries (io_uring): 1 to 32768.
  std::size_t queue_size = 256;
  /// Completion queue entries; 0 = the kernel's default (2 x queue_size);
  /// else queue_size to 65536.
  std::size_t cqe_entries = 0;
  /// Flush submissions once this many are queued; 0 = once per loop round
  /// (or when the submission queue is full); at most 32768.
  std::size_t submit_batch_size = 0;
  /// Kernel-side submission polling thread (IORING_SETUP_SQPOLL).
  bool sqpoll = false;
  /// SINGLE_ISSUER + DEFER_TASKRUN when the kernel has them, for a loop
  /// first run on the thread that built it: the kernel ties such a ring to
  /// that thread; run on another thread later, the loop gets a new ring,
  /// which needs nothing of the old one's in flight and no recv(fd) /
  /// DatagramSocket::receive pool registered with it (else
  /// std::logic_error). What that thread leaves in flight when it exits
  /// is cancelled then; the loop may be destroyed on any thread, or run
  /// there, its receive pools with it on Linux 6.8+ (docs/cancellation.md). A loop built on one thread and first
  /// run on another (built in main, run in a std::thread, destroyed in
  /// main) gets a ring any thread may use instead (COOP_TASKRUN). A loop
  /// handed between live threads with requests in flight: false.
  bool single_issuer = true;
  /// io_uring: sends of at least this many bytes go zero-copy
  /// (IORING_OP_SEND_ZC, the buffer held until the kernel's notification);
  /// 0 = never. Chosen by bench/send_bench (see bench/README.md).
  std::size_t zero_copy_threshold = 0;
  /// `co_await loop.recv(fd)` (no buffer of yours): the pool it receives
  /// into, made on first use. On io_uring it is the kernel's provided-buffer
  /// ring; count at most 32768. The kernel hands its buffers out in ring
  /// order, so the whole pool is the cache working set: 256 x 4 KiB
  /// measured best for echo (bench/README.md); a pool run dry only makes
  /// recvs wait (RecvBufferStats::exhausted).
  std::size_t recv_buffer_count = 256;
  /// Bytes per pool buffer (see recv_buffer_count): 1 to 2^30.
  std::size_t recv_buffer_size = 4096;
  /// DatagramSocket::receive (no buffer of yours): its own pool, made on
  /// first use (on io_uring: buffer group 1, fed to one multishot recvmsg
  /// per socket). A datagram that arrives while every buffer is out waits
  /// in the socket's receive buffer, and the kernel drops what does not
  /// fit there, as UDP may (RecvBufferStats::exhausted counts the times
  /// the pool ran dry). 1 to 32768.
  std::size_t datagram_buffer_count = 64;
  /// The longest datagram payload a pool buffer holds (longer ones are cut:
  /// ReceivedDatagram::truncated). 65536 holds any UDP datagram. Each
  /// buffer has room for the sender's address besides. 1 to 2^30.
  std::size_t datagram_buffer_size = 65536;
  /// The epoll engine's file workers: how many file operations (regular
  /// files, paths) run at once; each is a thread started on demand. Set it
  /// to the queue depth you want (32 reads in flight: 32). 1 to 65536.
  std::size_t file_workers = 4;
  /// Ignore SIGPIPE process-wide when it is at its default (so a write to a
  /// closed peer is EPIPE, never a dead process).
  bool ignore_sigpipe = true;
  /// Time source; null = the backend's preferred clock or CLOCK_MONOTONIC.
  std::shared_ptr<Clock> clock{};
  /// io_uring: how late a wait for the next timer may wake, so that timers
  /// due close together fire in one round (one kernel entry) rather than
  /// one round each. Unset: what nanosleep allows on the thread that runs
  /// the loop, its timer slack (prctl PR_SET_TIMERSLACK; 50 us by default,
  /// 0 for a real-time thread), read again when the loop moves to another
  /// thread. Duration::zero(): wake at the deadline. A timer never fires
  /// before its deadline either way. (The epoll engine waits in whole
  /// milliseconds, rounded up, plus the kernel's own slack.) At most 1 s.
  std::optional<Duration> timer_slack{};
};

/// Per-operation options: `co_await loop.recv(fd, buf, {.timeout = 5s})`.
struct IoOptions {
  /// recv/send flags (MSG_*); ignored by read/write/accept/connect.
  int flags = 0;
  /// The operation ends with errc::timed_out when it has not completed by
  /// then (io_uring: a linked timeout, a loop timer for splice; epoll,
  /// fake: a loop timer).
  std::optional<Duration> timeout{};
};

/// The event loop: one thread's operations, timers, tasks and event
/// sources, over one backend. Every completion is queued first and
/// delivered (a coroutine resumed, a callback called) only while run(),
/// run_once(), block_on() or drain_callbacks() drains the queue, on the
/// loop's thread. Members are for that thread unless they say "any thread".
///
/// Threads: one thread at a time uses a loop, its owner: the thread that
/// built it, until another enters run() or block_on(); that thread is the
/// owner from then on, after the call returns too. A loop changes hands
/// only between runs, and may be destroyed on any thread no other uses it
/// from. Hand it over with nothing in flight: timers, tasks and posts move
/// with the loop, but an io_uring request belongs to the thread that
/// submitted it (its completion runs there; once that thread has exited
/// the request ends with operation_canceled, when it next has something
/// to report, or with LoopOptions::single_issuer as the thread exits;
/// with single_issuer the loop refuses to move while one is in flight on
/// a thread that lives: std::logic_error).
class Loop {
 public:
  /// Throws std::invalid_argument for a bad option (queue_size 0, unknown
  /// backend) and std::system_error when the backend cannot start (io_uring
  /// disabled or filtered: the message names the cause).
  explicit Loop(Model model, LoopOptions options = {});
  /// Cancels every live operation and waits for each completion (the kernel
  /// writes into no freed buffer), closes any resource a completion carried
  /// that nobody will receive, then destroys the suspended spawned tasks.
  /// Callbacks of cancelled callback-form operations are not called.
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // ---- lifecycle -------------------------------------------------------

  /// Runs rounds until stop() is called, or until nothing is live and
  /// nothing is queued (no completion could ever arrive). An event source
  /// told not to keep the loop alive (`keep_alive(false)` on a Watcher,
  /// Signal, Waker or PidWatch) does not count: run() returns once only
  /// such sources are left (they stay armed, for the next run()).
  void run();
  /// One round: flush submissions, wait for completions (not when something
  /// is already queued; at most until the earliest timer), fire due timers,
  /// deliver what is queued. Returns backend events + timers fired +
  /// resumptions/callbacks delivered; 0 when there was nothing to do.
  std::size_t run_once();
  /// Timer expiries a round fires at most (in deadline order); the rest
  /// are due already and fire in the next round, which does not wait. A
  /// round that fires 10^5 timers at once would queue them all before the
  /// first callback ran, and the I/O that completed meanwhile would wait
  /// for all of them.
  static constexpr std::size_t kFireBudget = 1024;
  /// Makes run() return after the current round. Any thread.
  void stop() noexcept;
  /// Inside run() or block_on().
  [[nodiscard]] bool is_running() const noexcept { return running_; }
  /// Operations registered and not yet delivered (timers, posts included).
  [[nodiscard]] std::size_t live_op_count() const noexcept { return live_count_; }
  /// Where the live operations are (tests, debugging; O(queued)). For a
  /// backend whose in_flight() counts operations only (fake, epoll),
  /// `live == in_backend + timers + queued + external` at every point
  /// between rounds: the registry is exact.
  struct Census {
    std::size_t live = 0;        ///< live_op_count()
    std::size_t in_backend = 0;  ///< handed to the backend, not yet reported
    std::size_t timers = 0;      ///< armed on the deadline heap
    std::size_t queued = 0;      ///< results recorded, not yet delivered
    std::size_t external = 0;    ///< completed by another thread (offload)
  };
  /// Where the live operations are now (see Census).
  [[nodiscard]] Census census() const noexcept {
    return {live_count_, backend_->in_flight(), timers_.size() + (tslab_ ? tslab_->armed() : 0),
            ready_.size(), external_};
  }
  /// Delivers what is already queued, without polling the backend.
  std::size_t drain_callbacks();
  /// "uring", "epoll" or "fake" (what "auto" chose, too).
  [[nodiscard]] std::string_view backend_name() const noexcept { return backend_->name(); }
  /// The backend this loop runs on.
  [[nodiscard]] CompletionBackend& backend() noexcept { return *backend_; }
  /// The loop's time source (deadlines and timers are on it).
  [[nodiscard]] Clock& clock() noexcept { return *clock_; }
  /// clock().now().
  [[nodiscard]] TimePoint now() const noexcept { return clock_->now(); }
  /// The model the loop was made with.
  [[nodiscard]] Model model() const noexcept { return model_; }
  /// The fast paths this loop's backend runs with.
  [[nodiscard]] BackendFeatures features() const noexcept { return backend_->features(); }
  /// How this loop was woken by other threads: MSG_RING from another
  /// io_uring loop, or its eventfd.
  struct WakeupStats {
    std::uint64_t msg_ring = 0;  ///< wakeups by IORING_OP_MSG_RING
    std::uint64_t eventfd = 0;   ///< wakeups through the eventfd
  };
  /// How often other threads woke this loop, and how.
  [[nodiscard]] WakeupStats wakeup_stats() const noexcept;
  /// The loop's counters (lev/stats.hpp): operations by kind, kernel
  /// enters, results per round, CQ overflows, timers, live operations.
  [[nodiscard]] LoopStats stats() const;
  /// Calls `hook` for every operation started, every result delivered and
  /// every coroutine a result resumes (lev/stats.hpp); an empty hook turns
  /// tracing off. Loop thread only.
  void set_trace_hook(TraceHook hook);
  /// Debug builds (NDEBUG unset): an operation started on a thread that
  /// does not own the loop fails at once, saying so (from other threads,
  /// post() to the loop instead). Release builds check nothing.
  void check_thread() const noexcept {
#ifndef NDEBUG
    if (!in_loop_thread()) [[unlikely]]
      detail::wrong_thread();
#endif
  }
  /// True on the loop's owner: the thread that built it, or the one that
  /// last entered run() or block_on() (see the class comment). Any thread.
  [[nodiscard]] bool in_loop_thread() const noexcept {
    return ::pthread_equal(owner_.load(std::memory_order_relaxed), ::pthread_self()) != 0;
  }

  // ---- from any thread -------------------------------------------------

  /// Runs `fn()` on the loop's thread, from its completion queue (never
  /// inside post). Callable from any thread; posts from one thread run in
  /// the order they were made. A loop destroyed first drops what it has
  /// not run. io_uring and epoll loops wake up for it; other backends run
  /// it at their next round.
  template <class F>
  void post(F&& fn) {
    post_node(new detail::RemoteFn<std::decay_t<F>>(std::forward<F>(fn)));
  }
  /// \cond extension
  // For lev's own awaiters (on lev::detail records): left out of the reference.
  /// Hands a node to the loop (what post() does after boxing). Any thread.
  void post_node(detail::RemoteNode* node) noexcept;
  /// Queues a `post` op (kind, ctx and deliver set) for delivery on the
  /// loop thread. Any thread; the op must stay alive until delivered or
  /// retracted.
  void post_op(detail::OpBase& op) noexcept;
  /// Takes back an op given to post_op from another thread that the loop
  /// has not picked up yet; false when it is not waiting there.
  bool retract(detail::OpBase& op) noexcept;
  /// \endcond

  /// `co_await loop.offload(fn)`: runs the blocking `fn()` on a shared
  /// worker pool and resumes the caller on this loop (from its completion
  /// queue) with fn's value, or rethrows what fn threw. It cannot be
  /// cancelled: a caller destroyed early waits for fn to return.
  template <class F>
  detail::OffloadAwaiter<std::decay_t<F>> offload(F&& fn) {
    return detail::OffloadAwaiter<std::decay_t<F>>(*this, std::forward<F>(fn));
  }

  /// While a Hold lives, run() waits for work (posts from other threads)
  /// instead of returning when nothing is live.
  class Hold {
   public:
    /// Holds nothing.
    Hold() = default;
    /// Holds `loop` (loop thread).
    explicit Hold(Loop& loop) noexcept : loop_(&loop) { ++loop.holds_; }
    /// Takes over `o`'s hold.
    Hold(Hold&& o) noexcept : loop_(std::exchange(o.loop_, nullptr)) {}
    /// Lets go of this hold, then takes over `o`'s.
    Hold& operator=(Hold&& o) noexcept {
      if (this != &o) {
        reset();
        loop_ = std::exchange(o.loop_, nullptr);
      }
      return *this;
    }
    /// reset().
    ~Hold() { reset(); }
    /// Lets go: run() may return again once nothing is live (loop thread).
    void reset() noexcept {
      if (loop_) --std::exchange(loop_, nullptr)->holds_;
    }

   private:
    Loop* loop_ = nullptr;
  };
  /// A Hold on this loop.
  [[nodiscard]] Hold hold() noexcept { return Hold(*this); }

  // ---- tasks -----------------------------------------------------------

  /// Starts `task`; it first runs from the completion queue. The handle
  /// awaits its value (or rethrows what it threw) and abort() cancels it;
  /// dropping the handle detaches the task (an exception it throws then
  /// goes to the log hook, lev/log.hpp, and the loop goes on). See
  /// lev/join_handle.hpp.
  template <class T>
  JoinHandle<T> spawn(Task<T> task) {
    auto* st = new detail::JoinState<T>;
    st->loop = this;
    if (task.valid()) {
      detail::TaskPromiseBase& p = task.handle().promise();
      if (!p.loop) p.loop = this;
      // abort() cancels the task's scope; a token it had already does too,
      // through one link per task (its operations then register nothing).
      p.scope = &st->scope;
      if (p.stop_token.stop_possible()) {
        st->link.arm(*this, p.stop_token, &detail::Scope::cancel_thunk, &st->scope);
        p.stop_token = {};
      }
    }
    detail::RootHandle h = detail::root_join<T>(std::move(task), detail::JoinRef<T>(st)).h;
    launch_root(h, true);
    return JoinHandle<T>(st);
  }
  /// spawn() with a cancellation token for the task (see Task::with_stop_token).
  template <class T>
  JoinHandle<T> spawn(Task<T> task, std::stop_token token) {
    return spawn(std::move(task).with_stop_token(std::move(token)));
  }
  /// Runs the loop until `task` ends; returns its value or rethrows.
  /// Throws std::logic_error if the task waits on nothing that can complete.
  template <class T>
  T block_on(Task<T> task) {
    adopt_thread();
    if (task.valid() && !task.handle().promise().loop) task.handle().promise().loop = this;
    detail::BlockResult<T> out;
    detail::RootHandle h = detail::root_body<T>(std::move(task), &out).h;
    launch_root(h, false);
    run_root(h);
    if (out.error) std::rethrow_exception(out.error);
    if constexpr (!std::is_void_v<T>) return std::move(*out.value);
  }

  // ---- operations: awaitables -----------------------------------------
  // Each operation is described once (lev/detail/ops/*.hpp); the forms
  // below are make<D> (awaitable), make_until<D> (with a time limit) and
  // launch_op<D> (callback) of its description.
  /// \cond extension
  // The awaiter types, named by lev's headers; the reference shows each
  // operation's as Awaitable<Result<T>> (docs/doxygen_filter.py).
  /// An operation's awaiter: `co_await` gives `Result<T>`.
  template <class T, detail::OpKind K>
  using Op = detail::OpAwaiter<T, K>;
  /// A byte-moving operation's awaiter: `co_await` gives `Result<std::size_t>`.
  template <detail::OpKind K>
  using Io = detail::OpAwaiter<std::size_t, K>;
  /// The awaiter of the operation described by `D` (lev/detail/ops/*.hpp):
  /// `co_await` gives `Result<D::Result>`.
  template <class D>
  using Awaiter = detail::AwaiterOf<D>;
  /// An Awaiter<D> with a time limit (IoOptions::timeout).
  template <class D>
  using Deadline = detail::DeadlineAwaiter<detail::AwaiterOf<D>>;
  /// A timer's awaiter: `co_await` gives `Result<Expired>`.
  using Sleep = detail::OpAwaiter<Expired, detail::OpKind::timer>;
  /// \endcond
  // Each returns an awaiter holding the operation record; `co_await` it
  // once. The buffer must stay valid until the awaiter resumes.

  /// Completes on the next round; result: success.
  Awaiter<detail::NopOp> nop() { return make<detail::NopOp>(-1); }
  /// Bytes read; 0 = end of file (for a non-empty buffer). offset -1 =
  /// the file position / a stream.
  Awaiter<detail::ReadOp> read(FdRef fd, MutableBuffer buf,
                               std::uint64_t offset = std::uint64_t(-1)) {
    return make<detail::ReadOp>(fd, buf.data, buf.size, offset);
  }
  /// Bytes written (may be short; see write_all).
  Awaiter<detail::WriteOp> write(FdRef fd, ConstBuffer buf,
                                 std::uint64_t offset = std::uint64_t(-1)) {
    return make<detail::WriteOp>(fd, buf.data, buf.size, offset, false);
  }
  /// Writes every byte or fails; the error's `transferred` tells how many
  /// bytes were written before the failure.
  Awaiter<detail::WriteOp> write_all(FdRef fd, ConstBuffer buf,
                                     std::uint64_t offset = std::uint64_t(-1)) {
    return make<detail::WriteOp>(fd, buf.data, buf.size, offset, true);
  }
  /// Bytes received; 0 = the peer shut down its side (EOF).
  Awaiter<detail::RecvOp> recv(FdRef fd, MutableBuffer buf, int flags = 0) {
    return make<detail::RecvOp>(fd, buf.data, buf.size, flags);
  }
  /// Receives into a buffer of the loop's pool, taken only when data has
  /// arrived, and hands it over: a lev::Buffer, empty at end of stream,
  /// back to the pool when dropped. On io_uring the first such recv on `fd`
  /// arms a multishot recv that stays armed while the fd is open (close it
  /// through lev::Fd or loop.close, which let go of it). When every buffer
  /// is out, the recv waits for one (RecvBufferStats::exhausted counts it).
  /// `{.flags}` other than 0 take a one-shot recv; `{.timeout}` bounds the
  /// wait (errc::timed_out); data that comes later waits for the next recv.
  detail::RecvBufferAwaiter recv(FdRef fd, IoOptions o = {}) {
    return detail::RecvBufferAwaiter(*this, recv_registry(), fd.fd, o.flags, o.timeout);
  }
  /// The pool behind recv(fd) and what it has done (zeros before first use).
  [[nodiscard]] RecvBufferStats recv_buffer_stats() const noexcept {
    return recv_ ? recv_->stats() : RecvBufferStats{};
  }
  /// The pool behind DatagramSocket::receive and what it has done (zeros
  /// before first use).
  [[nodiscard]] RecvBufferStats datagram_buffer_stats() const noexcept {
    return dgram_ ? dgram_->stats() : RecvBufferStats{};
  }
  /// Bytes sent (may be short). Never raises SIGPIPE. On the epoll engine
  /// the send is tried when it is awaited, and when the socket takes the
  /// bytes the coroutine goes on without suspending (no other task or
  /// callback runs in between; at most kInlineBudget times a round, so a
  /// task that keeps sending still yields); otherwise it waits in the
  /// queue as every operation does.
  Awaiter<detail::SendOp> send(FdRef fd, ConstBuffer buf, int flags = 0) {
    return make<detail::SendOp>(fd, buf.data, buf.size, flags, false);
  }
  /// Sends every byte or fails (error's `transferred`: bytes sent first).
  Awaiter<detail::SendOp> send_all(FdRef fd, ConstBuffer buf, int flags = 0) {
    return make<detail::SendOp>(fd, buf.data, buf.size, flags, true);
  }
  /// Scatter: bytes read into the iovecs, in order (may be short). The
  /// iovecs and their buffers stay valid until the awaiter resumes.
  Awaiter<detail::ReadvOp> readv(FdRef fd, std::span<const iovec> iov,
                                 std::uint64_t offset = std::uint64_t(-1)) {
    return make<detail::ReadvOp>(fd, iov, offset);
  }
  /// Gather: bytes written from the iovecs (may be short).
  Awaiter<detail::WritevOp> writev(FdRef fd, std::span<const iovec> iov,
                                   std::uint64_t offset = std::uint64_t(-1)) {
    return make<detail::WritevOp>(fd, iov, offset, false);
  }
  /// Every byte of the iovecs (at most 16; copied, so the array may go
  /// once started, not the buffers), resubmitting the rest through
  /// Loop::settle; an error's `transferred` says how many went.
  Awaiter<detail::WritevOp> writev_all(FdRef fd, std::span<const iovec> iov,
                                       std::uint64_t offset = std::uint64_t(-1)) {
    return make<detail::WritevOp>(fd, iov, offset, true, this);
  }
  /// writev_all(), bounded by `o.timeout` (`transferred`: bytes written first).
  Deadline<detail::WritevOp> writev_all(FdRef fd, std::span<const iovec> iov, IoOptions o) {
    return make_until<detail::WritevOp>(o.timeout, fd, iov, std::uint64_t(-1), true, this);
  }
  /// Moves up to `len` bytes from `in` to `out` inside the kernel (one of
  /// them a pipe); offsets -1: none (pipes, sockets). Bytes moved; 0: `in`
  /// is at its end.
  Awaiter<detail::SpliceOp> splice(FdRef in, FdRef out, std::size_t len,
                                   std::int64_t in_offset = -1, std::int64_t out_offset = -1) {
    return make<detail::SpliceOp>(in, in_offset, out.fd, out_offset, len);
  }
  /// splice(), bounded by `o.timeout` (errc::timed_out when it passes
  /// first; on io_uring a loop timer that cancels it, see SpliceOp).
  Deadline<detail::SpliceOp> splice(FdRef in, FdRef out, std::size_t len, IoOptions o,
                                    std::int64_t in_offset = -1, std::int64_t out_offset = -1) {
    return make_until<detail::SpliceOp>(o.timeout, in, in_offset, out.fd, out_offset, len);
  }
  /// read(), bounded by `o.timeout` (errc::timed_out when it passes first).
  Deadline<detail::ReadOp> read(FdRef fd, MutableBuffer buf, IoOptions o,
                                std::uint64_t offset = std::uint64_t(-1)) {
    return make_until<detail::ReadOp>(o.timeout, fd, buf.data, buf.size, offset);
  }
  /// write(), bounded by `o.timeout`.
  Deadline<detail::WriteOp> write(FdRef fd, ConstBuffer buf, IoOptions o,
                                  std::uint64_t offset = std::uint64_t(-1)) {
    return make_until<detail::WriteOp>(o.timeout, fd, buf.data, buf.size, offset, false);
  }
  /// write_all(), bounded by `o.timeout` (`transferred`: bytes written first).
  Deadline<detail::WriteOp> write_all(FdRef fd, ConstBuffer buf, IoOptions o,
                                      std::uint64_t offset = std::uint64_t(-1)) {
    return make_until<detail::WriteOp>(o.timeout, fd, buf.data, buf.size, offset, true);
  }
  /// recv() with `o.flags`, bounded by `o.timeout`.
  Deadline<detail::RecvOp> recv(FdRef fd, MutableBuffer buf, IoOptions o) {
    return make_until<detail::RecvOp>(o.timeout, fd, buf.data, buf.size, o.flags);
  }
  /// send() with `o.flags`, bounded by `o.timeout`.
  Deadline<detail::SendOp> send(FdRef fd, ConstBuffer buf, IoOptions o) {
    return make_until<detail::SendOp>(o.timeout, fd, buf.data, buf.size, o.flags, false);
  }
  /// send_all() with `o.flags`, bounded by `o.timeout` (`transferred`: bytes sent first).
  Deadline<detail::SendOp> send_all(FdRef fd, ConstBuffer buf, IoOptions o) {
    return make_until<detail::SendOp>(o.timeout, fd, buf.data, buf.size, o.flags, true);
  }
  /// accept(), bounded by `o.timeout`.
  Deadline<detail::AcceptOp> accept(FdRef listener, IoOptions o) {
    return make_until<detail::AcceptOp>(o.timeout, listener);
  }
  /// connect(), bounded by `o.timeout`.
  Deadline<detail::ConnectOp> connect(FdRef fd, const SocketAddress& to, IoOptions o) {
    return make_until<detail::ConnectOp>(o.timeout, fd, to);
  }

  /// A new connection (owned, nonblocking, close-on-exec) and its peer.
  Awaiter<detail::AcceptOp> accept(FdRef listener) { return make<detail::AcceptOp>(listener); }
  /// Connects the socket `fd` to `to`; result: success or the connect error
  /// (ECONNREFUSED...).
  Awaiter<detail::ConnectOp> connect(FdRef fd, const SocketAddress& to) {
    return make<detail::ConnectOp>(fd, to);
  }
  /// Shuts down one or both directions of the socket `fd`.
  Awaiter<detail::ShutdownOp> shutdown(FdRef fd, Shutdown how) {
    return shutdown(fd, static_cast<int>(how));
  }
  /// shutdown() with SHUT_RD / SHUT_WR / SHUT_RDWR.
  Awaiter<detail::ShutdownOp> shutdown(FdRef fd, int how) {
    return make<detail::ShutdownOp>(fd, how);
  }
  /// Closes a borrowed fd. A close is never cancelled (a stop leaves it
  /// alone; one the loop's teardown catches before the kernel closes the
  /// fd itself): whatever happens, the fd is closed.
  Awaiter<detail::CloseOp> close(FdRef fd) {
    closing(fd.fd);
    return make<detail::CloseOp>(fd);
  }
  /// Closes an owned fd: `fd` is empty afterwards, whatever the result.
  Awaiter<detail::CloseOp> close(Fd& fd) {
    closing(fd.get());
    return make<detail::CloseOp>(FdRef{fd.release()});
  }
  /// Suspends the task for `delay`: after(delay) for those who read it so.
  /// Result: Expired, or errc::operation_canceled when its token stops.
  Sleep sleep_for(Duration delay) { return after(delay); }
  /// Suspends the task until `deadline`: at(deadline).
  Sleep sleep_until(TimePoint deadline) { return at(deadline); }
  /// Expires after `delay` (zero or negative: on the next round).
  Sleep after(Duration delay) { return at(saturating_add(now(), delay)); }
  /// Expires at `deadline` on the loop's clock (past: on the next round).
  Sleep at(TimePoint deadline) {
    return Sleep(*this, -1,
                                      [deadline](detail::OpBase& op) { op.deadline = deadline; });
  }

  /// Completes when `fd` is readable (or hung up / in error): the poll(2)
  /// revents. `o.timeout` bounds it (errc::timed_out when it passes
  /// first); `o.flags` is not used.
  detail::PollAwaiter readable(FdRef fd, IoOptions o = {}) {
    return detail::PollAwaiter(*this, fd.fd, POLLIN | POLLRDHUP, o.timeout);
  }
  /// Completes when `fd` is writable (or in error): the poll(2) revents;
  /// `o.timeout` bounds it.
  detail::PollAwaiter writable(FdRef fd, IoOptions o = {}) {
    return detail::PollAwaiter(*this, fd.fd, POLLOUT, o.timeout);
  }
  /// readable(fd, {.timeout = timeout}) (the form before IoOptions; an
  /// empty `timeout`: no limit).
  detail::PollAwaiter readable(FdRef fd, std::optional<Duration> timeout) {
    return detail::PollAwaiter(*this, fd.fd, POLLIN | POLLRDHUP, timeout);
  }
  /// writable(fd, {.timeout = timeout}).
  detail::PollAwaiter writable(FdRef fd, std::optional<Duration> timeout) {
    return detail::PollAwaiter(*this, fd.fd, POLLOUT, timeout);
  }

  // ---- event sources (both models; see lev/watchers.hpp) ---------------

  /// Watches `fd` for readiness. Throws std::invalid_argument if this loop
  /// already has a live Watcher on `fd`, or if `fd` is not open.
  Watcher watch(FdRef fd, WatchOptions options);
  /// Calls `cb(signo)` for each delivery of `signo` (through a signalfd).
  Signal signal(int signo, std::function<void(int)> cb);
  /// An eventfd-backed wakeup; `cb` runs once per batch of wake() calls.
  Waker waker(std::function<void()> cb);
  /// Calls `cb(pid, status)` once when the process exits (pidfd); throws
  /// std::system_error if `pid` cannot be watched (no such process).
  PidWatch pid(pid_t pid, std::function<void(pid_t, Result<ExitStatus>)> cb);

  // ---- operations: callback forms --------------------------------------
  // Same operations; `cb(Operation&, Result<T>)` runs once from the queue.
  // For the seed's `on_complete(op, result, data)`, pass lev::bind(fn, data).

  /// nop() in callback form: `cb(Operation&, Result<void>)`.
  template <detail::CompletionHandler<void> F>
  Operation nop(F&& cb) {
    return launch_op<detail::NopOp>(std::forward<F>(cb), -1);
  }
  /// read() in callback form: `cb(Operation&, Result<std::size_t>)`.
  template <detail::CompletionHandler<std::size_t> F>
  Operation read(FdRef fd, MutableBuffer buf, F&& cb, std::uint64_t offset = std::uint64_t(-1)) {
    return launch_op<detail::ReadOp>(std::forward<F>(cb), fd, buf.data, buf.size, offset);
  }
  /// write() in callback form: `cb(Operation&, Result<std::size_t>)`.
  template <detail::CompletionHandler<std::size_t> F>
  Operation write(FdRef fd, ConstBuffer buf, F&& cb, std::uint64_t offset = std::uint64_t(-1)) {
    return launch_op<detail::WriteOp>(std::forward<F>(cb), fd, buf.data, buf.size, offset, false);
  }
  /// write_all() in callback form: `cb(Operation&, Result<std::size_t>)`.
  template <detail::CompletionHandler<std::size_t> F>
  Operation write_all(FdRef fd, ConstBuffer buf, F&& cb, std::uint64_t offset = std::uint64_t(-1)) {
    return launch_op<detail::WriteOp>(std::forward<F>(cb), fd, buf.data, buf.size, offset, true);
  }
  /// recv() in callback form: `cb(Operation&, Result<std::size_t>)`.
  template <detail::CompletionHandler<std::size_t> F>
  Operation recv(FdRef fd, MutableBuffer buf, F&& cb, int flags = 0) {
    return launch_op<detail::RecvOp>(std::forward<F>(cb), fd, buf.data, buf.size, flags);
  }
  /// send() in callback form: `cb(Operation&, Result<std::size_t>)`.
  template <detail::CompletionHandler<std::size_t> F>
  Operation send(FdRef fd, ConstBuffer buf, F&& cb, int flags = 0) {
    return launch_op<detail::SendOp>(std::forward<F>(cb), fd, buf.data, buf.size, flags, false);
  }
  /// send_all() in callback form: `cb(Operation&, Result<std::size_t>)`.
  template <detail::CompletionHandler<std::size_t> F>
  Operation send_all(FdRef fd, ConstBuffer buf, F&& cb, int flags = 0) {
    return launch_op<detail::SendOp>(std::forward<F>(cb), fd, buf.data, buf.size, flags, true);
  }
  /// accept() in callback form: `cb(Operation&, Result<Accepted>)`.
  template <detail::CompletionHandler<Accepted> F>
  Operation accept(FdRef listener, F&& cb) {
    return launch_op<detail::AcceptOp>(std::forward<F>(cb), listener);
  }
  /// connect() in callback form: `cb(Operation&, Result<void>)`.
  template <detail::CompletionHandler<void> F>
  Operation connect(FdRef fd, const SocketAddress& to, F&& cb) {
    return launch_op<detail::ConnectOp>(std::forward<F>(cb), fd, to);
  }
  /// shutdown() in callback form: `cb(Operation&, Result<void>)`.
  template <detail::CompletionHandler<void> F>
  Operation shutdown(FdRef fd, Shutdown how, F&& cb) {
    return shutdown(fd, static_cast<int>(how), std::forward<F>(cb));
  }
  /// shutdown() with SHUT_* in callback form: `cb(Operation&, Result<void>)`.
  template <detail::CompletionHandler<void> F>
  Operation shutdown(FdRef fd, int how, F&& cb) {
    return launch_op<detail::ShutdownOp>(std::forward<F>(cb), fd, how);
  }
  /// close() in callback form: `cb(Operation&, Result<void>)`.
  template <detail::CompletionHandler<void> F>
  Operation close(FdRef fd, F&& cb) {
    closing(fd.fd);
    return launch_op<detail::CloseOp>(std::forward<F>(cb), fd);
  }
  /// after() in callback form: `cb(Operation&, Result<Expired>)`. The delay
  /// counts from the loop's round time (the clock as this round read it,
  /// as libuv's timers do; outside a round, now()), so arming reads no
  /// clock. A 40-byte node of a per-loop slab: a callable of up to 24 bytes
  /// is kept inline, a larger one boxed.
  template <detail::CompletionHandler<Expired> F>
  Operation after(Duration delay, F&& cb) {
    return at(saturating_add(arm_time(), delay), std::forward<F>(cb));
  }
  /// Calls `cb` every `interval` (first at now + interval) until the
  /// Operation is cancelled. A tick that falls behind is skipped, not
  /// bunched: each expiry is reported at most once.
  template <detail::CompletionHandler<Expired> F>
  Operation every(Duration interval, F&& cb) {
    if (interval <= Duration::zero())
      throw std::invalid_argument("lev::Loop::every: the interval must be positive");
    detail::CallbackOp& cb_op = prepare<Expired>(std::forward<F>(cb), detail::OpKind::timer, -1);
    cb_op.op.deadline = saturating_add(now(), interval);
    cb_op.interval = interval;
    return commit(cb_op);
  }
  /// readable() in callback form: `cb(Operation&, Result<unsigned>)` (revents).
  template <detail::CompletionHandler<unsigned> F>
  Operation readable(FdRef fd, F&& cb) {
    return launch_op<detail::PollOp>(std::forward<F>(cb), fd, unsigned{POLLIN | POLLRDHUP});
  }
  /// writable() in callback form: `cb(Operation&, Result<unsigned>)` (revents).
  template <detail::CompletionHandler<unsigned> F>
  Operation writable(FdRef fd, F&& cb) {
    return launch_op<detail::PollOp>(std::forward<F>(cb), fd, unsigned{POLLOUT});
  }
  /// at() in callback form: `cb(Operation&, Result<Expired>)` (see after()).
  template <detail::CompletionHandler<Expired> F>
  Operation at(TimePoint deadline, F&& cb) {
    check_thread();
    detail::TimerSlab& slab = timer_slab();
    detail::TimerNode& n = slab.acquire();
    try {
      n.emplace(std::forward<F>(cb));
      slab.arm(n, deadline, timer_seq_++, round_now_);
    } catch (...) {
      detail::TimerSlab::release(n);
      throw;
    }
    ++live_count_;
    ++counters_.submitted[static_cast<std::size_t>(detail::OpKind::timer)];
    ++counters_.timers_armed;
    if (trace_) [[unlikely]]
      trace_timer(n);
    return Operation(n);
  }

  // ---- for awaiters and extensions (not needed by applications) --------
  /// \cond extension

  /// The awaitable form of the operation described by `D` on `fd`; `a`
  /// are D::setup's arguments. What every awaitable above returns.
  template <class D, class... A>
  Awaiter<D> make(FdRef fd, A&&... a) {
    if constexpr (std::is_same_v<typename D::Args, detail::NoArgs>)
      return Awaiter<D>(*this, fd.fd, detail::setup_tag, std::forward<A>(a)...);
    else
      return Awaiter<D>(*this, fd.fd, std::forward<A>(a)...);
  }
  /// make<D> bounded by `timeout` (none: no limit): errc::timed_out when it
  /// passes first.
  template <class D, class... A>
  Deadline<D> make_until(std::optional<Duration> timeout, FdRef fd, A&&... a) {
    if constexpr (std::is_same_v<typename D::Args, detail::NoArgs>)
      return Deadline<D>(timeout, *this, fd.fd, detail::setup_tag, std::forward<A>(a)...);
    else
      return Deadline<D>(timeout, *this, fd.fd, std::forward<A>(a)...);
  }
  /// The callback form: `cb(Operation&, Result<D::Result>)` runs once from
  /// the completion queue. D's Args live in the pooled callback record.
  template <class D, class F, class... A>
  Operation launch_op(F&& cb, FdRef fd, A&&... a) {
    detail::CallbackOp& cb_op = prepare<typename D::Result>(std::forward<F>(cb), D::kind, fd.fd);
    if constexpr (std::is_same_v<typename D::Args, detail::NoArgs>)
      D::setup(cb_op.op, std::forward<A>(a)...);
    else
      D::setup(cb_op.op, cb_op.template make_args<typename D::Args>(), std::forward<A>(a)...);
    return commit(cb_op);
  }

  /// start() for a fresh op (never started, so no cancel request on it)
  /// whose kind is known where it is started: on io_uring the SQE is filled
  /// without dispatching on the kind.
  template <detail::OpKind K>
  [[gnu::always_inline]] void start(detail::OpBase& op) {
    check_thread();
    if constexpr (K < detail::OpKind::timer) {
      if (!uring_.submit<K>(op)) [[unlikely]]
        backend_->submit(op);  // first: if it throws, nothing is registered
      op.state = detail::OpState::submitted;
      ++live_count_;
      ++counters_.submitted[static_cast<std::size_t>(K)];
      if (trace_) [[unlikely]]
        trace(TraceEvent::op_submitted, op);
    } else {
      start_local(op);
    }
  }
  /// start<K> for a send that may finish at once: on the epoll engine its
  /// syscall is tried now (EpollBackend::try_send says when), and when it
  /// finishes the awaiting coroutine goes on without suspending (false: the
  /// op is done and delivered, never registered; nothing else ran, no
  /// callback, no other coroutine). At most kInlineBudget such results a
  /// round, so that a task whose socket always takes its bytes still
  /// yields to the rest of the loop. True: started as start<K> would.
  template <detail::OpKind K>
  [[gnu::always_inline]] bool start_now(detail::OpBase& op) {
    check_thread();
    if (!uring_.submit<K>(op)) [[unlikely]] {
      if (!reactor_ || inline_left_ == 0) {
        backend_->submit(op);
      } else {
        const int now = detail::reactor_try_send(*reactor_, op);
        if (now == 1) {
          --inline_left_;
          op.state = detail::OpState::delivered;
          ++counters_.submitted[static_cast<std::size_t>(K)];
          ++counters_.completed[static_cast<std::size_t>(K)];
          if (trace_) [[unlikely]]
            trace_now(op);
          return false;
        }
        if (now == 0) {
          backend_->submit(op);
        } else if (op.state == detail::OpState::completed) [[unlikely]] {
          // Held, but queued completed already (epoll refused the fd): it
          // is registered as live, its state left as the engine set it.
          ++live_count_;
          ++counters_.submitted[static_cast<std::size_t>(K)];
          if (trace_) [[unlikely]]
            trace(TraceEvent::op_submitted, op);
          return true;
        }
      }
    }
    op.state = detail::OpState::submitted;
    ++live_count_;
    ++counters_.submitted[static_cast<std::size_t>(K)];
    if (trace_) [[unlikely]]
      trace(TraceEvent::op_submitted, op);
    return true;
  }
  /// Results a round may hand to a coroutine without suspending it.
  static constexpr std::uint32_t kInlineBudget = 128;
  /// Registers `op` as live and hands it to the backend (or timer heap).
  void start(detail::OpBase& op) {
    check_thread();
    op.cancel = detail::Cancel::none;
    if (op.kind < detail::OpKind::timer) [[likely]] {
      if (!uring_.submit(op)) [[unlikely]]
        backend_->submit(op);  // first: if it throws, nothing is registered
      op.state = detail::OpState::submitted;
      ++live_count_;
      ++counters_.submitted[static_cast<std::size_t>(op.kind)];
      if (trace_) [[unlikely]]
        trace(TraceEvent::op_submitted, op);
      return;
    }
    start_local(op);
  }
  /// Registers a `post` op that another thread will complete through
  /// post_op (offload). The loop waits for it, even at teardown.
  void begin_external(detail::OpBase& op) noexcept {
    op.state = detail::OpState::submitted;
    ++live_count_;
    ++external_;
    ++counters_.submitted[static_cast<std::size_t>(op.kind)];
  }
  /// Registers `op` as live and queues it completed with ECANCELED (its
  /// token was stopped before it started; `why` deadline: an expired
  /// IdleDeadline, read as timed_out).
  void start_cancelled(detail::OpBase& op,
                       detail::Cancel why = detail::Cancel::requested) noexcept;
  /// Registers `op` as live and queues it completed with `res` (a negative
  /// errno: a continuation that could not be submitted ends with why).
  void start_failed(detail::OpBase& op, int res) noexcept;
  /// Requests cancellation of a live op; it still completes exactly once.
  /// The request is recorded on the op (the first one wins: `why` says
  /// whether it ends as operation_canceled or timed_out). A final result
  /// already queued wins over it; an intermediate one (a partial send of
  /// send_all, a readiness step of recv(fd)) does not continue: the op is
  /// delivered as cancelled, with the bytes already moved. Loop thread only.
  void cancel(detail::OpBase& op, detail::Cancel why = detail::Cancel::requested) noexcept;
  /// For an awaiter destroyed before delivery: cancels `op`, waits until it
  /// has completed, releases its resource and unregisters it.
  void abandon(detail::OpBase& op) noexcept;
  /// Like abandon, for an op whose owner no longer wants it (a deadline
  /// timer whose operation finished first): O(log n) for an armed timer.
  void disarm(detail::OpBase& op) noexcept;

  /// \endcond

 private:
  friend void detail::link_root(Loop&, detail::RootPromise&) noexcept;
  friend void detail::unlink_root(Loop&, detail::RootPromise&) noexcept;
  friend struct detail::WatcherState;
  friend struct detail::SignalHub;
  friend struct detail::Source;
  friend struct detail::Inbox;
  friend struct detail::CloseLink;

  template <class T, class F>
  detail::CallbackOp& prepare(F&& cb, detail::OpKind kind, int fd) {
    detail::CallbackOp& cb_op = pool_->acquire(*this);
    cb_op.template emplace<T>(std::forward<F>(cb));
    cb_op.op.kind = kind;
    cb_op.op.fd = fd;
    return cb_op;
  }
  Operation commit(detail::CallbackOp& cb_op) {
    Operation handle(cb_op);
    start(cb_op.op);
    return handle;
  }
  detail::TimerSlab& timer_slab() {
    if (!tslab_) [[unlikely]] {
      tslab_ = new detail::TimerSlab;
      tslab_->queue = &ready_;
    }
    return *tslab_;
  }
  // The clock for arming a callback timer: the round's reading when this
  // round took one, else a fresh one.
  TimePoint arm_time() {
    if (stamp_round_ != rounds_) [[unlikely]] {
      round_now_ = clock_->now();
      stamp_round_ = rounds_;
    }
    return round_now_;
  }
  void trace_timer(const detail::TimerNode& n) const;
  detail::RecvRegistry& recv_registry() {
    if (!recv_) [[unlikely]]
      make_recv_registry();
    return *recv_;
  }
  void make_recv_registry();
  detail::RecvRegistry& datagram_registry() {
    if (!dgram_) [[unlikely]]
      make_datagram_registry();
    return *dgram_;
  }
  void make_datagram_registry();
  // Every live op waits for no one run() waits for: unread multishots, and
  // the ops of sources that do not keep the loop alive.
  [[nodiscard]] bool only_idle_ops() const noexcept;
  friend class net::DatagramSocket;
  /// `fd` is about to be closed by this loop: its multishot recv and epoll
  /// registrations go (same as lev::Fd does).
  void closing(int fd) noexcept;
  /// Makes the calling thread the owner (run, block_on, ~Loop): closes
  /// made on it reach this loop at once from now on (core/fd_hooks.hpp).
  void adopt_thread() noexcept;
  void launch_root(detail::RootHandle h, bool detached);
  void run_root(detail::RootHandle h);
  void start_local(detail::OpBase& op);
  bool settle(detail::OpBase& op) noexcept;
  void resubmit(detail::OpBase& op);
  std::size_t take_inbox();
  [[gnu::noinline]] std::size_t take_inbox_slow();
  void drop_queued() noexcept;
  void wait_inbox();
  std::size_t fire_timers(TimePoint now);
  /// The wait's slack (LoopOptions::timer_slack) on this thread.
  void note_thread() noexcept;
  void prefetch_ahead() const noexcept;
  void trace(TraceEvent event, const detail::OpBase& op) const;
  [[gnu::cold]] void trace_now(const detail::OpBase& op) const;  // submitted, completed

  Model model_;
  std::shared_ptr<CompletionBackend> backend_;
  std::shared_ptr<Clock> clock_;
  CompletionQueue ready_;
  detail::TimerHeap timers_;
  std::uint64_t timer_seq_ = 0;
  std::size_t live_count_ = 0;
  detail::LoopCounters counters_;
  std::unique_ptr<TraceHook> trace_;  // null: no tracing (one test per event)
  detail::UringFastPath uring_{};
  std::unique_ptr<detail::FdSet> watched_fds_;  // fds with a Watcher (made by the first)
  std::shared_ptr<detail::SignalHub> signals_;
  detail::Source* sources_ = nullptr;  // live event sources, detached at teardown
  detail::RootPromise* roots_ = nullptr;
  detail::CallbackPool* pool_ = nullptr;
  detail::Inbox* inbox_ = nullptr;  // reference counted (runtime/core/inbox.hpp)
  detail::CloseLink* close_link_ = nullptr;     // what closes elsewhere tell this loop
  std::unique_ptr<detail::RecvRegistry> recv_;  // made by the first recv(fd)
  std::unique_ptr<detail::RecvRegistry> dgram_;  // made by the first DatagramSocket::receive
  std::uint32_t recv_count_ = 0;
  std::uint32_t recv_size_ = 0;
  std::uint32_t dgram_count_ = 0;
  std::uint32_t dgram_size_ = 0;
  UringBackend* uring_backend_ = nullptr;  // set when the backend is io_uring
  EpollBackend* reactor_ = nullptr;        // set when the backend is epoll (start_now)
  std::uint32_t inline_left_ = kInlineBudget;  // start_now's budget, refilled each round
  bool links_timeouts_ = false;            // the backend takes {.timeout} as a linked timeout
  friend bool detail::loop_links_timeouts(Loop&) noexcept;
  friend TimePoint detail::loop_round_time(const Loop&) noexcept;
  // The clock as the last round read it (a round reads it when a timer is
  // armed): IdleDeadline's activity stamps, a load instead of a clock call.
  TimePoint round_now_{};
  Duration timer_slack_{};                 // added to a positive wait (io_uring)
  std::optional<Duration> fixed_slack_{};  // LoopOptions::timer_slack
  std::uint64_t rounds_ = 0;                  // run_once calls ended
  std::uint64_t stamp_round_ = UINT64_MAX;    // round_now_ is this round's (== rounds_)
  detail::TimerSlab* tslab_ = nullptr;        // callback timers (after/at), made on first use
  std::size_t holds_ = 0;
  std::size_t external_ = 0;      // begin_external ops not yet back
  std::size_t weak_sources_ = 0;  // attached sources with keeps_alive off
  // pthread_self() of the owner (std::thread::id would need <thread>).
  std::atomic<pthread_t> owner_{::pthread_self()};
  std::atomic<bool> stop_{false};
  bool running_ = false;
  bool walking_ = false;  // run_once is walking the CQ ring itself (UringBackend::poll_direct)
};

/// \cond detail
namespace detail {
inline void start_op(Loop& loop, OpBase& op) { loop.start(op); }
inline void start_cancelled_op(Loop& loop, OpBase& op, Cancel why) noexcept {
  loop.check_thread();
  loop.start_cancelled(op, why);
}
inline TimePoint loop_round_time(const Loop& loop) noexcept { return loop.round_now_; }

template <class T, OpKind K>
template <bool Linked>
[[gnu::always_inline]] inline bool OpAwaiter<T, K>::suspend(std::coroutine_handle<> h,
                                                            CancelFrom from) {
  op_.ctx = h.address();
  op_.deliver = nullptr;  // the loop resumes ctx directly
  if (from.scope) {
    if (from.scope->stopped) [[unlikely]] {
      loop_->check_thread();  // the one start that does not go through start()
      loop_->start_cancelled(op_);
      return true;
    }
    if (!from.token) [[likely]] {
      if (!start<Linked>()) return false;  // done at once: nothing to cancel
      // The task waits on this op now: its scope's cancel cancels it.
      scope_ = from.scope;
      from.scope->wait_fn = &OpAwaiter::on_cancel;
      from.scope->wait_arg = this;
      return true;
    }
  } else if (!from.token) {
    return start<Linked>();
  }
  return suspend_with_token<Linked>(from);
}

template <class T, OpKind K>
template <bool Linked>
bool OpAwaiter<T, K>::suspend_with_token(CancelFrom from) {
  if (from.token->stop_requested()) {
    loop_->check_thread();
    loop_->start_cancelled(op_);
    return true;
  }
  if (!start<Linked>()) return false;  // done at once: no stop callback
  if (from.scope) {
    scope_ = from.scope;
    from.scope->wait_fn = &OpAwaiter::on_cancel;
    from.scope->wait_arg = this;
  }
  stop_.arm(*loop_, *from.token, &OpAwaiter::on_cancel, this);
  return true;
}

template <class T, OpKind K>
template <bool Linked>
[[gnu::always_inline]] inline bool OpAwaiter<T, K>::start() {
  if constexpr (Linked) {
    loop_->start(op_);  // the backend submits the op and its linked timeout together
    return true;
  } else if constexpr (K == OpKind::send) {
    return loop_->template start_now<K>(op_);
  } else {
    loop_->template start<K>(op_);
    return true;
  }
}
}  // namespace detail
/// \endcond

}  // namespace lev
