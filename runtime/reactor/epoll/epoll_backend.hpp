#pragma once
// The epoll engine: every operation is readiness plus a nonblocking
// syscall. Serves Model::reactor and the proactor's "auto" fallback.
// Not a public header.
#include <cstddef>
#include <memory>
#include <vector>

#include "lev/backend.hpp"
#include "reactor/epoll/file_workers.hpp"

namespace lev {

class EpollBackend final : public CompletionBackend {
 public:
  /// Throws std::system_error when epoll_create1 fails. `file_workers`:
  /// how many file operations run at once (LoopOptions::file_workers).
  explicit EpollBackend(unsigned file_workers = 4);
  ~EpollBackend() override;
  EpollBackend(const EpollBackend&) = delete;
  EpollBackend& operator=(const EpollBackend&) = delete;

  void attach(CompletionQueue& queue) override { queue_ = &queue; }
  [[nodiscard]] std::string_view name() const noexcept override { return "epoll"; }
  /// Queues `op`; its syscall is first tried at the next poll(). The
  /// first op on an fd puts it in O_NONBLOCK mode (the syscalls must never
  /// block the loop); this changes the open file description's flags.
  void submit(detail::OpBase& op) override;
  void cancel(detail::OpBase& op) override;
  void cancel_all() override;
  std::size_t poll(std::optional<Duration> timeout) override;
  [[nodiscard]] std::size_t in_flight() const noexcept override { return held_; }
  [[nodiscard]] BackendStats stats() const noexcept override { return stats_; }
  void set_wakeup_fd(int fd) override;
  /// `fd` is about to be closed: ops parked on it end with ECANCELED and its
  /// state is forgotten (called through detail::fd_closing).
  void closing(int fd) noexcept;
  /// Recv ops with `select` take a pool buffer when the socket is readable.
  bool provide_buffers(detail::BufferPool& pool) override {
    (void)pool;
    return true;
  }

 private:
  // Per-fd readiness, learned edge-triggered: a bit is cleared when a
  // syscall says EAGAIN and set again by the next epoll edge.
  struct FdState {
    bool registered = false;
    bool nonblocking = false;  // O_NONBLOCK set (or checked) on first use
    bool unpollable = false;   // regular files, directories: epoll refuses them
    bool typed = false;        // `unpollable` is known (fstat once per fd)
    bool readable = true;      // unknown counts as ready: try the syscall
    bool writable = true;
    detail::OpBase* readers = nullptr;  // parked ops, FIFO via link_next
    detail::OpBase* writers = nullptr;
  };
  enum Where : std::uintptr_t { kNew = 1, kReaders = 2, kWriters = 3, kWorker = 4 };

  FdState& state(int fd);
  /// Runs the op's nonblocking syscall; true when it finished (result
  /// recorded in op.res), false on EAGAIN.
  bool attempt(detail::OpBase& op, FdState& st);
  void park(detail::OpBase& op, FdState& st);
  void unpark(detail::OpBase& op) noexcept;
  void finish(detail::OpBase& op, int res);
  std::size_t retry(detail::OpBase*& list, FdState& st);
  void forget_fd(int fd, bool deregister = true);
  /// Whether `op` runs on the file workers rather than by readiness.
  bool offloaded(const detail::OpBase& op);
  void offload(detail::OpBase& op);
  std::size_t take_worker_results();

  int epfd_ = -1;
  CompletionQueue* queue_ = nullptr;
  std::vector<FdState> fds_;
  std::vector<detail::OpBase*> fresh_;  // submitted, not yet attempted
  std::size_t held_ = 0;
  BackendStats stats_{};  // kernel_enters: epoll_wait calls
  std::size_t finished_ = 0;  // completions pushed since the last poll
  unsigned file_worker_count_;
  std::unique_ptr<FileWorkers> workers_;  // made by the first offloaded op
};

}  // namespace lev
