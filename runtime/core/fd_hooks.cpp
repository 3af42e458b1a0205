// The process's list of loops a close must reach, and what a close does to
// each (see fd_hooks.hpp).
#include "core/fd_hooks.hpp"

#include <new>
#include <shared_mutex>
#include <thread>

#include "lev/loop.hpp"
#include "proactor/uring/uring_backend.hpp"
#include "reactor/epoll/epoll_backend.hpp"

namespace lev::detail {

namespace {

struct LoopList {
  std::shared_mutex mu;  // shared: closes; exclusive: (de)listing, ownership moves
  CloseLink* head = nullptr;
};

// Never destroyed: a close may come from a static destructor at exit.
LoopList& loops() {
  static auto* list = new LoopList;
  return *list;
}

}  // namespace

// ---------------------------------------------------------------- FdMarks

FdMarks::~FdMarks() {
  for (auto& p : pages_) delete[] p.load(std::memory_order_relaxed);
}

void FdMarks::mark(int fd) noexcept {
  if (fd < 0) return;
  const auto n = static_cast<std::size_t>(fd);
  const std::size_t page = n / kPageBits;
  if (page >= kPages) {
    all_.store(true, std::memory_order_relaxed);
    return;
  }
  Word* words = pages_[page].load(std::memory_order_acquire);
  if (!words) {
    words = new (std::nothrow) Word[kPageBits / 64]();
    if (!words) {
      all_.store(true, std::memory_order_relaxed);
      return;
    }
    Word* none = nullptr;
    if (!pages_[page].compare_exchange_strong(none, words, std::memory_order_acq_rel)) {
      delete[] words;
      words = none;
    }
  }
  words[(n % kPageBits) / 64].fetch_or(std::uint64_t{1} << (n % 64), std::memory_order_relaxed);
}

bool FdMarks::take(int fd) noexcept {
  if (fd < 0) return false;
  const auto n = static_cast<std::size_t>(fd);
  const bool all = all_.load(std::memory_order_relaxed);
  const std::size_t page = n / kPageBits;
  if (page >= kPages) return all;
  Word* words = pages_[page].load(std::memory_order_acquire);
  if (!words) return all;
  Word& w = words[(n % kPageBits) / 64];
  const std::uint64_t bit = std::uint64_t{1} << (n % 64);
  if (!(w.load(std::memory_order_relaxed) & bit)) return all;  // the usual case: a look
  return (w.fetch_and(~bit, std::memory_order_relaxed) & bit) || all;
}

// -------------------------------------------------------------- CloseLink

void CloseLink::enlist() noexcept {
  LoopList& l = loops();
  std::unique_lock lock(l.mu);
  prev = nullptr;
  next = l.head;
  if (l.head) l.head->prev = this;
  l.head = this;
}

void CloseLink::delist() noexcept {
  LoopList& l = loops();
  std::unique_lock lock(l.mu);
  if (prev)
    prev->next = next;
  else
    l.head = next;
  if (next) next->prev = prev;
  prev = next = nullptr;
}

void CloseLink::adopt(Loop& loop) noexcept {
  const pthread_t me = ::pthread_self();
  if (::pthread_equal(loop.owner_.load(std::memory_order_relaxed), me)) return;
  // Exclusive: no close on another thread is reaching this loop as its
  // owner's while it changes hands.
  std::unique_lock lock(loops().mu);
  loop.owner_.store(me, std::memory_order_relaxed);
  lock.unlock();
  loop.note_thread();  // its timer slack is this thread's now
}

CloseLink& CloseLink::loop_link(Loop& loop) noexcept { return *loop.close_link_; }

void CloseLink::forget(int fd, bool here) noexcept {
  marks.take(fd);
  // Splices whose input is the fd end before it is closed (io_uring;
  // applied later, a close may already have a new file at the number).
  if (here && loop.uring_backend_) loop.uring_backend_->closing_input(fd);
  if (epoll) epoll->closing(fd, here);
  if (loop.recv_) loop.recv_->closing(fd);
  if (loop.dgram_) loop.dgram_->closing(fd);
}

void CloseLink::closing(int fd) noexcept {
  if (loop.in_loop_thread()) {
    forget(fd, true);
    return;
  }
  // Another thread owns the loop. Its file workers' ops on the fd are
  // settled now (their queue is thread-safe): the number must not reach a
  // worker syscall once it is closed.
  if (epoll) epoll->closing_workers(fd);
  if (!marks.take(fd)) return;  // the loop keeps nothing for this number
  std::lock_guard lock(mu);
  try {
    closed.push_back(fd);
  } catch (const std::bad_alloc&) {
    return;  // out of memory: this loop keeps its state for the number
  }
  pending.store(true, std::memory_order_release);
}

void CloseLink::apply() noexcept {
  std::vector<int> fds;
  {
    std::lock_guard lock(mu);
    fds.swap(closed);
    pending.store(false, std::memory_order_relaxed);
  }
  for (int fd : fds) forget(fd, false);  // its workers' part was done by the closing thread
}

void fd_closing(int fd) noexcept {
  if (fd < 0) return;
  LoopList& l = loops();
  std::shared_lock lock(l.mu);
  for (CloseLink* link = l.head; link; link = link->next) link->closing(fd);
}

}  // namespace lev::detail

namespace lev {

void Loop::adopt_thread() noexcept { detail::CloseLink::adopt(*this); }

}  // namespace lev
