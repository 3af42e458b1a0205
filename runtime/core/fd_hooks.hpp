#pragma once
// What lev does when it closes an fd (lev::Fd, Loop::close, a result nobody
// took): every loop of the process that keeps state for that number lets
// it go before the number can be reused, whichever thread built, runs or
// destroys the loop and whichever thread closes. The state is the loop's:
// epoll registrations and readiness (epoll forgets a closed file silently,
// so a new fd with the number would inherit them), the multishot recv of
// its receive registries (the kernel's request would hold the file open),
// and ops on the fd waiting for, or running on, the epoll file workers.
//
// - A loop owned by the closing thread (Loop::in_loop_thread) forgets at
//   once: ops parked on the fd end with ECANCELED.
// - A loop owned by another thread is not touched from here: when it had
//   marked the number (it keeps state for it), the number goes to that
//   loop's close inbox, applied at its next round, before its backend
//   tries anything and before anything is delivered. Ops parked on the
//   number then end with ECANCELED; ops submitted since are left alone
//   (the loop may already use a new file with the number). A loop that
//   learns of such a close through itself (a post, a completion) has it
//   applied before that reaches its code; one that learns of it another
//   way (a flag it polls) may find its multishot recv of the old file
//   still in its receive registry until its next round (io_uring only).
// - File-worker ops on the fd are settled at once, from any thread (their
//   queue is thread-safe): queued ones end with ECANCELED, a running one is
//   waited for, so that no worker syscall reaches the next file with the
//   number.
// Ownership moves (run/block_on on another thread, ~Loop) take the list's
// lock exclusively, closes take it shared: a loop is never touched by two
// threads at once. Nothing is paid per operation: a loop marks a number
// once when it starts keeping state for it, and reads its inbox flag once
// per round. See docs/files.md.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace lev {
class Loop;
class EpollBackend;
}  // namespace lev

namespace lev::detail {

/// `fd` is about to be closed by lev (see the file comment). Any thread.
void fd_closing(int fd) noexcept;

/// The fd numbers one loop keeps state for: marked by the loop's thread,
/// tested and cleared by a thread closing one. Lock-free; pages of marks
/// are made on demand and freed with the set.
class FdMarks {
 public:
  FdMarks() = default;
  ~FdMarks();
  FdMarks(const FdMarks&) = delete;
  FdMarks& operator=(const FdMarks&) = delete;

  /// The loop keeps state for `fd` (the loop's thread).
  void mark(int fd) noexcept;
  /// Clears the mark of `fd`; true when it was set (any thread). Past the
  /// numbers covered, or when a page could not be had, every fd counts as
  /// marked (a close then costs the loop a look, never a missed close).
  bool take(int fd) noexcept;

 private:
  using Word = std::atomic<std::uint64_t>;
  static constexpr std::size_t kPageBits = std::size_t{1} << 16;  // 8 KiB of marks
  static constexpr std::size_t kPages = 1024;                     // fds below 2^26
  std::atomic<Word*> pages_[kPages]{};
  std::atomic<bool> all_{false};
};

/// A loop's entry in the process's list of loops a close must reach: its
/// marks and its close inbox. Made and listed by the Loop's constructor,
/// delisted and freed at the end of its destructor.
struct CloseLink {
  explicit CloseLink(Loop& l) noexcept : loop(l) {}

  Loop& loop;
  EpollBackend* epoll = nullptr;  // the loop's engine, when it is the epoll one
  FdMarks marks;
  std::mutex mu;            // guards `closed`
  std::vector<int> closed;  // closes made on other threads, not yet applied
  std::atomic<bool> pending{false};
  CloseLink* prev = nullptr;  // the process's list (its lock)
  CloseLink* next = nullptr;

  /// Puts this loop in the process's list / takes it out. Any thread.
  void enlist() noexcept;
  void delist() noexcept;
  /// Makes the calling thread `loop`'s owner (what run() and block_on() do
  /// on entry, and ~Loop).
  static void adopt(Loop& loop) noexcept;
  /// `loop` keeps state for `fd` from now on (the loop's thread).
  static void mark(Loop& loop, int fd) noexcept { loop_link(loop).marks.mark(fd); }
  /// Applies the closes made on other threads (the loop's thread, once per
  /// round when `pending` is set).
  void apply() noexcept;
  /// A close of `fd` seen from the calling thread (under the list's lock).
  void closing(int fd) noexcept;

 private:
  static CloseLink& loop_link(Loop& loop) noexcept;
  /// The loop forgets `fd` (its owner thread). `here`: closed now, on
  /// this thread (see EpollBackend::closing); not `here`: applying a
  /// close made on another thread.
  void forget(int fd, bool here) noexcept;
};

}  // namespace lev::detail
