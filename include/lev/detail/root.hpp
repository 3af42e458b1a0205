#pragma once
/// \file
/// Root coroutines: what spawn() and block_on() wrap a Task in. A root is
/// started by a queued `post` op (so it first runs from the completion
/// queue, never inside spawn), is listed on its loop until it ends, and
/// reports or stores what its task threw.

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "lev/detail/op.hpp"
#include "lev/task.hpp"

namespace lev {
class Loop;
}

namespace lev::detail {

struct RootPromise;
using RootHandle = std::coroutine_handle<RootPromise>;

void link_root(Loop& loop, RootPromise& p) noexcept;
void unlink_root(Loop& loop, RootPromise& p) noexcept;
/// Logs "a spawned task ended with an exception: <what>" (an error, through
/// lev/log.hpp).
void report_escaped(std::exception_ptr e) noexcept;

struct RootPromise : PooledFrame {
  OpBase start;  // the queued post that first resumes this root
  Loop* loop = nullptr;
  RootPromise* prev = nullptr;
  RootPromise* next = nullptr;
  bool detached = false;

  struct Final {
    bool await_ready() const noexcept { return false; }
    void await_suspend(RootHandle h) const noexcept {
      RootPromise& p = h.promise();
      unlink_root(*p.loop, p);
      if (p.detached) h.destroy();
    }
    void await_resume() const noexcept {}
  };

  RootHandle get_return_object() noexcept { return RootHandle::from_promise(*this); }
  std::suspend_always initial_suspend() const noexcept { return {}; }
  Final final_suspend() const noexcept { return {}; }
  void return_void() const noexcept {}
  void unhandled_exception() const noexcept { std::terminate(); }  // bodies catch all
};

template <class T>
struct BlockResult {
  std::optional<std::conditional_t<std::is_void_v<T>, bool, T>> value;
  std::exception_ptr error;
};

struct RootCoroutine {
  using promise_type = RootPromise;
  RootHandle h;
  RootCoroutine(RootHandle handle) noexcept : h(handle) {}  // NOLINT
};

template <class T>
RootCoroutine root_body(Task<T> task, BlockResult<T>* out) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(task);
      if (out) out->value.emplace(true);
    } else {
      T v = co_await std::move(task);
      if (out) out->value.emplace(std::move(v));
    }
  } catch (...) {
    if (out)
      out->error = std::current_exception();
    else
      report_escaped(std::current_exception());
  }
}

}  // namespace lev::detail
