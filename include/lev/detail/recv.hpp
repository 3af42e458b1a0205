#pragma once
/// \file
/// `co_await loop.recv(fd)`: receives into a buffer of the loop's pool and
/// hands it over as an owned lev::Buffer.
///
/// On io_uring with multishot recv, the first such recv on an fd arms one
/// multishot recv (one SQE for the connection's life); results arriving
/// while nobody waits are kept in order for the next recv. An idle
/// connection holds no buffer: the kernel takes one only when data comes.
/// Elsewhere each recv is one op whose buffer the backend takes only when
/// the socket is readable. When the pool runs dry (ENOBUFS) the recv waits
/// for a buffer to come back and tries again: no data is lost, and each
/// time is counted in RecvBufferStats::exhausted.

#include <sys/socket.h>

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <vector>

#include "lev/buffer.hpp"
#include "lev/clock.hpp"
#include "lev/detail/buffer_pool.hpp"
#include "lev/detail/op.hpp"
#include "lev/detail/ops/datagram.hpp"
#include "lev/detail/stop.hpp"
#include "lev/error.hpp"
#include "lev/op_types.hpp"
#include "lev/task.hpp"

namespace lev {
class Loop;
class CompletionBackend;

/// What `co_await loop.recv(fd)` has done on this loop so far.
struct RecvBufferStats {
  std::uint32_t buffers = 0;      ///< pool size (LoopOptions::recv_buffer_count)
  std::uint32_t buffer_size = 0;  ///< bytes per buffer
  std::uint32_t in_use = 0;       ///< held by the program now (Buffers alive, results queued)
  std::uint32_t peak_in_use = 0;
  std::uint64_t exhausted = 0;  ///< recvs that found no free buffer (ENOBUFS), then waited
  std::uint64_t arms = 0;       ///< multishot recvs armed
  std::uint64_t paused = 0;     ///< multishots stopped because results piled up unread
  /// Unread results copied out of the pool so that a reader of another
  /// connection, left without a buffer, could go on.
  std::uint64_t copied = 0;
  bool kernel_ring = false;     ///< buffers come from the kernel's provided-buffer ring
  bool multishot = false;       ///< one multishot recv per connection
};
}  // namespace lev

namespace lev::detail {

class RecvBufferAwaiter;
class RecvRegistry;

/// One fd's multishot recv and the results nobody has taken yet.
struct RecvState {
  struct Item {
    int res;
    std::uint32_t flags;
    /// The pool its buffer is in when it is not the registry's: copied
    /// out to let a starved reader go on (RecvRegistry::copy_out_unread).
    BufferPool* copy = nullptr;
  };
  RecvRegistry* reg = nullptr;
  int fd = -1;
  OpBase op;
  msghdr msg{};  // datagrams: the multishot recvmsg's layout (name room, no control)
  BufferWaiter starved;  // ended with ENOBUFS: re-armed when a buffer is back
  RecvBufferAwaiter* waiter = nullptr;
  std::vector<Item> items;  // capacity kept: no allocation in steady state
  std::size_t head = 0;
  bool closing = false;

  [[nodiscard]] bool has_items() const noexcept { return head < items.size(); }
  [[nodiscard]] bool live() const noexcept {
    return static_cast<unsigned>(op.state) - 1u < 2u;  // submitted or completed
  }
  Item pop() noexcept {
    Item it = items[head++];
    if (head == items.size()) {
      items.clear();
      head = 0;
    }
    return it;
  }
};

/// The loop's receive pool and its per-fd multishot states.
class RecvRegistry {
 public:
  enum class Mode : std::uint8_t { multishot, select, plain };
  /// What the pool receives: stream bytes (recv, buffer group 0) or whole
  /// datagrams with their sender (recvmsg, group 1; each buffer laid out as
  /// io_uring's multishot recvmsg lays it out, see DatagramLayout).
  enum class Flavor : std::uint8_t { stream, datagram };
  /// Results kept for an fd before its multishot is paused (cancelled,
  /// re-armed by the next recv): a reader that stops reading lets TCP
  /// push back instead of draining the pool. At most a quarter of the
  /// pool (at least one), so that with a small pool one fd that is not
  /// read holds at most a quarter of it (see unread_cap()); when a quarter
  /// of the pool or less is free, one unread result is enough to pause.
  static constexpr std::size_t kMaxQueued = 16;

  RecvRegistry(Loop& loop, CompletionBackend& backend, std::uint32_t count, std::uint32_t size,
               Flavor flavor = Flavor::stream);
  ~RecvRegistry();
  RecvRegistry(const RecvRegistry&) = delete;
  RecvRegistry& operator=(const RecvRegistry&) = delete;

  [[nodiscard]] RecvState* find(int fd) const noexcept {
    const auto i = static_cast<std::size_t>(fd);
    return i < by_fd_.size() ? by_fd_[i] : nullptr;
  }
  RecvState& get(int fd);
  void arm(RecvState& st) noexcept;
  /// `fd` is being closed: its multishot is cancelled and its state let go.
  void closing(int fd) noexcept;
  [[nodiscard]] Mode mode() const noexcept { return mode_; }
  [[nodiscard]] Flavor flavor() const noexcept { return flavor_; }
  /// The op a receive of this registry is (recv or recvmsg).
  [[nodiscard]] OpKind op_kind() const noexcept {
    return flavor_ == Flavor::stream ? OpKind::recv : OpKind::recvmsg;
  }
  /// Multishots started whose end is not yet delivered.
  [[nodiscard]] std::size_t armed() const noexcept { return armed_; }
  /// True when some fd's receive waits for a result.
  [[nodiscard]] bool has_waiter() const noexcept;
  [[nodiscard]] BufferPool& pool() noexcept { return *pool_; }
  [[nodiscard]] Loop& loop() noexcept { return loop_; }
  [[nodiscard]] RecvBufferStats stats() const noexcept;

  /// Hands a result to the fd's waiter, or keeps it for the next recv.
  void deliver(RecvState& st, int res, std::uint32_t flags) noexcept;

 private:
  static const Continuation kSteps;
  static bool starved_end(const OpBase& op) noexcept;
  static void rearm(OpBase& op) noexcept;
  static void on_more(OpBase& op, int res, std::uint32_t flags) noexcept;
  static void on_end(OpBase& op);
  static void on_buffer(BufferWaiter& w) noexcept;
  void release(RecvState& st) noexcept;
  /// A reader waits for a buffer and the pool is empty: the buffers that
  /// other fds' unread results hold are copied out (to a pool of their
  /// own, freed with the last of them) and given back. Returns how many.
  std::size_t copy_out_unread(const RecvState& starved) noexcept;
  [[nodiscard]] std::size_t unread_cap() const noexcept;

  Loop& loop_;
  CompletionBackend& backend_;
  BufferPool* pool_;
  Mode mode_;
  Flavor flavor_;
  std::vector<RecvState*> by_fd_;
  std::vector<RecvState*> spare_;  // recycled states
  std::vector<RecvState*> dying_;  // closed, their multishot not yet ended
  std::size_t states_ = 0;         // states made
  std::size_t armed_ = 0;          // multishots started, their end not yet delivered
  std::uint64_t arms_ = 0;
  std::uint64_t paused_ = 0;
  std::uint64_t copied_ = 0;
};

/// The awaiter of `loop.recv(fd)` / `loop.recv(fd, {.timeout})`: a
/// Result<Buffer>, empty at end of stream.
class [[nodiscard]] RecvBufferAwaiter {
 public:
  RecvBufferAwaiter(Loop& loop, RecvRegistry& reg, int fd, int flags,
                    std::optional<Duration> timeout) noexcept
      : loop_(&loop), reg_(&reg), fd_(fd), flags_(flags), timeout_(timeout) {
    op_.fd = fd;
    op_.kind = OpKind::post;
  }
  /// Before it is awaited only.
  RecvBufferAwaiter(RecvBufferAwaiter&& o) noexcept
      : loop_(o.loop_),
        reg_(o.reg_),
        fd_(o.fd_),
        flags_(o.flags_),
        timeout_(o.timeout_) {
    op_.fd = fd_;
    op_.kind = OpKind::post;
  }
  RecvBufferAwaiter(const RecvBufferAwaiter&) = delete;
  RecvBufferAwaiter& operator=(const RecvBufferAwaiter&) = delete;
  ~RecvBufferAwaiter() {
    if (st_ || buffer_wait_.queued || taken_ >= 0 || static_cast<unsigned>(op_.state) - 1u < 2u ||
        timer_live()) [[unlikely]]
      finish();
    stop_.disarm();
  }

  /// Cancels the wait when `token` is stopped (errc::operation_canceled;
  /// data that arrives later waits for the next recv).
  StopOn<RecvBufferAwaiter> stop_on(std::stop_token token) && noexcept {
    return {std::move(*this), std::move(token)};
  }
  /// Ends the wait while it is awaited (IdleDeadline: Cancel::deadline,
  /// errc::timed_out); data that arrives later waits for the next recv.
  void cancel_for(Cancel why) noexcept {
    if (waiting()) interrupt(why);
  }

  bool await_ready() noexcept {
    if (reg_->mode() != RecvRegistry::Mode::multishot || flags_ != 0) return false;
    st_ = reg_->find(fd_);
    ready_path_ = st_ && st_->has_items();
    return ready_path_;
  }
  template <class P>
  void await_suspend(std::coroutine_handle<P> h) {
    suspend(h, task_cancel(h));
  }
  Result<Buffer> await_resume() {
    stop_.disarm();
    if (timer_live()) [[unlikely]]
      disarm_timer();
    int res;
    std::uint32_t flags;
    BufferPool* pool = &reg_->pool();
    if (ready_path_) {
      ready_path_ = false;
      const RecvState::Item it = std::exchange(st_, nullptr)->pop();
      res = it.res;
      flags = it.flags;
      if (it.copy) [[unlikely]]
        pool = it.copy;
    } else {
      res = op_.res;
      flags = op_.cqe_flags;
      if (op_.select == kSelectOnce && op_.kind != OpKind::poll && res > 0 &&
          (flags & IORING_CQE_F_BUFFER))
        reg_->pool().claim();
      op_.select = kSelectNone;  // the buffer is the result's now
    }
    if (res > 0 && (flags & IORING_CQE_F_BUFFER) && taken_ < 0) [[likely]]
      return Buffer::adopt(*pool, static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT),
                           static_cast<std::size_t>(res));
    return make(res, flags);
  }

 protected:
  /// Starts the wait; `from` (its scope, its token) cancels it.
  void suspend(std::coroutine_handle<> h, CancelFrom from);

 private:
  friend class RecvRegistry;
  static const Continuation kSteps;
  static bool is_step(const OpBase& op) noexcept;
  static void next_step(OpBase& op) noexcept;
  void start_one();  // select: one recv op; plain: wait until readable
  void recv_now();   // plain: readable, so take a buffer and recv
  void recvmsg_now(std::uint16_t id) noexcept;  // plain datagrams: recvmsg at once
  void go_on(bool recv) noexcept;
  void post_result(int res, Cancel why) noexcept;
  void hand(int res, std::uint32_t flags) noexcept;
  void interrupt(Cancel why) noexcept;
  void finish() noexcept;
  void disarm_timer() noexcept;
  [[nodiscard]] bool timer_live() const noexcept {
    return timer_ && static_cast<unsigned>(timer_->state) - 1u < 2u;  // submitted or completed
  }
  [[nodiscard]] bool waiting() const noexcept {
    return st_ != nullptr || buffer_wait_.queued || static_cast<unsigned>(op_.state) - 1u < 2u;
  }
  Result<Buffer> make(int res, std::uint32_t flags);
  static void on_delivered(OpBase& op);
  static void on_buffer(BufferWaiter& w) noexcept;
  static void on_deadline(OpBase& t);

  Loop* loop_;
  RecvRegistry* reg_;
  RecvState* st_ = nullptr;  // multishot: the fd's state while waiting on it
  int fd_;
  int flags_;
  std::optional<Duration> timeout_;
  OpBase op_;     // the recv (select, plain) or the wakeup post (multishot)
  std::optional<OpBase> timer_;  // the deadline, made only with a timeout
  StopLink stop_;
  BufferWaiter buffer_wait_;  // plain / select: the pool was empty
  void* coro_ = nullptr;
  int taken_ = -1;  // plain: the buffer given to the op
  bool ready_path_ = false;
};

/// The awaiter of DatagramSocket::receive: a RecvBufferAwaiter on the
/// loop's datagram pool whose buffer is read as a DatagramLayout.
class [[nodiscard]] DatagramReceiveAwaiter : public RecvBufferAwaiter {
 public:
  using RecvBufferAwaiter::RecvBufferAwaiter;

  /// Cancels the wait when `token` is stopped (errc::operation_canceled;
  /// a datagram that arrives later waits for the next receive).
  StopOn<DatagramReceiveAwaiter> stop_on(std::stop_token token) && noexcept {
    return {std::move(*this), std::move(token)};
  }
  Result<ReceivedDatagram> await_resume() {
    Result<Buffer> got = RecvBufferAwaiter::await_resume();
    if (!got) return got.error();
    Buffer& b = *got;
    ReceivedDatagram d;
    io_uring_recvmsg_out out{};
    if (b.empty()) return d;  // nothing in the pool (a socket shut down)
    if (!DatagramLayout::parse(b.data(), b.size(), out, d.peer))
      return Error::from_errno(EPROTO, "recvmsg", -1);
    d.truncated = (out.flags & MSG_TRUNC) != 0;
    b.remove_prefix(DatagramLayout::header);
    d.data = std::move(b);
    return d;
  }
};

}  // namespace lev::detail
