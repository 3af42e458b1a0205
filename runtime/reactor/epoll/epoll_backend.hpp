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
namespace detail {
class FdMarks;
struct KindEntry;
}

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
  /// first op on an fd (for a splice: on its input and on its output) puts
  /// it in O_NONBLOCK mode (the syscalls must never block the loop); this
  /// changes the open file description's flags.
  void submit(detail::OpBase& op) override;
  void cancel(detail::OpBase& op) override;
  void cancel_all() override;
  std::size_t poll(std::optional<Duration> timeout) override;
  [[nodiscard]] std::size_t in_flight() const noexcept override { return held_; }
  [[nodiscard]] BackendStats stats() const noexcept override { return stats_; }
  void set_wakeup_fd(int fd) override;
  /// `fd` is about to be closed (loop thread, through detail::fd_closing):
  /// ops waiting on it for readiness (a splice writing to it too) end with
  /// ECANCELED and its state is forgotten. `here`: the close is made on
  /// this thread, now: ops submitted and not yet tried end with ECANCELED
  /// too, and closing_workers(fd) runs. Not `here`: a close made earlier
  /// on another thread, applied at a round's start (ops submitted since
  /// may be for a new file with the number: they stay).
  void closing(int fd, bool here = true) noexcept;
  /// The file workers' part of closing, from any thread: ops on `fd` still
  /// queued for a worker end with ECANCELED; one a worker runs is waited
  /// for (its syscall may not have begun: the number must stay this file's
  /// until it returns).
  void closing_workers(int fd) noexcept { workers_->closing(fd); }
  /// Where the engine marks the fds it keeps state for (the loop's).
  void set_marks(detail::FdMarks& marks) noexcept { marks_ = &marks; }
  /// The reactor's fast path for a plain send (Loop::start_now): its
  /// syscall is tried at once, unless an op on an fd that is not a recv
  /// waits untried in this round's batch (a close, a write: their order holds)
  /// or sends are parked on the fd (it goes after them). Receives are not
  /// tried at once: they wait for the next poll, by which time the peer
  /// may have answered. done: it finished, op.res holds the result, the
  /// engine never held it. held: it is parked (or failed into the queue),
  /// held as after submit(). declined: nothing happened; submit() it.
  enum class Now { declined, done, held };
  Now try_send(detail::OpBase& op) noexcept;
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
  // Where a held op is (backend_data): kSpliceOut is a splice parked as a
  // writer on its output fd (SpliceArgs::fd_out), not on op.fd.
  enum Where : std::uintptr_t {
    kNew = 1,
    kReaders = 2,
    kWriters = 3,
    kWorker = 4,
    kSpliceOut = 5,
  };
  // What a splice waits for after EAGAIN.
  enum class Side { done, input, output };

  /// The state of an fd the engine may act on (made on its first use).
  FdState& state(int fd) {
    const auto i = static_cast<std::size_t>(fd);
    if (i < fds_.size() && fds_[i].nonblocking) [[likely]]
      return fds_[i];
    return first_use(fd);
  }
  FdState& first_use(int fd);
  /// Tries a fresh op: done, parked, or handed to the file workers.
  void start(detail::OpBase& op);
  void start_splice(detail::OpBase& op);
  /// Runs the op's nonblocking syscall; true when it finished (result
  /// recorded in op.res), false on EAGAIN. `e`: its kind's row; `writer`:
  /// it waits for writability.
  bool attempt(detail::OpBase& op, FdState& st);
  bool attempt(detail::OpBase& op, FdState& st, const detail::KindEntry& e, bool writer);
  /// A splice waits for its input to be readable and its output writable:
  /// done, or the side that said EAGAIN.
  Side attempt_splice(detail::OpBase& op);
  void park(detail::OpBase& op, int fd, bool writer, Where where);
  void park_splice(detail::OpBase& op, Side side);
  void unpark(detail::OpBase& op) noexcept;
  void finish(detail::OpBase& op, int res);
  std::size_t retry(int fd, bool writers);
  void forget_fd(int fd, bool deregister = true);
  /// Whether `fd` is a file epoll refuses (regular, directory, block
  /// device): an op that may act on a file then runs on the file workers.
  bool unpollable(int fd, FdState& st);
  void offload(detail::OpBase& op);
  std::size_t take_worker_results();

  int epfd_ = -1;
  CompletionQueue* queue_ = nullptr;
  std::vector<FdState> fds_;
  // Submitted, not yet attempted: the first fresh_n_ slots of fresh_ (its
  // size is the capacity, so that a submit is a store).
  std::vector<detail::OpBase*> fresh_;
  std::size_t fresh_n_ = 0;
  // Of those, how many act on an fd and are not recvs (counted up by
  // submit, zeroed when poll takes the batch): try_send goes first only
  // past recvs (the other side of an fd) and ops on no fd (nop).
  std::size_t fresh_other_ = 0;
  [[gnu::noinline]] void grow_fresh(detail::OpBase& op);
  void erase_fresh(std::size_t i) noexcept {
    for (std::size_t j = i + 1; j < fresh_n_; ++j) fresh_[j - 1] = fresh_[j];
    --fresh_n_;
  }
  std::size_t held_ = 0;
  BackendStats stats_{};  // kernel_enters: epoll_wait calls
  std::size_t finished_ = 0;  // completions pushed since the last poll
  std::vector<detail::OpBase*> splices_;  // splices parked on their input
  std::vector<detail::OpBase*> taken_;    // take_worker_results' scratch
  detail::FdMarks* marks_ = nullptr;
  // Made with the engine (its threads start on first use) so that a close
  // on any thread can reach it; registered in the epoll set on first use.
  const std::unique_ptr<FileWorkers> workers_;
  bool workers_watched_ = false;
};

}  // namespace lev
