#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Running tasks concurrently on one loop, and bounding them in time.
///
///     auto [a, b] = co_await lev::when_all(fetch(x), fetch(y));
///     auto first = co_await lev::when_any(fetch(x), fetch(y));
///     if (auto* body = first.get_if<0>()) ...;   // or first.index, first.value
///     auto r = co_await lev::with_timeout(fetch(x), 2s);  // Result<...>
///     if (!r && r.error().is_timeout()) ...;
///
/// Nothing is left running behind the caller's back: each combinator
/// returns only after every child has ended. Children inherit the caller's
/// loop and are cancelled (their operations end with
/// errc::operation_canceled) when the combinator decides so, or when the
/// caller is cancelled (its JoinHandle aborted, its token stopped, its own
/// join or group cancelling it).
///
/// What each gives back:
///
/// - when_all(a, b): a tuple of every value (void: std::monostate). A
///   child is cancelled only after another threw; the first exception is
///   rethrown.
/// - when_any(a, b): a Winner, the `index` of the first to end and its
///   `value`, a std::variant (read it with `get_if<I>`, `get<I>`,
///   `won<I>`). Every loser is cancelled; what a loser returns or throws is
///   dropped.
/// - with_timeout(t, d): a Result, the task's value or errc::timed_out.
///   The task is cancelled when `d` passes first; a value it still
///   produced is kept.
///
/// with_timeout and tokio's `timeout` differ where a task is cancelled by
/// the deadline and still produces a value (an operation that completed in
/// the same round as the deadline, so the bytes were taken; or a fallback
/// the task returns after catching its cancellation): tokio drops the
/// future and reports the expiry; lev awaits the task and returns its
/// value, so a value a task produced is never dropped. A timeout is
/// reported whenever the task ended by its cancellation (a cancelled
/// operation's error, or an operation_canceled exception): `is_timeout()`
/// on the result's error, for every task type. For the expiry to win
/// whatever the task did, race it against a sleep:
///
///     auto w = co_await lev::when_any(fetch(x), loop.sleep_for(2s));  // w.won<1>(): expired

#include <cstddef>
#include <exception>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "lev/clock.hpp"
#include "lev/detail/join.hpp"
#include "lev/error.hpp"
#include "lev/loop.hpp"
#include "lev/task.hpp"

namespace lev {

/// What a task's value becomes in a combinator's result: T, and
/// std::monostate for a void task.
template <class T>
using ValueOf = detail::ValueOf<T>;

namespace detail {
template <class V>
inline constexpr bool is_variant = false;
template <class... A>
inline constexpr bool is_variant<std::variant<A...>> = true;
}  // namespace detail

/// What when_any returns: which child ended first, and its value. With
/// tasks of several types (when_any(a, b)) the value is a std::variant
/// whose alternative I is the I-th task's type (void: std::monostate), read
/// by position:
///
///     auto w = co_await lev::when_any(read_line(loop, fd), loop.sleep_for(5s));
///     if (auto* line = w.get_if<0>()) use(*line);  // the read won
///     else if (w.won<1>()) ...;                    // the sleep won: 5 s passed
///
/// Over a range (when_any(std::vector<Task<T>>)) the value is the T itself.
template <class V>
struct Winner {
  std::size_t index;  ///< which task ended first (its position among the arguments)
  V value;            ///< its value (std::monostate for a void task)

  /// Whether the task at position `I` won.
  template <std::size_t I>
  [[nodiscard]] bool won() const noexcept {
    return index == I;
  }
  /// The value of the task at position `I` if it won, else null.
  template <std::size_t I>
  [[nodiscard]] auto* get_if() noexcept requires detail::is_variant<V> {
    return std::get_if<I>(&value);
  }
  /// The value of the task at position `I` if it won, else null.
  template <std::size_t I>
  [[nodiscard]] const auto* get_if() const noexcept requires detail::is_variant<V> {
    return std::get_if<I>(&value);
  }
  /// The value of the task at position `I`; throws std::bad_variant_access
  /// when another task won.
  template <std::size_t I>
  [[nodiscard]] auto& get() requires detail::is_variant<V> {
    return std::get<I>(value);
  }
  /// The value of the task at position `I` (see get).
  template <std::size_t I>
  [[nodiscard]] const auto& get() const requires detail::is_variant<V> {
    return std::get<I>(value);
  }
};

namespace detail {
template <class T>
inline constexpr bool is_task = false;
template <class T>
inline constexpr bool is_task<Task<T>> = true;

/// An awaiter with its own await_resume (every lev operation's awaitable).
template <class A>
concept DirectAwaitable = !is_task<std::remove_cvref_t<A>> && requires(A a) {
  a.await_ready();
  a.await_resume();
};
template <class A>
using AwaitResult = decltype(std::declval<A&>().await_resume());

// Awaits `a` (moved into the task's frame before it starts).
template <class A>
Task<AwaitResult<A>> as_task(A a) {
  if constexpr (std::is_void_v<AwaitResult<A>>)
    co_await std::move(a);
  else
    co_return co_await std::move(a);
}

/// A Task as it is; any other awaitable awaited in a task of its own.
template <class A>
auto to_task(A a) {
  if constexpr (is_task<A>)
    return a;
  else
    return as_task(std::move(a));
}
/// Arguments when_all / when_any take beside tasks: awaitables, at least one.
template <class... A>
concept AwaitablesNotAllTasks = (sizeof...(A) > 0) && ((is_task<A> || DirectAwaitable<A>)&&...) &&
                                !(is_task<A> && ...);
}  // namespace detail

/// Runs every task concurrently; returns their values as a tuple (void
/// tasks give std::monostate). The first exception cancels the other
/// tasks; it is rethrown once all have ended.
template <class... T>
Task<std::tuple<ValueOf<T>...>> when_all(Task<T>... tasks) {
  std::tuple<std::optional<detail::ValueOf<T>>...> slots;
  detail::Join join(detail::Join::Policy::all);
  std::apply([&](auto&... slot) { (join.add(detail::drive(std::move(tasks), &slot)), ...); },
             slots);
  co_await join;
  if (join.first_error()) std::rethrow_exception(join.first_error());
  co_return std::apply(
      [](auto&... slot) { return std::tuple<detail::ValueOf<T>...>(std::move(*slot)...); }, slots);
}

/// when_all over a range: the values in the tasks' order (void: nothing).
template <class T>
Task<std::conditional_t<std::is_void_v<T>, void, std::vector<ValueOf<T>>>> when_all(
    std::vector<Task<T>> tasks) {
  std::vector<std::optional<detail::ValueOf<T>>> slots(tasks.size());
  detail::Join join(detail::Join::Policy::all);
  for (std::size_t i = 0; i < tasks.size(); ++i)
    join.add(detail::drive(std::move(tasks[i]), &slots[i]));
  co_await join;
  if (join.first_error()) std::rethrow_exception(join.first_error());
  if constexpr (!std::is_void_v<T>) {
    std::vector<T> out;
    out.reserve(slots.size());
    for (auto& s : slots) out.push_back(std::move(*s));
    co_return out;
  }
}

namespace detail {
template <class V, std::size_t I, class Slots>
void take_winner(std::optional<V>& out, std::size_t index, Slots& slots) {
  if (index == I && std::get<I>(slots))
    out.emplace(std::in_place_index<I>, std::move(*std::get<I>(slots)));
}
}  // namespace detail

/// Runs every task concurrently; when the first ends, cancels the others
/// and waits for them, then returns its index and value (or rethrows what
/// it threw). What the cancelled tasks return or throw is dropped.
template <class... T>
Task<Winner<std::variant<ValueOf<T>...>>> when_any(Task<T>... tasks) {
  static_assert(sizeof...(T) > 0, "lev::when_any needs at least one task");
  using V = std::variant<detail::ValueOf<T>...>;
  std::tuple<std::optional<detail::ValueOf<T>>...> slots;
  detail::Join join(detail::Join::Policy::any);
  std::apply([&](auto&... slot) { (join.add(detail::drive(std::move(tasks), &slot)), ...); },
             slots);
  co_await join;
  const std::size_t first = join.first();
  if (join.error(first)) std::rethrow_exception(join.error(first));
  std::optional<V> value;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (detail::take_winner<V, I>(value, first, slots), ...);
  }
  (std::index_sequence_for<T...>{});
  co_return Winner<V>{first, std::move(*value)};
}

/// when_all / when_any with operation awaitables among the tasks
/// (`when_any(read_line(loop, fd), loop.sleep_for(5s))`): each awaitable is
/// awaited in a task of its own (its value: the `Result` it gives).
template <class... A>
requires detail::AwaitablesNotAllTasks<A...>
auto when_all(A... awaitables) { return when_all(detail::to_task(std::move(awaitables))...); }
/// when_any with operation awaitables among the tasks (see when_all above).
template <class... A>
requires detail::AwaitablesNotAllTasks<A...>
auto when_any(A... awaitables) { return when_any(detail::to_task(std::move(awaitables))...); }

/// when_any over a non-empty range.
template <class T>
Task<Winner<ValueOf<T>>> when_any(std::vector<Task<T>> tasks) {
  if (tasks.empty()) throw std::invalid_argument("lev::when_any: no task to wait for");
  std::vector<std::optional<detail::ValueOf<T>>> slots(tasks.size());
  detail::Join join(detail::Join::Policy::any);
  for (std::size_t i = 0; i < tasks.size(); ++i)
    join.add(detail::drive(std::move(tasks[i]), &slots[i]));
  co_await join;
  const std::size_t first = join.first();
  if (join.error(first)) std::rethrow_exception(join.error(first));
  co_return Winner<detail::ValueOf<T>>{first, std::move(*slots[first])};
}

namespace detail {

template <class T>
struct TimeoutOf {
  using type = Result<T>;
};
template <class U>
struct TimeoutOf<Result<U>> {
  using type = Result<U>;
};

// True when the limit passed; false when it was cancelled first (the task
// ended, or the caller was cancelled: not a timeout).
inline Task<bool> sleeper(Loop& loop, Duration d) {
  auto r = co_await loop.after(d);
  co_return r.has_value();
}

inline bool is_cancellation(const std::exception_ptr& e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const std::system_error& se) {
    return se.code() == std::errc::operation_canceled;
  } catch (...) {
    return false;
  }
}

inline Error timed_out() {
  return Error{std::make_error_code(std::errc::timed_out), "with_timeout"};
}
// The task's cancellation error as a timeout: its op, fd, path and the
// bytes it moved first (`transferred`) are kept.
inline Error timed_out(Error cancelled) {
  cancelled.code = std::make_error_code(std::errc::timed_out);
  return cancelled;
}

}  // namespace detail

/// What with_timeout gives for a `Task<T>`: `Result<T>`, or T itself when
/// it is a Result already (`Result<void>` for void).
template <class T>
using TimeoutResult = typename detail::TimeoutOf<T>::type;

/// Runs `task` with a time limit. A task returning `Result<U>` gives
/// `Result<U>`; any other T gives `Result<T>` (`Result<void>` for void).
///
/// - The task ends first: its outcome (the timer is cancelled).
/// - `limit` passes first: the task is cancelled and awaited. It ended by
///   its cancellation (a Result whose error is_cancelled(), or an
///   operation_canceled exception): errc::timed_out, keeping the error's
///   op, fd, path and `transferred` (a send_all cut short says how many
///   bytes went: "send(fd 7) after 8192 bytes: Connection timed out"). It
///   produced a value anyway (an operation that completed in the same
///   round as the deadline, a fallback returned after catching the
///   cancellation): that value, never dropped (see the file comment for
///   how this differs from tokio's timeout, and when_any for the other
///   choice). Another error: that error. A void task has no value to
///   keep: it gives timed_out however it ended.
/// - The caller is cancelled from outside: a cancellation, not a timeout.
///
/// Exceptions other than cancellation are rethrown.
template <class T>
Task<TimeoutResult<T>> with_timeout(Loop& loop, Task<T> task, Duration limit) {
  using Out = TimeoutResult<T>;
  std::optional<detail::ValueOf<T>> value;
  std::optional<bool> limit_passed;
  detail::Join join(detail::Join::Policy::any);
  join.add(detail::drive(std::move(task), &value));
  join.add(detail::drive(detail::sleeper(loop, limit), &limit_passed));
  co_await join;
  // A timeout only when the limit really passed first: a caller cancelled
  // from outside cancels the timer too, and that is a cancellation.
  const bool expired = join.first() == 1 && limit_passed.value_or(false);
  if (const std::exception_ptr& e = join.error(0)) {
    if (expired && detail::is_cancellation(e)) co_return detail::timed_out();
    std::rethrow_exception(e);
  }
  if constexpr (std::is_void_v<T>) {
    if (expired) co_return detail::timed_out();
    co_return Out{};
  } else if constexpr (std::is_same_v<Out, T>) {  // T is a Result
    if (expired && !*value && value->error().is_cancelled())
      co_return detail::timed_out(value->error());
    co_return std::move(*value);
  } else {
    co_return Out(std::move(*value));
  }
}

/// with_timeout for any awaitable, not only a Task: an operation's
/// awaitable (`loop.recv(fd, buf)`, `loop.readable(fd)`...) is awaited in a
/// task of its own and cancelled when `limit` passes first.
///     auto n = co_await lev::with_timeout(loop, loop.recv(fd, buf), 2s);
template <detail::DirectAwaitable A>
auto with_timeout(Loop& loop, A awaitable, Duration limit) {
  return with_timeout(loop, detail::as_task(std::move(awaitable)), limit);
}

/// with_timeout on the loop the calling task runs on.
template <class T>
Task<TimeoutResult<T>> with_timeout(Task<T> task, Duration limit) {
  Loop* loop = co_await current_loop();
  if (!loop) throw std::logic_error("lev::with_timeout: the calling task runs on no loop");
  co_return co_await with_timeout(*loop, std::move(task), limit);
}
/// with_timeout for any awaitable, on the loop the calling task runs on.
template <detail::DirectAwaitable A>
auto with_timeout(A awaitable, Duration limit) {
  return with_timeout(detail::as_task(std::move(awaitable)), limit);
}

}  // namespace lev
