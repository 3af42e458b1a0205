#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// `lev::Channel<T>`: a bounded FIFO between tasks, on one loop or across
/// loops and threads. send() suspends while the channel is full, receive()
/// while it is empty; waiters are served in FIFO order and resume from
/// their own loop's completion queue (a waiter on another loop is woken
/// through that loop's inbox). close() releases everyone: senders get
/// errc::closed, receivers drain what is buffered and then get errc::closed.
///
///     lev::Channel<Job> jobs{64};
///     co_await jobs.send(job);                  // Result<void>
///     while (auto j = co_await jobs.receive())  // Result<Job>
///       handle(*j);
///
/// A parked waiter keeps its loop's run() / block_on() waiting for the
/// wakeup (another thread may send). Non-task threads can use try_send /
/// try_receive.

#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <utility>
#include <vector>

#include "lev/detail/waiter.hpp"
#include "lev/error.hpp"
#include "lev/loop.hpp"

namespace lev {

/// A bounded FIFO of T between tasks (see the file comment). Not movable;
/// it must outlive every task waiting on it.
template <class T>
class Channel {
  struct Slot : detail::Waiter {
    std::optional<T> value;  // a parked sender's item, or what a receiver was handed
    Channel* owner = nullptr;
    detail::WaitList* list = nullptr;
    Loop::Hold hold;  // a parked waiter keeps its loop waiting for the wakeup
  };

 public:
  /// Throws std::invalid_argument for a capacity of 0.
  explicit Channel(std::size_t capacity) : ring_(capacity) {
    if (capacity == 0) throw std::invalid_argument("lev::Channel: capacity must be at least 1");
  }
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  /// How many items fit without a sender waiting.
  [[nodiscard]] std::size_t capacity() const noexcept { return ring_.size(); }
  /// Items buffered now (any thread; may change at once).
  [[nodiscard]] std::size_t size() const {
    std::lock_guard lock(mu_);
    return count_;
  }
  /// close() was called (any thread).
  [[nodiscard]] bool is_closed() const {
    std::lock_guard lock(mu_);
    return closed_;
  }

  /// Any thread. Later sends fail with errc::closed; parked senders are
  /// released with errc::closed (their items are dropped); receivers get
  /// what is buffered, then errc::closed.
  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    while (detail::Waiter* w = senders_.front()) wake(senders_, *w, detail::WaitStatus::closed);
    while (detail::Waiter* w = receivers_.front()) wake(receivers_, *w, detail::WaitStatus::closed);
  }

  /// Any thread, no waiting: true if the item was taken (it is moved from
  /// only then).
  bool try_send(T& item) {
    std::lock_guard lock(mu_);
    return !closed_ && offer(item);
  }
  /// Any thread, no waiting.
  std::optional<T> try_receive() {
    std::lock_guard lock(mu_);
    return take();
  }

  /// What send() returns: co_await it for a Result<void>. If it is
  /// destroyed while parked (its task cancelled by destruction), the item
  /// leaves the queue with it.
  class [[nodiscard]] SendAwaiter {
   public:
    /// Holds `item` until the channel takes it.
    SendAwaiter(Channel& c, T item) : c_(&c) { slot_.value.emplace(std::move(item)); }
    SendAwaiter(const SendAwaiter&) = delete;
    SendAwaiter& operator=(const SendAwaiter&) = delete;
    ~SendAwaiter() { c_->leave(slot_, stop_); }
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
      Loop* loop = loop_of(h);
      {
        std::lock_guard lock(c_->mu_);
        if (c_->closed_) {
          slot_.status = detail::WaitStatus::closed;
          return false;
        }
        if (c_->offer(*slot_.value)) {
          slot_.status = detail::WaitStatus::granted;
          return false;
        }
        if (!loop)
          throw std::logic_error("lev::Channel::send: a full channel needs a task on a loop");
        c_->park(c_->senders_, slot_, h, *loop);
      }
      c_->arm(slot_, stop_, h);
      return true;
    }
    Result<void> await_resume() {
      stop_.disarm();
      slot_.hold.reset();
      switch (slot_.status) {
        case detail::WaitStatus::closed:
          return Error{make_error_code(errc::closed), "Channel::send"};
        case detail::WaitStatus::cancelled:
          return Error{std::make_error_code(std::errc::operation_canceled), "Channel::send"};
        default:
          return {};
      }
    }

   private:
    Channel* c_;
    Slot slot_;
    detail::StopLink stop_;
  };

  /// What receive() returns: co_await it for a Result<T>.
  class [[nodiscard]] ReceiveAwaiter {
   public:
    /// Receives from `c`.
    explicit ReceiveAwaiter(Channel& c) noexcept : c_(&c) {}
    ReceiveAwaiter(const ReceiveAwaiter&) = delete;
    ReceiveAwaiter& operator=(const ReceiveAwaiter&) = delete;
    ~ReceiveAwaiter() { c_->leave(slot_, stop_); }
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
      Loop* loop = loop_of(h);
      {
        std::lock_guard lock(c_->mu_);
        if ((slot_.value = c_->take())) {
          slot_.status = detail::WaitStatus::granted;
          return false;
        }
        if (c_->closed_) {
          slot_.status = detail::WaitStatus::closed;
          return false;
        }
        if (!loop)
          throw std::logic_error("lev::Channel::receive: an empty channel needs a task on a loop");
        c_->park(c_->receivers_, slot_, h, *loop);
      }
      c_->arm(slot_, stop_, h);
      return true;
    }
    Result<T> await_resume() {
      stop_.disarm();
      slot_.hold.reset();
      if (slot_.value) return std::move(*slot_.value);
      if (slot_.status == detail::WaitStatus::cancelled)
        return Error{std::make_error_code(std::errc::operation_canceled), "Channel::receive"};
      return Error{make_error_code(errc::closed), "Channel::receive"};
    }

   private:
    Channel* c_;
    Slot slot_;
    detail::StopLink stop_;
  };

  /// Result: success, errc::closed, or operation_canceled (the item is then
  /// not in the channel).
  SendAwaiter send(T item) { return SendAwaiter(*this, std::move(item)); }
  /// Result: the oldest item, errc::closed once closed and drained, or
  /// operation_canceled.
  ReceiveAwaiter receive() noexcept { return ReceiveAwaiter(*this); }

 private:
  template <class P>
  static Loop* loop_of(std::coroutine_handle<P> h) noexcept {
    if constexpr (std::is_base_of_v<detail::TaskPromiseBase, P>)
      return h.promise().loop;
    else
      return nullptr;
  }

  // All below with mu_ held.
  bool offer(T& item) {
    if (detail::Waiter* w = receivers_.front()) {  // the buffer is empty: hand over
      static_cast<Slot*>(w)->value.emplace(std::move(item));
      wake(receivers_, *w, detail::WaitStatus::granted);
      return true;
    }
    if (count_ == ring_.size()) return false;
    ring_[(head_ + count_) % ring_.size()].emplace(std::move(item));
    ++count_;
    return true;
  }
  std::optional<T> take() {
    if (count_ == 0) return std::nullopt;
    std::optional<T> out = std::move(ring_[head_]);
    ring_[head_].reset();
    head_ = (head_ + 1) % ring_.size();
    --count_;
    if (detail::Waiter* w = senders_.front()) {  // room now: the oldest sender's item goes in
      auto* s = static_cast<Slot*>(w);
      ring_[(head_ + count_) % ring_.size()].emplace(std::move(*s->value));
      s->value.reset();
      ++count_;
      wake(senders_, *w, detail::WaitStatus::granted);
    }
    return out;
  }
  template <class P>
  void park(detail::WaitList& list, Slot& s, std::coroutine_handle<P> h, Loop& loop) {
    s.op.kind = detail::OpKind::post;
    s.op.ctx = h.address();
    s.op.deliver = nullptr;
    s.loop = &loop;
    s.hold = loop.hold();
    s.owner = this;
    s.list = &list;
    list.push_back(s);
  }
  void wake(detail::WaitList& list, detail::Waiter& w, detail::WaitStatus status) {
    list.remove(w);
    w.status = status;
    w.loop->post_op(w.op);  // under mu_: a waiter that leaves sees it queued
  }
  template <class P>
  void arm(Slot& s, detail::StopLink& stop, std::coroutine_handle<P> h) {
    stop.arm(*s.loop, detail::task_cancel(h), &on_stop, &s);
  }
  // On the waiter's loop thread, when its token stops.
  static void on_stop(void* p) noexcept {
    auto* s = static_cast<Slot*>(p);
    Channel* c = s->owner;
    bool removed = false;
    {
      std::lock_guard lock(c->mu_);
      if (s->queued) {
        s->list->remove(*s);
        s->status = detail::WaitStatus::cancelled;
        removed = true;
      }
    }
    if (removed) s->loop->start_cancelled(s->op);
  }
  // A frame going away: take its waiter out of wherever it is.
  void leave(Slot& s, detail::StopLink& stop) noexcept {
    stop.disarm();
    s.hold.reset();
    {
      std::lock_guard lock(mu_);
      if (s.queued) {
        s.list->remove(s);
        return;
      }
    }
    if (s.op.state == detail::OpState::idle && s.loop) {
      s.loop->retract(s.op);  // woken from another thread, not yet picked up
    } else if (static_cast<unsigned>(s.op.state) - 1u < 2u) {
      s.loop->abandon(s.op);
    }
  }

  mutable std::mutex mu_;
  std::vector<std::optional<T>> ring_;
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  bool closed_ = false;
  detail::WaitList senders_;
  detail::WaitList receivers_;
};

}  // namespace lev
