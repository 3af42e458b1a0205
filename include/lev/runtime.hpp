#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// `lev::Runtime`: thread-per-core. N threads, each running its own Loop
/// until the runtime stops; work reaches a loop by posting to it.
///
///     lev::Runtime rt{{.threads = 2, .pin = true}};
///     for (std::size_t i = 0; i < rt.size(); ++i)
///       rt.spawn_on(i, [](lev::Loop& loop) { return serve(loop); });
///     rt.wait();  // until SIGINT / SIGTERM or rt.stop()
///
/// With `stop_on_signals`, SIGINT and SIGTERM are blocked in the thread
/// that builds the runtime (and so in every loop thread it starts) and
/// delivered through a signalfd on loop 0; the mask is restored when the
/// runtime is destroyed.

#include <signal.h>

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "lev/loop.hpp"
#include "lev/task.hpp"

namespace lev {

/// How a Runtime is built.
struct RuntimeOptions {
  /// Loops (threads); 0 = one per online CPU; at most 65536.
  std::size_t threads = 0;
  /// Every loop's model.
  Model model = Model::proactor;
  /// Options for every loop (a backend object cannot be shared: use names).
  LoopOptions loop{};
  /// Pin loop i to CPU i (mod the CPUs this process may use).
  bool pin = false;
  /// Stop every loop on SIGINT / SIGTERM.
  bool stop_on_signals = true;
};

/// N threads, each running its own Loop until stop(). Not movable; every
/// member may be called from any thread unless it says otherwise.
class Runtime {
 public:
  /// Starts the loops; returns once each is constructed. Throws what a
  /// loop's construction threw (std::invalid_argument, std::system_error).
  explicit Runtime(RuntimeOptions options = {});
  /// stop(), then wait().
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  /// How many loops (and threads) there are.
  [[nodiscard]] std::size_t size() const noexcept { return slots_.size(); }
  /// Loop `i`. Use it on its own thread (from a task spawned on it); from
  /// elsewhere, post to it. Valid until that loop has stopped.
  [[nodiscard]] Loop& loop(std::size_t i) const { return *slot(i).loop; }

  /// Runs `fn()` on loop `i`'s thread, from its completion queue. Any
  /// thread. False when that loop has already stopped (fn is dropped).
  template <class F>
  bool post_to(std::size_t i, F&& fn) {
    Slot& s = slot(i);
    std::lock_guard lock(s.mu);
    if (!s.alive) return false;
    s.loop->post(std::forward<F>(fn));
    return true;
  }
  /// Starts a task on loop `i`. Any thread. `make(loop)` builds the task on
  /// that loop's thread; `make` itself is kept alive until the task ends,
  /// so a coroutine lambda may use its captures. A ready Task works too.
  template <class Make>
  requires std::is_invocable_v<Make&, Loop&>
  bool spawn_on(std::size_t i, Make make) {
    Loop* l = &loop(i);
    return post_to(i,
                   [l, make = std::move(make)]() mutable { l->spawn(keep(std::move(make), *l)); });
  }
  /// Starts a ready-made `task` on loop `i`. Any thread. False when that
  /// loop has already stopped (the task is destroyed unstarted).
  template <class T>
  bool spawn_on(std::size_t i, Task<T> task) {
    Loop* l = &loop(i);
    return post_to(i, [l, t = std::move(task)]() mutable { l->spawn(std::move(t)); });
  }

  /// Stops every loop (any thread, also from a task on one of them). Each
  /// loop destroys its remaining tasks, settling their operations first.
  void stop() noexcept;
  /// Blocks until every loop has stopped and its thread ended. Rethrows
  /// the first exception a loop's thread ended with.
  void wait();
  /// stop() was called (or a signal stopped the loops).
  [[nodiscard]] bool stopped() const noexcept;

 private:
  // The frame owns `make` (a by-value parameter) while the task it built runs.
  template <class Make>
  static Task<> keep(Make make, Loop& l) {
    (void)co_await make(l);
  }
  struct Slot {
    std::mutex mu;
    bool alive = false;
    Loop* loop = nullptr;
    std::thread thread;
  };
  Slot& slot(std::size_t i) const;
  void body(std::size_t i, const RuntimeOptions& o);

  std::vector<std::unique_ptr<Slot>> slots_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::size_t started_ = 0;
  std::exception_ptr error_;
  bool stopping_ = false;
  bool signals_blocked_ = false;
  sigset_t old_mask_{};
};

}  // namespace lev
