#pragma once
// A loop's inbox: post ops handed over from other threads wait here (linked
// through link_next: a post never reaches a backend) until the loop thread
// takes them. Not a public header.
//
// Lifetime: reference counted. The loop holds one reference; a thread
// inside push() or Loop::stop() holds one until its wake is done, and a
// MSG_RING wake in flight holds one until its completion is reaped. So a
// waker never touches freed memory or a closed (possibly reused) eventfd
// number, even when the loop sees its post, finishes and is destroyed
// while the waker is still inside wake(). The eventfd is closed with the
// last reference.
//
// `flagged` is set by the first post after the loop last looked, and only
// that post writes the eventfd: a busy loop costs posters no syscall. The
// waking post goes by MSG_RING when both loops are io_uring loops and the
// poster runs on its own loop's thread; by the eventfd otherwise.
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>

#include "lev/detail/op.hpp"
#include "lev/detail/remote.hpp"

namespace lev::detail {

struct Inbox {
  std::atomic<std::uint32_t> refs{1};  // the loop's own
  std::mutex mu;
  OpBase* head = nullptr;
  OpBase* tail = nullptr;
  bool closed = false;  // the loop is gone: pushes drop what they carry
  std::atomic<bool> flagged{false};
  std::atomic<bool> efd_written{false};
  int efd = -1;
  int ring_fd = -1;  // this loop's ring, when it takes MSG_RING wakes
  std::atomic<std::uint64_t> by_msg_ring{0}, by_eventfd{0};

  Inbox() = default;
  Inbox(const Inbox&) = delete;
  Inbox& operator=(const Inbox&) = delete;

  void add_ref() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  /// Any thread, holding a reference. Makes the loop look at its inbox.
  void wake() noexcept;
  /// The eventfd half of wake() (also what a failed MSG_RING falls back to).
  void wake_by_eventfd() noexcept {
    by_eventfd.fetch_add(1, std::memory_order_relaxed);
    efd_written.store(true, std::memory_order_relaxed);
    if (auto hook = before_eventfd_wake.load(std::memory_order_relaxed)) [[unlikely]]
      hook();
    const std::uint64_t one = 1;
    ssize_t r = ::write(efd, &one, sizeof one);
    (void)r;  // EAGAIN: the counter is already huge, so it is readable
  }
  /// Any thread; the loop must be alive when it is called. Returns false
  /// (and queues nothing) when the loop has closed its inbox.
  bool push(OpBase& op) noexcept {
    add_ref();  // until wake() is done with this inbox
    op.link_next = nullptr;
    bool open;
    {
      std::lock_guard lock(mu);
      open = !closed;
      if (open) {
        if (tail)
          tail->link_next = &op;
        else
          head = &op;
        tail = &op;
      }
    }
    if (open) wake();
    release();
    return open;
  }
  /// Loop thread: everything posted so far, oldest first.
  OpBase* take() noexcept {
    flagged.store(false, std::memory_order_release);
    if (efd_written.exchange(false, std::memory_order_relaxed)) {
      std::uint64_t v;
      ssize_t r = ::read(efd, &v, sizeof v);  // re-arm the edge; EAGAIN is fine
      (void)r;
    }
    std::lock_guard lock(mu);
    OpBase* h = head;
    head = tail = nullptr;
    return h;
  }
  /// Loop thread, at teardown: takes what is left and refuses later pushes.
  OpBase* close() noexcept {
    std::lock_guard lock(mu);
    closed = true;
    OpBase* h = head;
    head = tail = nullptr;
    return h;
  }
  bool remove(OpBase& op) noexcept {
    std::lock_guard lock(mu);
    OpBase* prev = nullptr;
    for (OpBase* cur = head; cur; prev = cur, cur = cur->link_next) {
      if (cur != &op) continue;
      (prev ? prev->link_next : head) = cur->link_next;
      if (tail == cur) tail = prev;
      return true;
    }
    return false;
  }

 private:
  ~Inbox() {
    if (efd >= 0) ::close(efd);
  }
};

}  // namespace lev::detail
