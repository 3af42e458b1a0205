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
/// The first failure (of the body or of a child) cancels the rest and is
/// rethrown once, after all have ended. Each child runs in a cancellation
/// scope of its own, which the group cancels (no std::stop_callback per
/// operation); stop_token() shows the same cancellation to those who ask.

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
  /// A group on `loop` whose children stop when `parent` does (a token
  /// stopped on another thread acts on the loop's thread).
  explicit TaskGroup(Loop& loop, std::stop_token parent = {}) : loop_(&loop) {
    if (parent.stop_possible()) {
      parent_token_ = std::move(parent);
      link_.arm(loop, parent_token_, &TaskGroup::on_cancel, this);
    }
  }
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;
  /// A group left with running children (its awaiting frame destroyed, as
  /// at loop teardown) destroys them; their operations are settled first.
  ~TaskGroup() {
    link_.disarm();
    join_link_.disarm();
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
    p.scope = &p.own_scope;
    p.own_scope.stopped = cancelled_;  // a group cancelled already: the child starts stopped
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

  /// Cancels every child (and the body of with_task_group); children
  /// spawned later start cancelled.
  void cancel() noexcept {
    if (cancelled_) return;
    cancelled_ = true;
    body_scope_.cancel();
    for (detail::DriverPromise* p = children_; p; p = p->next) p->own_scope.cancel();
    source_.request_stop();
  }
  /// Whether cancel() was called (or a failure or the parent cancelled the group).
  [[nodiscard]] bool cancelled() const noexcept { return cancelled_; }
  /// A token stopped when the group is cancelled: by cancel(), by the first
  /// failure, or by the parent. (Children need not watch it: their
  /// operations are cancelled directly.)
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
    template <class P>
    void await_suspend(std::coroutine_handle<P> h) {
      w_.op.kind = detail::OpKind::post;
      w_.op.ctx = h.address();
      w_.op.deliver = nullptr;
      w_.loop = g_->loop_;
      g_->joiners_.push_back(w_);
      // The joiner's cancellation cancels the children it waits for.
      link_.arm(*g_->loop_, detail::task_cancel(h), &TaskGroup::on_cancel, g_);
    }
    void await_resume() noexcept { link_.disarm(); }

   private:
    TaskGroup* g_;
    detail::Waiter w_;
    detail::StopLink link_;
  };
  /// `co_await group.join()`: resumes once no child is running. Any number
  /// of tasks may join at once; they resume in the order they joined (the
  /// first directly from the last child's end, the others from the
  /// completion queue). A join is not cancelled itself: a joiner's
  /// cancellation cancels the group, and the join ends when the children
  /// have.
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

  static void on_cancel(void* self) noexcept { static_cast<TaskGroup*>(self)->cancel(); }

 public:
  /// For with_task_group: its body runs in this scope (the group cancels it).
  detail::Scope& body_scope() noexcept { return body_scope_; }
  /// For with_task_group: `from` (its caller's scope and token) cancels the
  /// group until unlink_caller(); at once if it is stopped already.
  void link_caller(detail::CancelFrom from) { join_link_.arm(*loop_, from, &on_cancel, this); }
  /// Ends link_caller().
  void unlink_caller() noexcept { join_link_.disarm(); }

 private:
  Loop* loop_;
  std::stop_source source_;
  std::stop_token parent_token_;
  detail::StopLink link_;       // the constructor's parent token -> cancel()
  detail::StopLink join_link_;  // with_task_group: its caller's cancellation -> cancel()
  detail::Scope body_scope_;
  bool cancelled_ = false;
  detail::DriverPromise* children_ = nullptr;
  std::size_t running_ = 0;
  std::exception_ptr error_;
  detail::WaitList joiners_;
};

/// Runs `body(group)` and then waits for every child it (or they) spawned.
/// The body runs in the group's cancellation, so a failing child cancels
/// it too; cancelling the caller cancels the body and every child. Returns
/// the body's value, or rethrows the first failure.
template <class F>
requires std::is_invocable_v<F&, TaskGroup&>
auto with_task_group(F body) -> Task<typename std::invoke_result_t<F&, TaskGroup&>::value_type> {
  using V = typename std::invoke_result_t<F&, TaskGroup&>::value_type;
  Loop* loop = co_await current_loop();
  if (!loop) throw std::logic_error("lev::with_task_group: the calling task runs on no loop");
  TaskGroup group(*loop);
  // The caller's cancellation (its scope, its token) cancels the group for
  // the group's whole life, the body's run and the join alike.
  group.link_caller(co_await detail::current_cancel());
  std::optional<detail::ValueOf<V>> value;
  try {
    Task<V> task = std::invoke(body, group);
    if (task.valid()) task.handle().promise().scope = &group.body_scope();
    if constexpr (std::is_void_v<V>) {
      co_await std::move(task);
      value.emplace();
    } else {
      value.emplace(co_await std::move(task));
    }
  } catch (...) {
    group.fail(std::current_exception());
  }
  co_await group.join();
  group.unlink_caller();
  if (group.error()) std::rethrow_exception(group.error());
  if constexpr (!std::is_void_v<V>) co_return std::move(*value);
}

}  // namespace lev
