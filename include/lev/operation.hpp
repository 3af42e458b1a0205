#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// The callback form of operations: `lev::Operation`, the handle every
/// callback-style call returns, with the seed's ABI
/// `on_complete(Operation&, Result, data)`.
///
///     loop.recv(fd, buf, [](lev::Operation& op, lev::Result<std::size_t> n) {
///       if (op.is_cancelled()) return;  ...
///     });
///
/// The callback runs once, on the loop's thread, only while the loop drains
/// its completion queue (never inside the call that started the operation).
/// Op records come from a per-loop pool: no allocation per operation in
/// steady state (a callable larger than 64 bytes is boxed on the heap).

#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <new>
#include <system_error>
#include <type_traits>
#include <utility>

#include "lev/clock.hpp"
#include "lev/detail/op.hpp"
#include "lev/detail/results.hpp"
#include "lev/detail/timer_slab.hpp"
#include "lev/error.hpp"

namespace lev {

class Loop;
class Operation;

namespace detail {

struct CallbackPool;

struct CallbackOp {
  static constexpr std::size_t kInline = 64;

  OpBase op;
  Loop* loop = nullptr;
  CallbackPool* pool = nullptr;
  CallbackOp* free_next = nullptr;
  unsigned refs = 0;
  Duration interval{};                                // every(): re-armed after each expiry
  void (*invoke)(CallbackOp&, Operation&) = nullptr;  // builds the Result and calls
  void (*destroy)(CallbackOp&) noexcept = nullptr;    // destroys the callable
  alignas(std::max_align_t) unsigned char storage[kInline];
  /// The op's own arguments (its description's Args): here when they fit,
  /// else in `boxed_args` (freed with the record). Args are trivially
  /// destructible.
  static constexpr std::size_t kArgsInline = sizeof(sockaddr_storage) + 16;
  alignas(std::max_align_t) unsigned char args_storage[kArgsInline];
  void* boxed_args = nullptr;

  template <class T, class F>
  void emplace(F&& f);
  template <class A>
  A& make_args() {
    static_assert(std::is_trivially_destructible_v<A>);
    static_assert(alignof(A) <= alignof(std::max_align_t));
    void* at = args_storage;
    if constexpr (sizeof(A) > kArgsInline) at = boxed_args = ::operator new(sizeof(A));
    A* a = ::new (at) A{};
    op.args = a;
    return *a;
  }
  void reset_callable() noexcept {
    if (destroy) destroy(*this);
    destroy = nullptr;
    invoke = nullptr;
  }
};

/// Holds every CallbackOp of one loop; outlives the loop while handles do.
struct CallbackPool {
  CallbackOp* free_list = nullptr;
  std::size_t refs = 1;  // the loop's own reference + one per allocated op
  bool loop_alive = true;

  CallbackOp& acquire(Loop& loop);
  static void add_ref(CallbackOp& cb) noexcept { ++cb.refs; }
  static void release(CallbackOp& cb) noexcept;
  void close_loop() noexcept;  // the loop is going away
};

}  // namespace detail

/// A handle to a callback-form operation (or a callback timer, `after` /
/// `at`). Copyable (reference counted); valid after completion and after the
/// loop is gone (it then only reports).
class Operation {
 public:
  /// A handle to nothing (valid() is false).
  Operation() noexcept = default;
  /// A handle to `cb` (what the Loop's callback forms return).
  explicit Operation(detail::CallbackOp& cb) noexcept : p_(reinterpret_cast<std::uintptr_t>(&cb)) {
    detail::CallbackPool::add_ref(cb);
  }
  /// A handle to the callback timer `n` (what after / at return).
  explicit Operation(detail::TimerNode& n) noexcept
      : p_(reinterpret_cast<std::uintptr_t>(&n) | kTimer) {
    add_ref(n);
  }
  /// Another handle to the same operation.
  Operation(const Operation& o) noexcept : p_(o.p_) { acquire(); }
  /// Takes `o`'s handle; `o` refers to nothing after.
  Operation(Operation&& o) noexcept : p_(std::exchange(o.p_, 0)) {}
  /// Refers to what `o` refers to.
  Operation& operator=(Operation o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~Operation() { release(); }

  /// This handle refers to an operation.
  [[nodiscard]] bool valid() const noexcept { return p_ != 0; }
  /// The result has been recorded (it may not have been delivered yet).
  [[nodiscard]] bool is_done() const noexcept {
    if (const detail::TimerNode* n = node())
      return n->state >= detail::TimerNode::kDue;  // or zombie
    return cb() && cb()->op.state >= detail::OpState::completed;
  }
  /// Completed because it was cancelled (ECANCELED).
  [[nodiscard]] bool is_cancelled() const noexcept {
    if (const detail::TimerNode* n = node())
      return is_done() && (n->cancelled & detail::TimerNode::kResultCancelled);
    return is_done() && cb()->op.res == -ECANCELED;
  }
  /// Completed with an error (including cancellation).
  [[nodiscard]] bool failed() const noexcept {
    if (node()) return is_cancelled();
    return is_done() && cb()->op.res < 0;
  }
  /// The error of a failed operation (an empty code otherwise).
  [[nodiscard]] Error error() const {
    if (!failed()) return Error{};
    if (node()) return Error{std::make_error_code(std::errc::operation_canceled), "timer"};
    return detail::op_error(cb()->op);
  }
  /// Asks the loop to cancel the operation. Harmless when it is done, when
  /// called twice, or after the loop is gone. The callback still runs
  /// exactly once: with ECANCELED, or with the real result if the operation
  /// had already finished (a kernel completion wins a race with cancel).
  void cancel() noexcept;

 private:
  static constexpr std::uintptr_t kTimer = 1;
  [[nodiscard]] detail::TimerNode* node() const noexcept {
    return (p_ & kTimer) ? reinterpret_cast<detail::TimerNode*>(p_ & ~kTimer) : nullptr;
  }
  [[nodiscard]] detail::CallbackOp* cb() const noexcept {
    return (p_ & kTimer) ? nullptr : reinterpret_cast<detail::CallbackOp*>(p_);
  }
  static void add_ref(detail::TimerNode& n) noexcept {
    if (n.refs == UINT16_MAX) [[unlikely]]
      std::terminate();  // 65,535 live handles to one timer
    ++n.refs;
  }
  void acquire() const noexcept {
    if (detail::TimerNode* n = node())
      add_ref(*n);
    else if (detail::CallbackOp* c = cb())
      detail::CallbackPool::add_ref(*c);
  }
  void release() noexcept {
    if (detail::TimerNode* n = node())
      detail::TimerSlab::release(*n);
    else if (detail::CallbackOp* c = cb())
      detail::CallbackPool::release(*c);
  }

  std::uintptr_t p_ = 0;  // a CallbackOp, or a TimerNode with the low bit set
};

/// Adapts the seed's `on_complete(op, result, data)` C-style callback.
///
///     loop.recv(fd, buf, lev::bind(on_recv, &state));
template <class Fn>
auto bind(Fn fn, void* data) {
  return [fn, data](Operation& op, auto result) { fn(op, std::move(result), data); };
}

namespace detail {

template <class F, class T>
concept CompletionHandler = std::is_invocable_v < std::decay_t<F>
&, Operation&, Result < T >> ;

template <class T, class F>
void CallbackOp::emplace(F&& f) {
  using Fn = std::decay_t<F>;
  if constexpr (sizeof(Fn) <= kInline && alignof(Fn) <= alignof(std::max_align_t)) {
    ::new (static_cast<void*>(storage)) Fn(std::forward<F>(f));
    invoke = [](CallbackOp& self, Operation& handle) {
      (*std::launder(reinterpret_cast<Fn*>(self.storage)))(handle, ResultOf<T>::make(self.op));
    };
    destroy = [](CallbackOp& self) noexcept {
      std::launder(reinterpret_cast<Fn*>(self.storage))->~Fn();
    };
  } else {
    Fn* boxed = new Fn(std::forward<F>(f));
    ::new (static_cast<void*>(storage)) Fn*(boxed);
    invoke = [](CallbackOp& self, Operation& handle) {
      (**std::launder(reinterpret_cast<Fn**>(self.storage)))(handle, ResultOf<T>::make(self.op));
    };
    destroy = [](CallbackOp& self) noexcept {
      delete *std::launder(reinterpret_cast<Fn**>(self.storage));
    };
  }
}

}  // namespace detail
}  // namespace lev
