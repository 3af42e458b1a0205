#pragma once
// The epoll engine's file workers: blocking work epoll cannot wait for (a
// regular file is always "ready"; a path has no fd) runs here, at most
// `size` ops at once, so that N reads in flight on the reactor are N
// syscalls in flight. Results come back to the loop thread through
// take_done(); `done_fd` (an eventfd in the engine's epoll set) wakes it.
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

  /// The eventfd written when a result is ready (-1 before first use).
  [[nodiscard]] int done_fd() const noexcept { return done_fd_; }
  /// Queues `op` (loop thread). Throws std::system_error when no worker
  /// can be started.
  void push(detail::OpBase& op);
  /// Takes `op` back if no worker has started it (loop thread): true then.
  /// One already running completes with its result (a syscall on a
  /// regular file cannot be interrupted).
  bool cancel(detail::OpBase& op);
  /// The ops finished since the last call, results in op.res (loop thread).
  std::vector<detail::OpBase*> take_done();
  /// Takes back every op no worker has started (teardown).
  std::vector<detail::OpBase*> take_queued();
  [[nodiscard]] unsigned size() const noexcept { return size_; }

 private:
  void run();

  unsigned size_;
  int done_fd_ = -1;
  std::mutex mutex_;
  std::condition_variable work_;
  std::deque<detail::OpBase*> queue_;
  std::vector<detail::OpBase*> done_;
  std::vector<std::thread> threads_;
  unsigned idle_ = 0;
  bool stopping_ = false;
  std::atomic<bool> pending_{false};  // done_ may be non-empty
};

}  // namespace lev
