#pragma once
/// \file
/// A task tree's own cancellation, without a std::stop_callback per
/// operation. Not for users; docs/cancellation.md ("Scopes").
///
/// A scope belongs to a spawned task (its JoinHandle), to each child of a
/// join (when_all, when_any, with_timeout) and to each child and the body
/// of a task group; every task those await runs in it. A task awaits one
/// thing at a time, so a scope has one slot: the awaiter that suspends the
/// tree writes what would cancel it there (two stores) and clears it when
/// it resumes. `cancel()` marks the scope stopped and calls that slot: the
/// operation is cancelled directly, and every later one in the tree starts
/// cancelled. A std::stop_token is involved only where a user handed one in
/// (Task::with_stop_token, stop_on, spawn(task, token)), or asked for one
/// (`co_await current_stop_token()`: the scope's view, made on demand).
/// Loop thread only.

#include <stop_token>
#include <utility>

namespace lev::detail {

struct Scope {
  using Handler = void (*)(void*) noexcept;

  Handler wait_fn = nullptr;  // cancels what the tree waits on now (null: nothing)
  void* wait_arg = nullptr;
  bool stopped = false;
  std::stop_source view{std::nostopstate};  // made by token(): requested by cancel()

  Scope() = default;
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

  /// Stops the tree: the waiting operation is cancelled (it still completes
  /// through the completion queue), later ones start cancelled. Idempotent.
  void cancel() noexcept {
    if (stopped) return;
    stopped = true;
    if (wait_fn) wait_fn(wait_arg);
    if (view.stop_possible()) view.request_stop();
  }
  static void cancel_thunk(void* scope) noexcept { static_cast<Scope*>(scope)->cancel(); }

  /// A std::stop_token stopped with the scope (what current_stop_token()
  /// gives a task of this tree). Made on first use.
  std::stop_token token() {
    if (!view.stop_possible()) {
      view = std::stop_source();
      if (stopped) view.request_stop();
    }
    return view.get_token();
  }
};

/// Where an awaiter takes its cancellation from: its task's scope, and a
/// user's std::stop_token (either may be absent).
struct CancelFrom {
  Scope* scope = nullptr;
  const std::stop_token* token = nullptr;

  [[nodiscard]] bool none() const noexcept { return !scope && !token; }
  [[nodiscard]] bool stopped() const noexcept {
    return (scope && scope->stopped) || (token && token->stop_requested());
  }
};

}  // namespace lev::detail
