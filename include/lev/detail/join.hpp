#pragma once
/// \file
/// The machinery under when_all, when_any, with_timeout and TaskGroup: a
/// driver coroutine runs one child task, stores its value in a slot and,
/// when the child ends, tells its join (which resumes the parent once the
/// last child has ended, by symmetric transfer from inside the completion
/// queue's drain). Children inherit the parent's loop; each runs in a
/// cancellation scope of its own (detail/scope.hpp), which the join cancels
/// when the parent's scope or token is cancelled, or by its policy.

#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "lev/detail/op.hpp"
#include "lev/detail/scope.hpp"
#include "lev/detail/stop.hpp"
#include "lev/task.hpp"

namespace lev::detail {

struct DriverPromise;
using DriverHandle = std::coroutine_handle<DriverPromise>;

/// Whoever waits for drivers: told once per driver that it has ended.
struct JoinBase {
  /// Called from the driver's final suspension; returns what to resume next.
  virtual std::coroutine_handle<> child_done(DriverPromise& child) noexcept = 0;

 protected:
  ~JoinBase() = default;
};

struct DriverPromise : TaskPromiseBase {
  JoinBase* join = nullptr;
  std::size_t index = 0;
  std::exception_ptr error;
  Scope own_scope;  // the child's cancellation (its join or group cancels it)
  OpBase start;     // TaskGroup: the queued post that first resumes the driver
  DriverPromise* prev = nullptr;
  DriverPromise* next = nullptr;

  struct Final {
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(DriverHandle h) const noexcept {
      return h.promise().join->child_done(h.promise());
    }
    void await_resume() const noexcept {}
  };

  DriverHandle get_return_object() noexcept { return DriverHandle::from_promise(*this); }
  std::suspend_always initial_suspend() const noexcept { return {}; }
  Final final_suspend() const noexcept { return {}; }
  void unhandled_exception() noexcept { error = std::current_exception(); }
  void return_void() const noexcept {}
};

struct Driver {
  using promise_type = DriverPromise;
  DriverHandle h;
  Driver(DriverHandle handle) noexcept : h(handle) {}  // NOLINT
};

/// What a child's value becomes in a result: void maps to std::monostate.
template <class T>
using ValueOf = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class T>
Driver drive(Task<T> task, std::optional<ValueOf<T>>* slot) {
  if constexpr (std::is_void_v<T>) {
    co_await std::move(task);
    if (slot) slot->emplace();
  } else {
    if (slot)
      slot->emplace(co_await std::move(task));
    else
      (void)co_await std::move(task);
  }
}

/// Starts every driver when awaited and resumes the awaiting coroutine when
/// all of them have ended. `any`: the first to end stops the rest; `all`:
/// the first to fail stops the rest.
class Join final : public JoinBase {
 public:
  enum class Policy { all, any };
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  explicit Join(Policy policy) noexcept : policy_(policy) {}
  Join(const Join&) = delete;
  Join& operator=(const Join&) = delete;
  ~Join() {
    link_.disarm();
    // Only when the awaiting frame is destroyed early (loop teardown) are
    // drivers still suspended here; destroying them settles their ops.
    for (DriverHandle d : drivers_) d.destroy();
  }

  void add(Driver d) { drivers_.push_back(d.h); }

  bool await_ready() const noexcept { return drivers_.empty(); }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> parent) {
    parent_ = parent;
    Loop* loop = nullptr;
    if constexpr (std::is_base_of_v<TaskPromiseBase, P>) loop = parent.promise().loop;
    remaining_ = drivers_.size() + 1;  // + 1 while starting: no early resume
    for (std::size_t i = 0; i < drivers_.size(); ++i) {
      DriverPromise& p = drivers_[i].promise();
      p.join = this;
      p.index = i;
      p.loop = loop;
      p.scope = &p.own_scope;
    }
    // The parent's cancellation cancels every child (at once, if it is
    // stopped already: the children then start stopped).
    const CancelFrom from = task_cancel(parent);
    if (loop)
      link_.arm(*loop, from, &Join::on_cancel, this);
    else if (from.scope)
      link_.arm(*from.scope, &Join::on_cancel, this);
    for (DriverHandle d : drivers_) d.resume();  // runs the child until it first suspends
    return --remaining_ != 0;
  }
  void await_resume() noexcept { link_.disarm(); }

  /// Index of the first child to end (npos before any has).
  [[nodiscard]] std::size_t first() const noexcept { return first_; }
  /// The first exception any child threw, and whose it was.
  [[nodiscard]] const std::exception_ptr& first_error() const noexcept { return first_error_; }
  [[nodiscard]] const std::exception_ptr& error(std::size_t i) const noexcept {
    return drivers_[i].promise().error;
  }

 private:
  std::coroutine_handle<> child_done(DriverPromise& child) noexcept override {
    if (first_ == npos) {
      first_ = child.index;
      if (policy_ == Policy::any) cancel_all();
    }
    if (child.error && !first_error_) {
      first_error_ = child.error;
      if (policy_ == Policy::all) cancel_all();
    }
    if (--remaining_ == 0) return parent_;
    return std::noop_coroutine();
  }
  void cancel_all() noexcept {
    for (DriverHandle d : drivers_)
      if (!d.done()) d.promise().own_scope.cancel();
  }
  static void on_cancel(void* self) noexcept { static_cast<Join*>(self)->cancel_all(); }

  Policy policy_;
  std::vector<DriverHandle> drivers_;
  std::size_t remaining_ = 0;
  std::size_t first_ = npos;
  std::exception_ptr first_error_;
  std::coroutine_handle<> parent_;
  StopLink link_;  // the parent's scope / token -> cancel_all
};

}  // namespace lev::detail
