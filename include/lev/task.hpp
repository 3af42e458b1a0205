#pragma once
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
#include <type_traits>
#include <utility>
#include <variant>

namespace lev {

template <class T = void>
class Task;

namespace detail {

// A task that finishes while its awaiter is still inside await_suspend
// (it never suspended) returns there instead of resuming the awaiter by
// transfer: the awaiter then continues without a nested frame. So a loop
// over a million ready tasks keeps a flat stack even where the compiler does
// not turn symmetric transfer into a tail call (-O0, ASan).
struct TaskPromiseBase {
  std::coroutine_handle<> continuation = std::noop_coroutine();
  bool inline_phase = false;

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

template <class T>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::TaskPromise<T>;
  using value_type = T;

  Task() noexcept = default;
  explicit Task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
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

  [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(h_); }
  [[nodiscard]] bool done() const noexcept { return h_ && h_.done(); }

  auto operator co_await() && noexcept {
    struct Awaiter {
      std::coroutine_handle<promise_type> h;
      bool await_ready() const noexcept { return !h || h.done(); }
      bool await_suspend(std::coroutine_handle<> caller) {
        promise_type& p = h.promise();
        p.continuation = caller;
        p.inline_phase = true;
        h.resume();
        if (h.done()) return false;  // finished synchronously: continue here
        p.inline_phase = false;      // it will resume `caller` when it ends
        return true;
      }
      T await_resume() { return h.promise().take(); }
    };
    return Awaiter{h_};
  }
  auto operator co_await() & noexcept { return std::move(*this).operator co_await(); }

  /// For the runtime: releases the handle.
  std::coroutine_handle<promise_type> release() noexcept { return std::exchange(h_, {}); }
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

}  // namespace lev
