#pragma once
/// \file
/// Ties what cancels a task (its scope, detail/scope.hpp, and a user's
/// std::stop_token) to something on a loop (an operation to cancel, a
/// waiter to release). The scope part is two stores, no std::stop_callback.
/// A stop request made on the loop's thread acts at once (the target still
/// completes only through the completion queue); a token stopped on another
/// thread is posted to the loop and acts there.

#include <atomic>
#include <coroutine>
#include <new>
#include <stop_token>
#include <utility>

#include "lev/detail/scope.hpp"
#include "lev/task.hpp"

namespace lev {
class Loop;
}

namespace lev::detail {

struct RemoteStop;

/// The token part: a std::stop_callback made only when a user's token is
/// armed (an operation's awaiter carries one; building it is one store).
class TokenLink {
 public:
  using Handler = void (*)(void*) noexcept;

  TokenLink() noexcept {}  // NOLINT: the other fields are written by arm()
  TokenLink(const TokenLink&) = delete;
  TokenLink& operator=(const TokenLink&) = delete;
  ~TokenLink() { disarm(); }

  /// Loop thread only. Calls `handler(arg)` once, on the loop thread, when
  /// `token` is stopped; at once (inside this call) if it already is.
  void arm(Loop& loop, const std::stop_token& token, Handler handler, void* arg);
  /// Loop thread only. After it returns, the handler is never called.
  void disarm() noexcept {
    if (armed_) [[unlikely]]
      disarm_slow();
  }

 private:
  friend struct RemoteStop;
  struct Fire {
    TokenLink* self;
    void operator()() const noexcept;
  };
  void disarm_slow() noexcept;

  using Callback = std::stop_callback<Fire>;
  Callback& cb() noexcept { return *std::launder(reinterpret_cast<Callback*>(storage_)); }

  bool armed_ = false;                                         // a token's callback is registered
  alignas(Callback) unsigned char storage_[sizeof(Callback)];  // the callback while armed
  Loop* loop_;
  Handler handler_;
  void* arg_;
  union {
    std::atomic<RemoteStop*> posted_;  // made by arm(): a link never armed never touches it
  };
};

/// Both parts: the task's scope (its wait slot, two stores) and a user's
/// token. What waiters other than operations use (Event, Mutex, Channel,
/// a join, a task group, Stream's watermark wait).
class StopLink {
 public:
  using Handler = TokenLink::Handler;

  StopLink() noexcept = default;
  StopLink(const StopLink&) = delete;
  StopLink& operator=(const StopLink&) = delete;
  ~StopLink() { disarm(); }

  /// Loop thread only. Calls `handler(arg)` once, on the loop thread, when
  /// `token` is stopped; at once (inside this call) if it already is.
  void arm(Loop& loop, const std::stop_token& token, Handler handler, void* arg) {
    token_.arm(loop, token, handler, arg);
  }
  /// Loop thread only. Calls `handler(arg)` when `from`'s scope is
  /// cancelled or its token stopped (at once if either already is), until
  /// disarmed.
  void arm(Loop& loop, CancelFrom from, Handler handler, void* arg) {
    if (from.scope && !arm(*from.scope, handler, arg)) [[unlikely]]
      return;
    if (from.token) [[unlikely]]
      token_.arm(loop, *from.token, handler, arg);
  }
  /// The scope part alone: false when the scope was stopped already (the
  /// handler has then been called, and nothing is armed).
  bool arm(Scope& scope, Handler handler, void* arg) noexcept {
    if (scope.stopped) [[unlikely]] {
      handler(arg);
      return false;
    }
    scope_ = &scope;
    scope_arg_ = arg;
    scope.wait_fn = handler;
    scope.wait_arg = arg;
    return true;
  }
  /// Loop thread only. After it returns, the handler is never called.
  void disarm() noexcept {
    if (scope_) {
      if (scope_->wait_arg == scope_arg_) scope_->wait_fn = nullptr;
      scope_ = nullptr;
    }
    token_.disarm();
  }

 private:
  TokenLink token_;
  Scope* scope_ = nullptr;  // whose wait slot holds us (null: none)
  void* scope_arg_;
};

/// `awaitable.stop_on(token)`: the awaitable, cancelled when `token` is
/// stopped (instead of the awaiting task's token; a token that can never
/// stop falls back to the task's) or when the task's own scope is
/// cancelled. A wrapper, so that awaitables without a token of their own
/// carry none: every awaiter A provides `suspend(handle, CancelFrom)`, and
/// StopOn<A> hands it this token.
template <class A>
class [[nodiscard]] StopOn : public A {
 public:
  StopOn(A&& a, std::stop_token token) noexcept : A(std::move(a)), token_(std::move(token)) {}
  StopOn(StopOn&&) noexcept = default;
  StopOn&& stop_on(std::stop_token token) && noexcept {
    token_ = std::move(token);
    return std::move(*this);
  }
  template <class P>
  auto await_suspend(std::coroutine_handle<P> h) {  // A's: void, or bool (false: done at once)
    return A::suspend(h, CancelFrom{task_scope(h), token_.stop_possible() ? &token_ : task_token(h)});
  }

 private:
  std::stop_token token_;
};

}  // namespace lev::detail
