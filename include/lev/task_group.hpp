#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// `lev::TaskGroup`, a nursery: child tasks spawned into a scope that
/// cannot end before they have.
///
///     co_await lev::with_task_group([&](lev::TaskGroup& g) -> lev::Task<> {
///       for (auto& peer : peers) g.spawn(talk(loop, peer));
///       co_return;
///     });  // here every child has ended
///
/// The first failure (of the body or of a child) cancels the rest through
/// the group's stop token and is rethrown once, after all have ended.

#include <coroutine>
#include <cstddef>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "lev/detail/join.hpp"
#include "lev/detail/waiter.hpp"
#include "lev/loop.hpp"
#include "lev/task.hpp"

namespace lev {

/// A scope for child tasks on one loop: see the file comment. Made by
/// with_task_group(); use it on its loop's thread only.
class TaskGroup final : private detail::JoinBase {
 public:
  /// A group on `loop` whose children stop when `parent` does.
  explicit TaskGroup(Loop& loop, std::stop_token parent = {}) : loop_(&loop) {
    if (parent.stop_possible()) link_.emplace(parent, detail::StopForward{&source_});
  }
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;
  /// A group left with running children (its awaiting frame destroyed, as
  /// at loop teardown) destroys them; their operations are settled first.
  ~TaskGroup() {
    link_.reset();
    while (joiners_.pop_front()) {  // parked joiners stay parked, and no longer refer to us
    }
    while (children_) {
      detail::DriverPromise* p = children_;
      unlink(*p);
      if (static_cast<unsigned>(p->start.state) - 1u < 2u) loop_->abandon(p->start);
      detail::DriverHandle::from_promise(*p).destroy();
    }
  }

  /// Starts `task` as a child: it first runs from the loop's completion
  /// queue, with the group's stop token. Its value is dropped; an exception
  /// it throws fails the group.
  template <class T>
  void spawn(Task<T> task) {
    detail::DriverHandle h = detail::drive<T>(std::move(task), nullptr).h;
    detail::DriverPromise& p = h.promise();
    p.join = this;
    p.loop = loop_;
    p.stop_token = source_.get_token();
    p.prev = nullptr;
    p.next = children_;
    if (children_) children_->prev = &p;
    children_ = &p;
    ++running_;
    p.start.kind = detail::OpKind::post;
    p.start.ctx = h.address();
    p.start.deliver = nullptr;
    loop_->start(p.start);
  }

  /// Cancels every child (and the body of with_task_group).
  void cancel() noexcept { source_.request_stop(); }
  /// The token every child runs with: stopped by cancel(), by the first
  /// failure, or by the parent token.
  [[nodiscard]] std::stop_token stop_token() const noexcept { return source_.get_token(); }
  /// Children that have not ended yet.
  [[nodiscard]] std::size_t running() const noexcept { return running_; }
  /// The loop the children run on.
  [[nodiscard]] Loop& loop() const noexcept { return *loop_; }
  /// The first failure, or null.
  [[nodiscard]] const std::exception_ptr& error() const noexcept { return error_; }
  /// Records a failure from outside the children (the first one wins) and
  /// cancels the group.
  void fail(std::exception_ptr e) noexcept {
    if (!error_) error_ = std::move(e);
    cancel();
  }

  /// What join() returns: resumes the awaiter once no child is running.
  class [[nodiscard]] JoinAwaiter {
   public:
    /// Waits on group `g`.
    explicit JoinAwaiter(TaskGroup& g) noexcept : g_(&g) {}
    JoinAwaiter(const JoinAwaiter&) = delete;
    JoinAwaiter& operator=(const JoinAwaiter&) = delete;
    /// A frame destroyed while parked (loop teardown) leaves nothing behind.
    ~JoinAwaiter() {
      if (w_.queued)
        g_->joiners_.remove(w_);
      else if (static_cast<unsigned>(w_.op.state) - 1u < 2u)
        w_.loop->abandon(w_.op);
    }
    bool await_ready() const noexcept { return g_->running_ == 0; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      w_.op.kind = detail::OpKind::post;
      w_.op.ctx = h.address();
      w_.op.deliver = nullptr;
      w_.loop = g_->loop_;
      g_->joiners_.push_back(w_);
    }
    void await_resume() const noexcept {}

   private:
    TaskGroup* g_;
    detail::Waiter w_;
  };
  /// `co_await group.join()`: resumes once no child is running. Any number
  /// of tasks may join at once; they resume in the order they joined (the
  /// first directly from the last child's end, the others from the
  /// completion queue). A join is not cancelled by a stop request: it
  /// ends when the children have.
  JoinAwaiter join() noexcept { return JoinAwaiter(*this); }

 private:
  void unlink(detail::DriverPromise& p) noexcept {
    if (p.prev)
      p.prev->next = p.next;
    else
      children_ = p.next;
    if (p.next) p.next->prev = p.prev;
  }
  std::coroutine_handle<> child_done(detail::DriverPromise& child) noexcept override {
    if (child.error) fail(child.error);
    unlink(child);
    detail::DriverHandle::from_promise(child).destroy();  // it sits at its final suspend
    if (--running_ != 0 || joiners_.empty()) return std::noop_coroutine();
    detail::Waiter* first = joiners_.pop_front();
    while (detail::Waiter* w = joiners_.pop_front()) loop_->start(w->op);  // posts, in order
    return std::coroutine_handle<>::from_address(first->op.ctx);
  }

  Loop* loop_;
  std::stop_source source_;
  std::optional<std::stop_callback<detail::StopForward>> link_;
  detail::DriverPromise* children_ = nullptr;
  std::size_t running_ = 0;
  std::exception_ptr error_;
  detail::WaitList joiners_;
};

/// Runs `body(group)` and then waits for every child it (or they) spawned.
/// The body runs with the group's stop token, so a failing child cancels
/// it too. Returns the body's value, or rethrows the first failure.
template <class F>
requires std::is_invocable_v<F&, TaskGroup&>
auto with_task_group(F body) -> Task<typename std::invoke_result_t<F&, TaskGroup&>::value_type> {
  using V = typename std::invoke_result_t<F&, TaskGroup&>::value_type;
  Loop* loop = co_await current_loop();
  if (!loop) throw std::logic_error("lev::with_task_group: the calling task runs on no loop");
  TaskGroup group(*loop, co_await current_stop_token());
  std::optional<detail::ValueOf<V>> value;
  try {
    if constexpr (std::is_void_v<V>) {
      co_await std::invoke(body, group).with_stop_token(group.stop_token());
      value.emplace();
    } else {
      value.emplace(co_await std::invoke(body, group).with_stop_token(group.stop_token()));
    }
  } catch (...) {
    group.fail(std::current_exception());
  }
  co_await group.join();
  if (group.error()) std::rethrow_exception(group.error());
  if constexpr (!std::is_void_v<V>) co_return std::move(*value);
}

}  // namespace lev
