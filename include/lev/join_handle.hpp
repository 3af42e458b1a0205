#pragma once
/// \file
/// `lev::JoinHandle<T>`: what `loop.spawn(task)` returns. Awaiting it gives
/// the task's value, or rethrows what the task threw; `abort()` requests
/// the task's cancellation (its operations end with operation_canceled);
/// dropping the handle detaches the task, which runs on.
///
///     auto h = loop.spawn(fetch(url));
///     ...
///     std::string body = co_await std::move(h);   // or h.abort();
///
/// An exception the task throws reaches the awaiter; if nobody awaits it
/// (the handle was dropped, or is dropped without being awaited), it goes
/// to the log hook like any escaped exception. Loop thread only.

#include <coroutine>
#include <exception>
#include <optional>
#include <stop_token>
#include <utility>

#include "lev/detail/join.hpp"
#include "lev/detail/op.hpp"
#include "lev/detail/root.hpp"
#include "lev/detail/scope.hpp"
#include "lev/detail/stop.hpp"
#include "lev/task.hpp"

namespace lev {

class Loop;

namespace detail {

void post_join_wakeup(Loop& loop, OpBase& op) noexcept;
void abandon_op(Loop& loop, OpBase& op) noexcept;

/// Shared by a spawned task's root and its JoinHandle (loop thread only).
struct JoinStateBase {
  Loop* loop = nullptr;
  unsigned refs = 2;  // the root's and the handle's
  bool done = false;
  bool taken = false;  // the result went to an awaiter
  std::exception_ptr error;
  Scope scope;    // the task tree's cancellation: abort() cancels it
  StopLink link;  // spawn(task, token): the token cancels the scope
  std::coroutine_handle<> waiter;
  OpBase wake;  // resumes the waiter from the completion queue

  virtual ~JoinStateBase() = default;
  void release() noexcept {
    if (--refs == 0) delete this;
  }
  /// The task ended (its root says so): wake the awaiter, or report an
  /// exception nobody can receive any more.
  void finish() noexcept {
    done = true;
    link.disarm();
    if (waiter) {
      wake.kind = OpKind::post;
      wake.ctx = std::exchange(waiter, nullptr).address();
      wake.deliver = nullptr;
      post_join_wakeup(*loop, wake);
    } else if (error && refs == 1) {
      report_escaped(error);
      error = nullptr;
    }
  }
};

template <class T>
struct JoinState final : JoinStateBase {
  std::optional<ValueOf<T>> value;
};

/// The root's reference to its JoinState. A coroutine parameter, so the
/// frame owns it from the call on: a root the loop destroys before it ever
/// ran (a loop torn down with tasks still queued) releases it too.
template <class T>
class JoinRef {
 public:
  explicit JoinRef(JoinState<T>* st) noexcept : st_(st) {}
  JoinRef(JoinRef&& o) noexcept : st_(std::exchange(o.st_, nullptr)) {}
  JoinRef& operator=(JoinRef&&) = delete;
  ~JoinRef() {
    if (st_) {
      st_->link.disarm();  // the task is gone: its token no longer matters
      st_->release();
    }
  }
  JoinState<T>* operator->() const noexcept { return st_; }

 private:
  JoinState<T>* st_;
};

/// The root of a spawned task with a handle: stores its outcome in `st`.
template <class T>
RootCoroutine root_join(Task<T> task, JoinRef<T> st) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(task);
      st->value.emplace();
    } else {
      st->value.emplace(co_await std::move(task));
    }
  } catch (...) {
    st->error = std::current_exception();
  }
  st->finish();
}

}  // namespace detail

/// A spawned task's handle: await it for the task's outcome, abort() it,
/// or drop it to detach the task. Move-only; loop thread only.
template <class T>
class JoinHandle {
 public:
  /// An empty handle (valid() is false), e.g. to assign a spawn() to later.
  JoinHandle() noexcept = default;
  /// Used by Loop::spawn; takes one reference to the shared state.
  explicit JoinHandle(detail::JoinState<T>* st) noexcept : st_(st) {}
  /// Takes `o`'s task; `o` is left empty.
  JoinHandle(JoinHandle&& o) noexcept : st_(std::exchange(o.st_, nullptr)) {}
  /// Detaches the task this handle had, then takes `o`'s.
  JoinHandle& operator=(JoinHandle&& o) noexcept {
    if (this != &o) {
      detach();
      st_ = std::exchange(o.st_, nullptr);
    }
    return *this;
  }
  JoinHandle(const JoinHandle&) = delete;
  JoinHandle& operator=(const JoinHandle&) = delete;
  ~JoinHandle() { detach(); }

  /// Lets the task run on unowned (an exception it throws then goes to the
  /// log hook).
  void detach() noexcept {
    if (!st_) return;
    detail::JoinState<T>* st = std::exchange(st_, nullptr);
    if (st->done && st->error && !st->taken) detail::report_escaped(st->error);
    st->release();
  }
  /// Requests the task's cancellation: the operation it awaits now ends
  /// with operation_canceled, and so does every one it starts later (its
  /// current_stop_token() is stopped too). It still ends on its own terms
  /// (what it returns or throws is what the awaiter gets).
  void abort() noexcept {
    if (st_ && !st_->done) st_->scope.cancel();
  }
  /// The handle has a task (not default-constructed, moved from or detached).
  [[nodiscard]] bool valid() const noexcept { return st_ != nullptr; }
  /// The task has ended (its result is waiting for an awaiter).
  [[nodiscard]] bool done() const noexcept { return st_ && st_->done; }

  /// What `co_await handle` returns.
  class Awaiter {
   public:
    /// Waits on the shared state `st` of the handle's task.
    explicit Awaiter(detail::JoinState<T>* st) noexcept : st_(st) {}
    Awaiter(const Awaiter&) = delete;
    Awaiter& operator=(const Awaiter&) = delete;
    /// A frame destroyed while it waits leaves no resumption behind.
    ~Awaiter() {
      if (!st_) return;
      if (st_->waiter == handle_) st_->waiter = nullptr;
      if (static_cast<unsigned>(st_->wake.state) - 1u < 2u && parked_)
        detail::abandon_op(*st_->loop, st_->wake);
    }
    bool await_ready() const noexcept { return st_->done; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      handle_ = h;
      parked_ = true;
      st_->waiter = h;
    }
    /// The task's value; rethrows what it threw.
    detail::ValueOf<T> await_resume() {
      st_->taken = true;
      if (st_->error) std::rethrow_exception(st_->error);
      return std::move(*st_->value);
    }

   private:
    detail::JoinState<T>* st_;
    std::coroutine_handle<> handle_;
    bool parked_ = false;
  };
  /// Waits for the task to end: its value (std::monostate for a void
  /// task), or what it threw. Once per handle.
  Awaiter operator co_await() && noexcept { return Awaiter(st_); }
  /// As above, on a named handle.
  Awaiter operator co_await() & noexcept { return Awaiter(st_); }

 private:
  detail::JoinState<T>* st_ = nullptr;
};

}  // namespace lev
