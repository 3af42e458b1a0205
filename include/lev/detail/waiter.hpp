#pragma once
/// \file
/// A task parked on a synchronisation object (Event, Mutex, Semaphore,
/// Channel): an intrusive FIFO entry plus the `post` op that resumes it
/// from its loop's completion queue once it is released, and the stop
/// link that takes it out of the queue when its task's token is stopped.

#include <cerrno>
#include <coroutine>
#include <stop_token>
#include <type_traits>

#include "lev/detail/op.hpp"
#include "lev/detail/stop.hpp"
#include "lev/task.hpp"

namespace lev::detail {

enum class WaitStatus : unsigned char { waiting, granted, closed, cancelled };

struct Waiter {
  OpBase op;  // kind post; ctx = the parked coroutine
  Waiter* prev = nullptr;
  Waiter* next = nullptr;
  Loop* loop = nullptr;
  bool queued = false;  // in a WaitList
  WaitStatus status = WaitStatus::waiting;
};

class WaitList {
 public:
  [[nodiscard]] bool empty() const noexcept { return head_ == nullptr; }
  [[nodiscard]] Waiter* front() const noexcept { return head_; }
  void push_back(Waiter& w) noexcept {
    w.prev = tail_;
    w.next = nullptr;
    (tail_ ? tail_->next : head_) = &w;
    tail_ = &w;
    w.queued = true;
  }
  void remove(Waiter& w) noexcept {
    (w.prev ? w.prev->next : head_) = w.next;
    (w.next ? w.next->prev : tail_) = w.prev;
    w.prev = w.next = nullptr;
    w.queued = false;
  }
  Waiter* pop_front() noexcept {
    Waiter* w = head_;
    if (w) remove(*w);
    return w;
  }

 private:
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
};

}  // namespace lev::detail
