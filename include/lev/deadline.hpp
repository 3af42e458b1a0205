#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// `lev::IdleDeadline`: a connection's time limits at no cost per message.
///
///     lev::IdleDeadline idle{loop, 30s};             // one loop timer, not one per recv
///     for (;;) {
///       auto n = co_await idle(loop.recv(fd, buf));  // errc::timed_out after 30 s idle
///       ...
///     }
///
/// A per-operation `{.timeout}` arms a timer (or an io_uring linked
/// timeout) for every operation; a server with thousands of connections
/// and an idle limit would pay that per message. An IdleDeadline instead
/// keeps one timer per connection: each operation it guards records the
/// loop's round time when it starts and when it ends (a store), the timer
/// fires at last activity + limit, looks again, and only re-arms when
/// there was activity meanwhile; an operation it guards is cancelled, and
/// ends with errc::timed_out, only when the connection really was idle for
/// the whole limit (or the absolute limit, limit_until, has passed).

#include <coroutine>
#include <type_traits>
#include <utility>

#include "lev/clock.hpp"
#include "lev/detail/op.hpp"
#include "lev/loop.hpp"

namespace lev {

/// One connection's idle limit, and optionally an absolute one, over the
/// operations it guards. Loop thread only; neither copied nor moved (its
/// timer is on the loop's deadline heap). Must not outlive its loop.
class IdleDeadline {
 public:
  /// A limit of `idle` between activities; zero, negative or
  /// Duration::max() means none (guarding then costs next to nothing).
  IdleDeadline(Loop& loop, Duration idle);
  IdleDeadline(const IdleDeadline&) = delete;
  IdleDeadline& operator=(const IdleDeadline&) = delete;
  /// Disarms the timer. An operation it guards must not be pending.
  ~IdleDeadline();

  /// `co_await deadline(awaitable)`: awaits `awaitable` (an operation's
  /// awaiter: recv, send, read, write, readable..., or loop.recv(fd)),
  /// cancelling it with errc::timed_out when the limit passes while it
  /// waits. Activity is recorded when it starts and when it ends.
  template <class A>
  auto operator()(A&& awaitable);

  /// Changes the idle limit from now on (e.g. a keep-alive limit between
  /// requests, a header limit inside one); the rules of the constructor.
  /// Re-arms the timer only when the new limit comes sooner than the armed
  /// one (a later one is seen when that timer fires).
  void set_idle(Duration idle);
  /// Also expires at `at` whatever the activity (a total limit for a
  /// request or a body); TimePoint::max() removes it. As cheap as a store
  /// when `at` is no sooner than the armed timer: moving it later with
  /// every message ("the next line within 60 s") arms no timer per message.
  void limit_until(TimePoint at);
  /// Records activity now (work not done through a guarded operation).
  void touch() noexcept;
  /// The limit passed: a guarded operation was (or will be, at once)
  /// cancelled. A later set_idle / limit_until / rearm() starts afresh.
  [[nodiscard]] bool expired() const noexcept { return expired_; }
  /// Clears an expiry and counts the limits from now.
  void rearm();
  /// The idle limit (Duration::max() for none).
  [[nodiscard]] Duration idle() const noexcept { return idle_; }

  /// For the guard (not for users): what cancels the guarded operation.
  struct Pending {
    void (*cancel)(void* awaiter) noexcept = nullptr;  ///< cancels the awaiter's operation
    void* awaiter = nullptr;                           ///< what `cancel` is called with
  };
  /// For the guard: the operation starts.
  void started(Pending p) noexcept {
    last_ = detail::loop_round_time(*loop_);
    pending_ = p;
    if (expired_) [[unlikely]]
      p.cancel(p.awaiter);
  }
  /// For the guard: the operation ended.
  void ended() noexcept {
    pending_.cancel = nullptr;  // nothing waits (on_timer reads only this)
    last_ = detail::loop_round_time(*loop_);
  }

 private:
  static void on_timer(detail::OpBase& t);
  void arm(TimePoint at);
  void disarm() noexcept;

  Loop* loop_;
  Duration idle_;
  TimePoint last_;                      // the last activity (the loop's round time then)
  TimePoint until_ = TimePoint::max();  // limit_until
  Pending pending_;                     // the guarded operation waiting now
  bool expired_ = false;
  bool armed_ = false;
  detail::OpBase timer_;
};

namespace detail {

/// What `co_await deadline(awaitable)` awaits: the awaitable, guarded. It
/// refers to the awaitable rather than holding it (an operation's awaiter
/// carries its whole record: moving it would cost a copy per operation),
/// which is safe because both are temporaries of the one co_await
/// expression: await it in the expression that made it. Awaiting it needs
/// an rvalue, so a guard kept in a variable past the awaitable's end
/// (`auto g = idle(loop.recv(..)); co_await g;`) does not compile; moving
/// such a stored guard into a co_await (`co_await std::move(g)`), or
/// returning one from a function, awaits a destroyed awaitable: undefined.
template <class A>
class [[nodiscard]] Guarded {
 public:
  class Awaiter {
   public:
    Awaiter(IdleDeadline& d, A& a) noexcept : d_(&d), a_(&a) {}
    Awaiter(const Awaiter&) = delete;
    Awaiter& operator=(const Awaiter&) = delete;
    ~Awaiter() {
      if (waiting_) [[unlikely]]
        d_->ended();  // destroyed while waiting (its frame went first)
    }

    bool await_ready() noexcept(noexcept(std::declval<A&>().await_ready())) {
      return a_->await_ready();
    }
    template <class P>
    [[gnu::always_inline]] auto await_suspend(std::coroutine_handle<P> h) {
      using R = decltype(a_->await_suspend(h));
      if constexpr (std::is_void_v<R>) {
        a_->await_suspend(h);
        watch();
      } else {
        static_assert(std::is_same_v<R, bool>, "IdleDeadline guards awaiters that suspend");
        // Expired: the operation starts cancelled, on every engine (tried,
        // a send on epoll would go out at once; on io_uring it would race
        // the cancel).
        if constexpr (requires { a_->suspend_cancelled(h, Cancel::deadline); }) {
          if (d_->expired()) [[unlikely]] {
            a_->suspend_cancelled(h, Cancel::deadline);
            watch();
            return true;
          }
        }
        if (!a_->await_suspend(h)) return false;
        watch();
        return true;
      }
    }
    decltype(auto) await_resume() {
      waiting_ = false;
      d_->ended();  // also when it never waited (data was there): that is activity too
      return a_->await_resume();
    }

   private:
    void watch() noexcept {
      waiting_ = true;
      d_->started({[](void* a) noexcept { static_cast<A*>(a)->cancel_for(Cancel::deadline); }, a_});
    }
    IdleDeadline* d_;
    A* a_;
    bool waiting_ = false;
  };

  Guarded(IdleDeadline& d, A& a) noexcept : d_(&d), a_(&a) {}
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  Awaiter operator co_await() && noexcept { return Awaiter(*d_, *a_); }

 private:
  IdleDeadline* d_;
  A* a_;
};

}  // namespace detail

template <class A>
auto IdleDeadline::operator()(A&& awaitable) {
  static_assert(!std::is_lvalue_reference_v<A>, "pass the awaitable itself: idle(loop.recv(...))");
  return detail::Guarded<std::remove_cvref_t<A>>(*this, awaitable);
}

}  // namespace lev
