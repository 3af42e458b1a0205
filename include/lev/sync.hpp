#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Synchronisation between tasks of one loop: Event, Mutex, Semaphore.
/// Waiters are released in FIFO order and resume from the loop's
/// completion queue (never inside set() / unlock() / release()). A waiter
/// whose task's stop token is stopped leaves the queue and gets
/// errc::operation_canceled. These objects belong to their loop's thread;
/// for handing data between threads see lev::Channel.
///
///     lev::Mutex m{loop};
///     auto lock = co_await m.lock();  // Result<Mutex::Lock>; unlocks when dropped

#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "lev/detail/waiter.hpp"
#include "lev/error.hpp"
#include "lev/loop.hpp"

namespace lev {

namespace detail {

/// The part every single-loop wait shares: park in a list, leave it on a
/// stop request, resume from the queue; a frame destroyed while parked
/// leaves nothing behind.
class ParkedAwaiter {
 public:
  ParkedAwaiter(Loop& loop, WaitList& list) noexcept : loop_(&loop), list_(&list) {}
  ParkedAwaiter(const ParkedAwaiter&) = delete;
  ParkedAwaiter& operator=(const ParkedAwaiter&) = delete;
  ~ParkedAwaiter() {
    stop_.disarm();
    if (w_.queued)
      list_->remove(w_);
    else if (static_cast<unsigned>(w_.op.state) - 1u < 2u)
      loop_->abandon(w_.op);
  }

 protected:
  template <class P>
  void park(std::coroutine_handle<P> h) {
    w_.op.kind = OpKind::post;
    w_.op.ctx = h.address();
    w_.op.deliver = nullptr;
    w_.loop = loop_;
    list_->push_back(w_);
    stop_.arm(*loop_, task_cancel(h), &on_stop, this);
  }
  /// After resumption: the status it was released with.
  WaitStatus resumed() noexcept {
    stop_.disarm();
    return w_.status;
  }
  static Error cancelled(const char* op) {
    return Error{std::make_error_code(std::errc::operation_canceled), op};
  }

  Loop* loop_;
  WaitList* list_;
  Waiter w_;

 private:
  static void on_stop(void* self) noexcept {
    auto* a = static_cast<ParkedAwaiter*>(self);
    if (!a->w_.queued) return;  // already released: the release stands
    a->list_->remove(a->w_);
    a->w_.status = WaitStatus::cancelled;
    a->loop_->start_cancelled(a->w_.op);
  }
  StopLink stop_;
};

/// Releases a parked waiter of a single-loop object: it resumes from the
/// completion queue with `status`.
inline void release(Loop& loop, WaitList& list, Waiter& w, WaitStatus status) {
  list.remove(w);
  w.status = status;
  loop.start(w.op);  // a post: queued now, delivered by the next drain
}

}  // namespace detail

/// A manual-reset event: wait() suspends until set(); set() releases every
/// waiter; reset() makes later waits suspend again.
class Event {
 public:
  /// An event for tasks on `loop`, set or not.
  explicit Event(Loop& loop, bool initially_set = false) noexcept
      : loop_(&loop), set_(initially_set) {}
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  /// Sets the event and releases every waiter (each resumes from the
  /// completion queue). Loop thread only.
  void set() {
    set_ = true;
    while (detail::Waiter* w = waiters_.front())
      detail::release(*loop_, waiters_, *w, detail::WaitStatus::granted);
  }
  /// Clears the event: later waits suspend until the next set().
  void reset() noexcept { set_ = false; }
  /// The event is set.
  [[nodiscard]] bool is_set() const noexcept { return set_; }

  /// What wait() returns: co_await it for a Result<void>.
  class [[nodiscard]] WaitAwaiter : public detail::ParkedAwaiter {
   public:
    /// Waits on `e`.
    explicit WaitAwaiter(Event& e) noexcept : ParkedAwaiter(*e.loop_, e.waiters_), e_(&e) {}
    bool await_ready() const noexcept { return e_->set_; }
    template <class P>
    void await_suspend(std::coroutine_handle<P> h) {
      park(h);
    }
    Result<void> await_resume() {
      if (resumed() == detail::WaitStatus::cancelled) return cancelled("Event::wait");
      return {};
    }

   private:
    Event* e_;
  };
  /// Result: success, or operation_canceled when the task's token stopped.
  WaitAwaiter wait() noexcept { return WaitAwaiter(*this); }

 private:
  Loop* loop_;
  bool set_;
  detail::WaitList waiters_;
};

/// A FIFO mutex: unlock() hands the lock to the longest waiter (it is
/// never released to whoever asks next, and only that waiter wakes).
class Mutex {
 public:
  /// A mutex for tasks on `loop`, unlocked.
  explicit Mutex(Loop& loop) noexcept : loop_(&loop) {}
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  /// Ownership of the lock; unlocks when destroyed or reset.
  class [[nodiscard]] Lock {
   public:
    /// Owns nothing.
    Lock() = default;
    /// Adopts `m`, which the caller has locked (try_lock()).
    explicit Lock(Mutex& m) noexcept : m_(&m) {}
    /// Takes over `o`'s ownership.
    Lock(Lock&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
    /// Unlocks what this owns, then takes over `o`'s ownership.
    Lock& operator=(Lock&& o) noexcept {
      if (this != &o) {
        reset();
        m_ = std::exchange(o.m_, nullptr);
      }
      return *this;
    }
    /// reset().
    ~Lock() { reset(); }
    /// Unlocks now (the longest waiter gets the lock), if this owns it.
    void reset() {
      if (m_) std::exchange(m_, nullptr)->unlock();
    }
    /// This Lock holds the mutex.
    [[nodiscard]] bool owns_lock() const noexcept { return m_ != nullptr; }

   private:
    Mutex* m_ = nullptr;
  };

  /// Locks if nobody holds the lock; true if it did. The caller unlocks
  /// (or wraps it in a Lock).
  [[nodiscard]] bool try_lock() noexcept {
    if (locked_) return false;
    locked_ = true;
    return true;
  }
  /// Hands the lock to the longest waiter, or unlocks when none waits.
  /// Throws std::logic_error when not locked.
  void unlock() {
    if (!locked_) throw std::logic_error("lev::Mutex::unlock: not locked");
    if (detail::Waiter* w = waiters_.front())
      detail::release(*loop_, waiters_, *w, detail::WaitStatus::granted);  // stays locked
    else
      locked_ = false;
  }
  /// Someone holds the lock.
  [[nodiscard]] bool is_locked() const noexcept { return locked_; }

  /// What lock() returns: co_await it for a `Result<Lock>`.
  class [[nodiscard]] LockAwaiter : public detail::ParkedAwaiter {
   public:
    /// Locks `m`.
    explicit LockAwaiter(Mutex& m) noexcept : ParkedAwaiter(*m.loop_, m.waiters_), m_(&m) {}
    /// A lock granted to a task destroyed before it resumed passes on.
    ~LockAwaiter() {
      // Granted but never resumed (the frame was destroyed first): pass
      // the lock on rather than leave it held by nobody.
      if (w_.status == detail::WaitStatus::granted && !resumed_) m_->unlock();
    }
    bool await_ready() noexcept { return took_ = m_->try_lock(); }
    template <class P>
    void await_suspend(std::coroutine_handle<P> h) {
      park(h);
    }
    Result<Lock> await_resume() {
      resumed_ = true;
      if (!took_ && resumed() == detail::WaitStatus::cancelled) return cancelled("Mutex::lock");
      return Lock(*m_);
    }

   private:
    Mutex* m_;
    bool took_ = false;
    bool resumed_ = false;
  };
  /// Result: the Lock, or operation_canceled when the task's token stopped.
  LockAwaiter lock() noexcept { return LockAwaiter(*this); }

 private:
  Loop* loop_;
  bool locked_ = false;
  detail::WaitList waiters_;
};

/// A counting semaphore with FIFO acquisition.
class Semaphore {
 public:
  /// A semaphore for tasks on `loop` with `initial` units.
  Semaphore(Loop& loop, std::size_t initial) noexcept : loop_(&loop), count_(initial) {}
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  /// Takes a unit if one is free and nobody waits; true if it did.
  [[nodiscard]] bool try_acquire() noexcept {
    if (count_ == 0 || !waiters_.empty()) return false;  // FIFO: no overtaking
    --count_;
    return true;
  }
  /// Gives `n` units back: each goes to the longest waiter, or to the count.
  void release(std::size_t n = 1) {
    for (; n > 0; --n) {
      if (detail::Waiter* w = waiters_.front())
        detail::release(*loop_, waiters_, *w, detail::WaitStatus::granted);
      else
        ++count_;
    }
  }
  /// Units free now.
  [[nodiscard]] std::size_t available() const noexcept { return count_; }

  /// What acquire() returns: co_await it for a Result<void>.
  class [[nodiscard]] AcquireAwaiter : public detail::ParkedAwaiter {
   public:
    /// Acquires one unit of `s`.
    explicit AcquireAwaiter(Semaphore& s) noexcept : ParkedAwaiter(*s.loop_, s.waiters_), s_(&s) {}
    /// A unit granted to a task destroyed before it resumed is released.
    ~AcquireAwaiter() {
      if (w_.status == detail::WaitStatus::granted && !resumed_) s_->release();
    }
    bool await_ready() noexcept { return took_ = s_->try_acquire(); }
    template <class P>
    void await_suspend(std::coroutine_handle<P> h) {
      park(h);
    }
    Result<void> await_resume() {
      resumed_ = true;
      if (!took_ && resumed() == detail::WaitStatus::cancelled)
        return cancelled("Semaphore::acquire");
      return {};
    }

   private:
    Semaphore* s_;
    bool took_ = false;
    bool resumed_ = false;
  };
  /// Result: success (one unit taken), or operation_canceled.
  AcquireAwaiter acquire() noexcept { return AcquireAwaiter(*this); }

 private:
  Loop* loop_;
  std::size_t count_;
  detail::WaitList waiters_;
};

}  // namespace lev
