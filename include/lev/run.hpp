#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// `lev::run`: a program's main as a coroutine on a loop, with a graceful
/// shutdown on SIGINT / SIGTERM / SIGHUP (Asio's signal_set plus
/// io_context::run, tokio's `#[tokio::main]` plus `ctrl_c()`).
///
///     int main() {
///       return lev::run([](lev::Loop& loop, std::stop_token stop) -> lev::Task<int> {
///         auto listener = lev::net::Listener::tcp("127.0.0.1", 8080).value();
///         lev::net::Acceptor acceptor{loop, listener, [&](lev::Fd fd, lev::SocketAddress) {
///           return serve(loop, std::move(fd));
///         }};
///         loop.spawn(acceptor.run());
///         co_await lev::until_stopped(stop);  // Ctrl-C, SIGTERM or SIGHUP
///         acceptor.stop();                    // then up to `grace` to wind down
///         co_return 0;
///       }, {.grace = 5s});
///     }
///
/// The stop token is a request, not a cancellation: nothing is cancelled
/// when a stop signal arrives. The main task hears of it (`until_stopped`,
/// `stop.stop_requested()`, a `std::stop_callback`) and winds down in its
/// own way: stops accepting, finishes what is under way, flushes. If it
/// has not returned `grace` after the signal, or when a second stop signal
/// comes, run() cancels it (a hard stop: the operation it waits on, and
/// every later one, ends with errc::operation_canceled). When the main
/// task returns, run() destroys the loop, which cancels and reaps whatever
/// is still running on it (spawned tasks, operations, timers), and returns
/// the task's value as the exit code.

#include <signal.h>

#include <chrono>
#include <concepts>
#include <functional>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <vector>

#include "lev/clock.hpp"
#include "lev/error.hpp"
#include "lev/loop.hpp"
#include "lev/task.hpp"

namespace lev {

/// How lev::run sets up its loop and its shutdown:
/// `lev::run(main, {.model = lev::Model::reactor, .grace = 30s})`.
struct RunOptions {
  /// The engine model of the loop.
  Model model = Model::proactor;
  /// The loop's options. A proactor with no backend named gets "auto":
  /// io_uring, or the epoll engine where io_uring is refused (saying why
  /// through the log hook).
  LoopOptions loop{};
  /// The signals that request a stop; each is handled through the loop
  /// (Loop::signal: blocked in the thread that calls run(), and in the
  /// threads it starts later). Empty: run() handles no signal.
  std::vector<int> stop_signals{SIGINT, SIGTERM, SIGHUP};
  /// How long the main task has to return after the first stop signal
  /// before run() cancels it. A second stop signal cancels it at once.
  /// Zero: cancel at the first signal (the token is stopped first).
  Duration grace = std::chrono::seconds(10);
};

namespace detail {

using RunMain = std::function<Task<int>(Loop&, std::stop_token)>;
/// run()'s body: the loop, the signals, the grace timer (runtime/core/run.cpp).
int run_main(RunOptions options, const RunMain& main);

template <class T>
Task<int> exit_code_of(Task<T> task) {
  if constexpr (std::is_void_v<T>) {
    co_await std::move(task);
    co_return 0;
  } else {
    co_return co_await std::move(task);
  }
}

template <class R>
inline constexpr bool is_main_task = std::is_same_v<R, Task<int>> || std::is_same_v<R, Task<void>>;

}  // namespace detail

/// Runs `main` on a new Loop until it returns; its value is the exit code
/// (a `Task<void>`: 0). `main` is called as `main(loop, stop)` (or
/// `main(loop)`) and returns `lev::Task<int>` or `lev::Task<void>`; it,
/// and what it captures, lives until run() returns, so a capturing
/// coroutine lambda is safe here. `stop` is requested by the first of
/// `options.stop_signals`; see the file comment for the grace period and
/// the hard stop.
///
/// Exit code: the main task's value. An exception escaping it (or the
/// loop failing to start: io_uring and epoll both refused) is reported
/// through the log hook and gives 1; after a hard stop, an
/// operation_canceled exception (a cancelled Result's `.value()`) gives
/// 128 + the signal's number, as a shell reports a process a signal ended.
///
/// Call it from the thread that is to run the loop (usually main's), before
/// starting threads of your own: the stop signals are blocked in the
/// calling thread only, and threads started later inherit the mask; a
/// thread started earlier would take them with their default action.
template <class F>
requires(std::invocable<F&, Loop&, std::stop_token> ||
         std::invocable<F&, Loop&>) int run(F&& main, RunOptions options = {}) {
  return detail::run_main(std::move(options), [&main](Loop& loop, std::stop_token stop) {
    if constexpr (std::invocable<F&, Loop&, std::stop_token>) {
      using R = std::invoke_result_t<F&, Loop&, std::stop_token>;
      static_assert(detail::is_main_task<R>,
                    "lev::run: main must return lev::Task<int> or lev::Task<void>");
      return detail::exit_code_of(std::invoke(main, loop, std::move(stop)));
    } else {
      using R = std::invoke_result_t<F&, Loop&>;
      static_assert(detail::is_main_task<R>,
                    "lev::run: main must return lev::Task<int> or lev::Task<void>");
      return detail::exit_code_of(std::invoke(main, loop));
    }
  });
}

/// Completes when `token` is stopped (at once if it is already), or when
/// the awaiting task is cancelled first (its JoinHandle aborted, a
/// when_any it is in decided, run()'s hard stop: `token` may then be
/// unstopped). The wait is no operation of the loop's: it keeps nothing
/// alive, and costs nothing until it ends. For a task on a loop (spawned,
/// block_on, lev::run, or awaited by one); std::logic_error otherwise.
///
///     co_await lev::until_stopped(stop);   // inside lev::run's main
Task<void> until_stopped(std::stop_token token);

}  // namespace lev
