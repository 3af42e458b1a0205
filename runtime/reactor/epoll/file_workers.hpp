#pragma once
// The epoll engine's file workers: blocking work epoll cannot wait for (a
// regular file is always "ready"; a path has no fd) runs here, at most
// `size` ops at once, so that N reads in flight on the reactor are N
// syscalls in flight. Results come back to the loop thread through
// take_done(); `done_fd` (an eventfd in the engine's epoll set) wakes it.
// A close of an fd settles the ops on it from any thread (closing()).
// Not a public header.
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "lev/detail/op.hpp"

namespace lev {

class FileWorkers {
 public:
  /// Threads start on first use, up to `size` (at least 1).
  explicit FileWorkers(unsigned size);
  /// Waits for the running ops; queued ones must have been cancelled.
  ~FileWorkers();
  FileWorkers(const FileWorkers&) = delete;
  FileWorkers& operator=(const FileWorkers&) = delete;

  /// The eventfd written when a result is ready (-1 before open_done_fd).
  [[nodiscard]] int done_fd() const noexcept { return done_fd_; }
  /// Makes done_fd (loop thread, before the first push). Throws
  /// std::system_error when it cannot (EMFILE...); it is tried again then.
  int open_done_fd();
  /// Queues `op` (loop thread; done_fd is open). Throws std::system_error
  /// or std::bad_alloc, with `op` not queued, when no worker can take it
  /// (none could be started).
  void push(detail::OpBase& op);
  /// Takes `op` back if no worker has started it (loop thread): true then.
  /// One already running completes with its result (a syscall on a
  /// regular file cannot be interrupted).
  bool cancel(detail::OpBase& op);
  /// `fd` is about to be closed (any thread): ops on it that no worker has
  /// started end with ECANCELED (they come back through take_done); this
  /// returns once no worker runs an op on it.
  void closing(int fd) noexcept;
  /// The ops finished since the last call, results in op.res (loop
  /// thread); `out` is cleared first (its storage is reused).
  void take_done(std::vector<detail::OpBase*>& out);
  /// Takes back every op no worker has started (teardown).
  std::vector<detail::OpBase*> take_queued();
  [[nodiscard]] unsigned size() const noexcept { return size_; }

 private:
  void run();

  unsigned size_;
  int done_fd_ = -1;
  std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable finished_;  // a running op ended (closing() waits)
  std::deque<detail::OpBase*> queue_;
  std::vector<detail::OpBase*> running_;  // capacity size_: never allocates
  std::vector<detail::OpBase*> done_;     // capacity for every op held
  std::vector<std::thread> threads_;
  unsigned idle_ = 0;
  unsigned close_waiters_ = 0;
  bool stopping_ = false;
  std::atomic<std::size_t> held_{0};  // queued + running: closing() skips when 0
  std::atomic<bool> pending_{false};  // done_ may be non-empty
};

}  // namespace lev
