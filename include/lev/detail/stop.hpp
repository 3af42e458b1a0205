#pragma once
/// \file
/// Ties a std::stop_token to something on a loop (an operation to cancel, a
/// waiter to release). A stop request made on the loop's thread acts at
/// once (the target still completes only through the completion queue); a
/// request made on another thread is posted to the loop and acts there.

#include <atomic>
#include <coroutine>
#include <new>
#include <stop_token>
#include <utility>

#include "lev/task.hpp"

namespace lev {
class Loop;
}

namespace lev::detail {

struct RemoteStop;

class StopLink {
 public:
  using Handler = void (*)(void*) noexcept;

  // Cheap to build: an awaiter carries one per operation, and almost all
  // of them never arm it (only `armed_` is written here).
  StopLink() noexcept {}  // NOLINT: the other fields are written by arm()
  StopLink(const StopLink&) = delete;
  StopLink& operator=(const StopLink&) = delete;
  ~StopLink() { disarm(); }

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
    StopLink* self;
    void operator()() const noexcept;
  };
  void disarm_slow() noexcept;

  using Callback = std::stop_callback<Fire>;
  Callback& cb() noexcept { return *std::launder(reinterpret_cast<Callback*>(storage_)); }

  bool armed_ = false;
  alignas(Callback) unsigned char storage_[sizeof(Callback)];  // the callback while armed
  Loop* loop_;
  Handler handler_;
  void* arg_;
  union {
    std::atomic<RemoteStop*> posted_;  // made by arm(): a link never armed never touches it
  };
};

/// `awaitable.stop_on(token)`: the awaitable, cancelled when `token` is
/// stopped instead of when the awaiting task's token is (a token that can
/// never stop falls back to the task's). A wrapper, so that awaitables
/// without a token of their own carry none: every awaiter A provides
/// `suspend(handle, const std::stop_token*)`, and StopOn<A> hands it this one.
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
  void await_suspend(std::coroutine_handle<P> h) {
    A::suspend(h, token_.stop_possible() ? &token_ : task_token(h));
  }

 private:
  std::stop_token token_;
};

}  // namespace lev::detail
