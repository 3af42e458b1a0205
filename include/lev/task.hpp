#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// `lev::Task<T>`: a lazy, move-only coroutine. It starts when awaited,
/// resumes its awaiter by symmetric transfer when it ends after having
/// suspended (or lets the awaiter go on directly when it never suspended),
/// and carries an exception to the awaiter.
///
///     lev::Task<int> answer() { co_return 42; }
///     lev::Task<> caller() { int v = co_await answer(); }

#include <coroutine>
#include <exception>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <variant>

#include "lev/detail/frame_pool.hpp"
#include "lev/detail/scope.hpp"

namespace lev {

class Loop;

template <class T = void>
class Task;

namespace detail {

// A task that finishes while its awaiter is still inside await_suspend
// (it never suspended) returns there instead of resuming the awaiter by
// transfer: the awaiter then continues without a nested frame. So a loop
// over a million ready tasks keeps a flat stack even where the compiler does
// not turn symmetric transfer into a tail call (-O0, ASan).
struct TaskPromiseBase : PooledFrame {
  std::coroutine_handle<> continuation = std::noop_coroutine();
  bool inline_phase = false;
  // Inherited from the awaiting task unless set before: the loop the task
  // runs on (set by spawn / block_on), its cancellation scope (lev's own:
  // a spawned task's, a join child's, a task group's; detail/scope.hpp)
  // and a user's cancellation token (with_stop_token).
  Loop* loop = nullptr;
  Scope* scope = nullptr;
  std::stop_token stop_token;

  // A task awaited by another task inherits what it has not set itself. A
  // task given a scope of its own (a join's or a group's child) takes no
  // token from its parent either: whoever gave the scope links the
  // parent's cancellation to it.
  template <class P>
  void inherit(std::coroutine_handle<P> caller) noexcept {
    if constexpr (std::is_base_of_v<TaskPromiseBase, P>) {
      TaskPromiseBase& parent = caller.promise();
      if (!loop) loop = parent.loop;
      if (scope) return;
      scope = parent.scope;
      if (!stop_token.stop_possible() && parent.stop_token.stop_possible()) [[unlikely]]
        stop_token = parent.stop_token;
    }
  }

  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) const noexcept {
      TaskPromiseBase& p = h.promise();
      if (p.inline_phase) return std::noop_coroutine();
      return p.continuation;
    }
    void await_resume() const noexcept {}
  };
  std::suspend_always initial_suspend() const noexcept { return {}; }
  FinalAwaiter final_suspend() const noexcept { return {}; }
};

/// The awaiting task's user cancellation token, or null: not a task, or a
/// task whose token can never be stopped (the common case).
template <class P>
const std::stop_token* task_token(std::coroutine_handle<P> h) noexcept {
  if constexpr (std::is_base_of_v<TaskPromiseBase, P>) {
    if (h.promise().stop_token.stop_possible()) [[unlikely]]
      return &h.promise().stop_token;
  }
  return nullptr;
}

/// The awaiting task's cancellation scope, or null.
template <class P>
Scope* task_scope(std::coroutine_handle<P> h) noexcept {
  if constexpr (std::is_base_of_v<TaskPromiseBase, P>)
    return h.promise().scope;
  else
    return nullptr;
}

/// Everything that may cancel what the awaiting task waits on.
template <class P>
[[gnu::always_inline]] inline CancelFrom task_cancel(std::coroutine_handle<P> h) noexcept {
  return {task_scope(h), task_token(h)};
}

template <class T>
struct TaskPromise final : TaskPromiseBase {
  std::variant<std::monostate, T, std::exception_ptr> result;
  Task<T> get_return_object() noexcept;
  void unhandled_exception() noexcept { result.template emplace<2>(std::current_exception()); }
  template <class U>
  requires std::is_convertible_v<U&&, T>
  void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    result.template emplace<1>(std::forward<U>(v));
  }
  T take() {
    if (result.index() == 2) std::rethrow_exception(std::get<2>(result));
    return std::move(std::get<1>(result));
  }
};

template <>
struct TaskPromise<void> final : TaskPromiseBase {
  std::exception_ptr error;
  Task<void> get_return_object() noexcept;
  void unhandled_exception() noexcept { error = std::current_exception(); }
  void return_void() const noexcept {}
  void take() const {
    if (error) std::rethrow_exception(error);
  }
};

}  // namespace detail

/// A coroutine that produces a T (see the file comment). Lazy: it starts
/// when awaited, spawned or passed to block_on, never at the call. Move-only;
/// owns its frame. Awaiting it gives its value or rethrows what it threw.
template <class T>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::TaskPromise<T>;  ///< for the compiler
  using value_type = T;                         ///< what co_await gives

  /// No coroutine (valid() is false).
  Task() noexcept = default;
  /// Owns the coroutine `h` (what the promise hands the compiler).
  explicit Task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  /// Takes over `o`'s coroutine.
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  /// Destroys this one's coroutine (see ~Task), then takes over `o`'s.
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  /// Destroys the coroutine frame. Destroying a task that is suspended in an
  /// operation cancels the operation and waits for its completion first (the
  /// awaiter's destructor does that), so no buffer is left to the kernel.
  ~Task() {
    if (h_) h_.destroy();
  }

  /// There is a coroutine.
  [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(h_); }
  /// The coroutine has finished (its value or exception is waiting).
  [[nodiscard]] bool done() const noexcept { return h_ && h_.done(); }

  /// What `co_await task` uses: starts the task and resumes the awaiting
  /// coroutine when it ends (at once, without a nested frame, if it ends
  /// without suspending).
  struct Awaiter {
    std::coroutine_handle<promise_type> h;  ///< the awaited task
    bool await_ready() const noexcept { return !h || h.done(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> caller) {
      promise_type& p = h.promise();
      p.continuation = caller;
      p.inherit(caller);
      p.inline_phase = true;
      h.resume();
      if (h.done()) return false;  // finished synchronously: continue here
      p.inline_phase = false;      // it will resume `caller` when it ends
      return true;
    }
    T await_resume() { return h.promise().take(); }
  };
  /// `co_await make_task()`: runs the task, gives its value.
  Awaiter operator co_await() && noexcept { return Awaiter{h_}; }
  /// `co_await task` on a named task: the same (the Task keeps the frame).
  auto operator co_await() & noexcept { return std::move(*this).operator co_await(); }

  /// Binds a cancellation token: every operation the task awaits (and every
  /// task it awaits that has no token of its own) is cancelled when `token`
  /// is stopped. Without one, a task inherits its awaiter's token. (A
  /// spawned task's JoinHandle::abort, a join or a task group cancel their
  /// tasks without a token, at no cost per operation; a token costs a
  /// std::stop_callback per operation awaited.)
  Task with_stop_token(std::stop_token token) && noexcept {
    if (h_) h_.promise().stop_token = std::move(token);
    return std::move(*this);
  }

  /// For the runtime: releases the handle.
  std::coroutine_handle<promise_type> release() noexcept { return std::exchange(h_, {}); }
  /// The coroutine, still owned by the Task.
  std::coroutine_handle<promise_type> handle() const noexcept { return h_; }

 private:
  std::coroutine_handle<promise_type> h_;
};

namespace detail {
template <class T>
Task<T> TaskPromise<T>::get_return_object() noexcept {
  return Task<T>{std::coroutine_handle<TaskPromise<T>>::from_promise(*this)};
}
inline Task<void> TaskPromise<void>::get_return_object() noexcept {
  return Task<void>{std::coroutine_handle<TaskPromise<void>>::from_promise(*this)};
}
}  // namespace detail

namespace detail {
// Reads a field of the awaiting task's promise without suspending.
template <class Get>
struct PromiseQuery {
  Get get;
  decltype(get(std::declval<TaskPromiseBase&>())) value{};
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    static_assert(std::is_base_of_v<TaskPromiseBase, P>, "only a lev::Task can ask this");
    value = get(h.promise());
    return false;  // go on at once
  }
  auto await_resume() noexcept { return std::move(value); }
};
}  // namespace detail

/// `co_await lev::current_stop_token()`: the calling task's token: the one
/// bound by with_stop_token, else one stopped with the task's own
/// cancellation (JoinHandle::abort, a join or a task group cancelling it),
/// else a token that never stops.
inline auto current_stop_token() noexcept {
  auto get = [](detail::TaskPromiseBase& p) -> std::stop_token {
    if (p.stop_token.stop_possible() || !p.scope) return p.stop_token;
    return p.scope->token();
  };
  return detail::PromiseQuery<decltype(get)>{get};
}

namespace detail {
inline CancelFrom cancel_of(TaskPromiseBase& p) noexcept {
  return {p.scope, p.stop_token.stop_possible() ? &p.stop_token : nullptr};
}
/// `co_await detail::current_cancel()`: what cancels the calling task (its
/// scope and token; pointers into its own promise).
inline auto current_cancel() noexcept {
  return PromiseQuery<CancelFrom (*)(TaskPromiseBase&) noexcept>{&cancel_of};
}
}  // namespace detail

/// `co_await lev::current_loop()`: the loop the calling task runs on (null
/// for a task not started through spawn / block_on or a task they await).
inline auto current_loop() noexcept {
  auto get = [](detail::TaskPromiseBase& p) { return p.loop; };
  return detail::PromiseQuery<decltype(get)>{get};
}

}  // namespace lev
