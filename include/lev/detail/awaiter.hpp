#pragma once
/// \file
/// The awaiter every operation shares: the op record lives inside the
/// awaiter (so inside the awaiting coroutine's frame: no allocation per
/// operation), the coroutine is resumed from the loop's completion queue,
/// and an awaiter destroyed while its op is live cancels it and waits for
/// its completion, so the kernel never writes into a freed frame.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <new>
#include <optional>
#include <stop_token>
#include <system_error>
#include <type_traits>

#include "lev/address.hpp"
#include "lev/detail/describe.hpp"
#include "lev/detail/op.hpp"
#include "lev/detail/results.hpp"
#include "lev/detail/stop.hpp"
#include "lev/task.hpp"

namespace lev {
class Loop;
}

namespace lev::detail {

void abandon_op(Loop& loop, OpBase& op) noexcept;
void cancel_op(Loop& loop, OpBase& op, Cancel why = Cancel::requested) noexcept;
void start_cancelled_op(Loop& loop, OpBase& op, Cancel why) noexcept;

/// OpAwaiter's constructor that calls the description's setup.
struct SetupTag {};
inline constexpr SetupTag setup_tag{};

/// The awaiter of one operation of kind `K` (known at compile time, so on
/// io_uring the SQE is filled without a dispatch on the kind).
template <class T, OpKind K>
class [[nodiscard]] OpAwaiter {
 public:
  static constexpr OpKind op_kind = K;
  explicit OpAwaiter(Loop& loop, int fd) noexcept : loop_(&loop) {
    op_.kind = K;
    op_.fd = fd;
  }
  /// `init(op)` fills the op-specific fields before the awaiter exists as
  /// a value (awaiters are neither copied nor moved: the record's address
  /// is handed to the kernel).
  template <class Init>
  OpAwaiter(Loop& loop, int fd, Init&& init) noexcept : OpAwaiter(loop, fd) {
    init(op_);
  }
  /// Fills the op-specific fields with its description's setup (what
  /// Loop::make does for an op without arguments of its own).
  template <class... A>
  OpAwaiter(Loop& loop, int fd, SetupTag, A&&... a) noexcept : OpAwaiter(loop, fd) {
    Describe<K>::type::setup(op_, std::forward<A>(a)...);
  }
  /// Moving is for building the awaitable (stop_on) before it is awaited:
  /// once started, the record's address belongs to the kernel.
  OpAwaiter(OpAwaiter&& o) noexcept : loop_(o.loop_), op_(o.op_) {}
  OpAwaiter(const OpAwaiter&) = delete;
  OpAwaiter& operator=(const OpAwaiter&) = delete;
  [[gnu::always_inline]] ~OpAwaiter() {
    // submitted or completed: still live (idle = 0 and delivered = 3 are not)
    if (static_cast<unsigned>(op_.state) - 1u < 2u) [[unlikely]]
      abandon();
    // stop_ disarms itself (TokenLink's destructor; await_resume did already)
  }

  /// Cancels the operation when `token` is stopped: it then completes with
  /// errc::operation_canceled (or with its result, if that won the race).
  /// Without it, the operation uses the awaiting task's token.
  ///     co_await loop.recv(fd, buf).stop_on(source.get_token());
  StopOn<OpAwaiter> stop_on(std::stop_token token) && noexcept {
    return {std::move(*this), std::move(token)};
  }

  bool await_ready() const noexcept { return false; }
  /// False: the op finished at once (a reactor recv or send whose socket
  /// was ready, Loop::start_now) and the coroutine goes on.
  template <class P>
  [[gnu::always_inline]] bool await_suspend(std::coroutine_handle<P> h) {
    return suspend(h, task_cancel(h));
  }
  [[gnu::always_inline]] Result<T> await_resume() {
    leave_scope();
    stop_.disarm();
    // Delivered, and nothing reads the state again: idle tells the
    // compiler that the destructor has no live op to abandon.
    op_.state = OpState::idle;
    return ResultOf<T>::make(op_);
  }

  /// The record, for code that extends an operation before it is awaited.
  OpBase& op() noexcept { return op_; }
  /// Cancels the operation while it is awaited (IdleDeadline: `why` =
  /// Cancel::deadline, and the result reads errc::timed_out).
  void cancel_for(Cancel why) noexcept { cancel_op(*loop_, op_, why); }
  /// Instead of await_suspend: the op starts cancelled for `why` (an
  /// expired IdleDeadline) and never reaches the backend.
  void suspend_cancelled(std::coroutine_handle<> h, Cancel why) noexcept {
    op_.ctx = h.address();
    op_.deliver = nullptr;
    start_cancelled_op(*loop_, op_, why);
  }

 protected:
  /// Starts the op; `from` (its scope, its token) cancels it. `Linked`: the
  /// op carries a linked timeout (DeadlineAwaiter). False: it finished at
  /// once (Loop::start_now), do not suspend. Defined in lev/loop.hpp, where
  /// Loop::start is visible for inlining.
  template <bool Linked = false>
  [[nodiscard]] bool suspend(std::coroutine_handle<> h, CancelFrom from);
  template <bool Linked>
  [[nodiscard, gnu::noinline]] bool suspend_with_token(CancelFrom from);
  template <bool Linked>
  [[nodiscard, gnu::always_inline]] bool start();
  /// The op is no longer what its task's scope waits on (it resumed).
  void leave_scope() noexcept {
    if (scope_) {
      scope_->wait_fn = nullptr;
      scope_ = nullptr;
    }
  }
  /// Destroyed while live (its frame went first): cancel, wait, unregister.
  [[gnu::cold]] void abandon() noexcept {
    leave_scope();  // the task waited on this op: the slot is ours
    abandon_op(*loop_, op_);
  }
  static void on_cancel(void* self) noexcept {
    auto* a = static_cast<OpAwaiter*>(self);
    cancel_op(*a->loop_, a->op_);
  }

  Loop* loop_;
  Scope* scope_ = nullptr;  // while awaited: the task's scope, whose wait slot holds this op
  OpBase op_;
  TokenLink stop_;  // a user's stop token only
};

/// The awaiter of an op whose description has arguments of its own
/// (`D::Args`): they live here, beside the record, which points at them.
/// Awaiters move only before they are awaited; a move re-points, in one
/// place (the move constructor), everything that pointed into the old
/// awaiter: `op.args`, what the description's `moved` hook names (op.buf
/// of writev_all), and what an Args record points at inside itself (its
/// own copy constructor: MessageArgs).
template <class D>
class [[nodiscard]] ArgsAwaiter : public OpAwaiter<typename D::Result, D::kind> {
  using Base = OpAwaiter<typename D::Result, D::kind>;

 public:
  template <class... A>
  explicit ArgsAwaiter(Loop& loop, int fd, A&&... a) noexcept : Base(loop, fd) {
    this->op_.args = &args_;
    D::setup(this->op_, args_, std::forward<A>(a)...);
  }
  ArgsAwaiter(ArgsAwaiter&& o) noexcept : Base(std::move(o)), args_(o.args_) {
    this->op_.args = &args_;
    D::moved(this->op_, args_);
  }
  StopOn<ArgsAwaiter> stop_on(std::stop_token token) && noexcept {
    return {std::move(*this), std::move(token)};
  }
  /// The op's own arguments (what the kernel filled in, for some).
  typename D::Args& args() noexcept { return args_; }

 private:
  typename D::Args args_;
};

/// The awaiter `Loop::make<D>` returns: the plain OpAwaiter when the op
/// has no arguments of its own (the hot path: recv, send, read, write).
template <class D>
using AwaiterOf = std::conditional_t<std::is_same_v<typename D::Args, NoArgs>,
                                     OpAwaiter<typename D::Result, D::kind>, ArgsAwaiter<D>>;

void disarm_op(Loop& loop, OpBase& op) noexcept;
TimePoint loop_now(Loop& loop) noexcept;

bool loop_links_timeouts(Loop& loop) noexcept;
void start_op(Loop& loop, OpBase& op);

/// An operation bounded by a time limit (`{.timeout = 5s}`, readable /
/// writable with a timeout). On io_uring the limit is a linked timeout
/// (IORING_OP_LINK_TIMEOUT, one more SQE, no loop timer); elsewhere, for
/// send_all / write_all whose limit covers every resubmission, and for ops
/// whose description says `links_timeout = false` (splice), a loop timer
/// cancels the op. Either way the result is errc::timed_out when the
/// limit passed first (with `transferred` for the bytes already moved), and
/// the op is settled before the coroutine resumes.
template <class Base>
class [[nodiscard]] DeadlineAwaiter : public Base {
  using T = decltype(std::declval<Base&>().await_resume());

 public:
  template <class... Args>
  explicit DeadlineAwaiter(std::optional<Duration> timeout, Args&&... args) noexcept
      : Base(std::forward<Args>(args)...), timeout_(timeout) {}
  /// Before it is awaited only (no timer exists yet).
  DeadlineAwaiter(DeadlineAwaiter&& o) noexcept : Base(std::move(o)), timeout_(o.timeout_) {}
  ~DeadlineAwaiter() {
    if (timer_made_) [[unlikely]]
      disarm_timer();
  }
  StopOn<DeadlineAwaiter> stop_on(std::stop_token token) && noexcept {
    return {std::move(*this), std::move(token)};
  }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    return suspend(h, task_cancel(h));
  }
  T await_resume() {
    this->leave_scope();
    this->stop_.disarm();
    if (timer_made_) [[unlikely]]
      disarm_timer();
    const OpBase& op = this->op_;
    // A linked timeout that fired cancels the op without a cancel request;
    // a loop timer records its own. The first request recorded wins.
    if (op.res == -ECANCELED &&
        (op.cancel == Cancel::deadline || (op.linked_timeout && op.cancel == Cancel::none)))
      return Error{std::make_error_code(std::errc::timed_out), op_name(op.kind), op.fd, op.done};
    return Base::await_resume();
  }

 protected:
  bool suspend(std::coroutine_handle<> h, CancelFrom from) {
    if (!timeout_) return Base::suspend(h, from);
    if (Describe<Base::op_kind>::type::links_timeout && !(this->op_.flow & kFlowAll) &&
        loop_links_timeouts(*this->loop_)) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::max(*timeout_, Duration::zero()))
                          .count();
      this->op_.linked_timeout = true;
      this->op_.lt_sec = ns / 1000000000;
      this->op_.lt_nsec = ns % 1000000000;
      return Base::template suspend<true>(h, from);
    }
    if (!Base::suspend(h, from)) return false;  // finished at once: no timer
    if (this->op_.state != OpState::submitted) return true;  // its token was already stopped
    ::new (static_cast<void*>(&timer_)) OpBase;
    timer_made_ = true;
    timer_.kind = OpKind::timer;
    timer_.deadline = saturating_add(loop_now(*this->loop_), *timeout_);
    timer_.ctx = this;
    timer_.deliver = &on_deadline;
    start_op(*this->loop_, timer_);
    return true;
  }

 private:
  static void on_deadline(OpBase& t) {
    auto* self = static_cast<DeadlineAwaiter*>(t.ctx);
    cancel_op(*self->loop_, self->op_, Cancel::deadline);
  }
  void disarm_timer() noexcept {
    if (static_cast<unsigned>(timer_.state) - 1u < 2u) disarm_op(*this->loop_, timer_);
  }
  std::optional<Duration> timeout_;
  bool timer_made_ = false;  // a loop timer bounds the op (none: no limit, or a linked timeout)
  union {
    OpBase timer_;  // made only when a loop timer is armed
  };
};

/// readable / writable: a poll op, optionally bounded by a time limit.
class [[nodiscard]] PollAwaiter : public DeadlineAwaiter<OpAwaiter<unsigned, OpKind::poll>> {
 public:
  PollAwaiter(Loop& loop, int fd, unsigned mask, std::optional<Duration> timeout) noexcept
      : DeadlineAwaiter(timeout, loop, fd) {
    op_.flags = static_cast<int>(mask);
  }
  PollAwaiter(PollAwaiter&&) noexcept = default;
  StopOn<PollAwaiter> stop_on(std::stop_token token) && noexcept {
    return {std::move(*this), std::move(token)};
  }
};

}  // namespace lev::detail
