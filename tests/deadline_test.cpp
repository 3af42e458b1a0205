// IdleDeadline: a connection's idle and absolute limits with one timer per
// connection, on the fake backend's virtual clock and on every real engine.
#include "lev/deadline.hpp"

#include <doctest/doctest.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <span>
#include <string_view>
#include <utility>

#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::FakeLoop;

// A guard refers to the awaitable it guards (no copy of the operation's
// record per await), so it must be awaited in the expression that made
// both: a guard kept in a variable cannot be awaited as an lvalue, which
// is how `auto g = idle(loop.recv(..)); co_await g;` (the awaitable gone at
// the `;`) fails to compile (`co_await std::move(g)` would compile, and is
// undefined: lev/deadline.hpp says so).
template <class G>
concept AwaitableAsLvalue = requires(G& g) { g.operator co_await(); };
template <class G>
concept AwaitableAsRvalue = requires(G&& g) { std::move(g).operator co_await(); };
using GuardedRecv = decltype(std::declval<lev::IdleDeadline&>()(
    std::declval<lev::Loop&>().recv(lev::FdRef{0}, std::span<std::byte>{})));
static_assert(AwaitableAsRvalue<GuardedRecv>);
static_assert(!AwaitableAsLvalue<GuardedRecv>);

TEST_SUITE("deadline") {
  TEST_CASE("an operation waiting longer than the idle limit ends timed_out, at the limit") {
    FakeLoop f;
    lev::IdleDeadline idle{f.loop, 30s};
    const auto t0 = f.loop.now();
    auto body = [&]() -> lev::Task<lev::Result<lev::Expired>> {
      co_return co_await idle(f.loop.sleep_for(1h));
    };
    auto r = f.loop.block_on(body());
    REQUIRE_FALSE(r);
    CHECK(r.error().is_timeout());
    CHECK(f.loop.now() - t0 == 30s);
    CHECK(idle.expired());
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE(
      "activity keeps a connection alive, and the timer is armed per limit, not per operation") {
    FakeLoop f;
    lev::IdleDeadline idle{f.loop, 30s};
    const auto armed0 = f.loop.stats().timers_armed;
    int done = 0;
    auto body = [&]() -> lev::Task<> {
      for (int i = 0; i < 1000; ++i) {  // 1,000 operations, 1 s each: never 30 s idle
        auto r = co_await idle(f.loop.sleep_for(1s));
        if (r) ++done;
      }
    };
    f.loop.block_on(body());
    CHECK(done == 1000);
    CHECK_FALSE(idle.expired());
    // 1,000 sleeps plus the deadline's own timer, re-armed about once per
    // 29 s of the 1,000 s (a deadline per operation would add 1,000 more)
    const auto armed = f.loop.stats().timers_armed - armed0;
    CHECK(armed >= 1000);
    CHECK(armed <= 1000 + 1000 / 29 + 2);
  }

  TEST_CASE("limit_until ends a peer that trickles, however active it is") {
    FakeLoop f;
    lev::IdleDeadline idle{f.loop, 30s};
    idle.limit_until(f.loop.now() + 95s);
    int done = 0;
    lev::Error last{};
    auto body = [&]() -> lev::Task<> {
      for (int i = 0; i < 100; ++i) {
        auto r = co_await idle(f.loop.sleep_for(10s));
        if (!r) {
          last = r.error();
          co_return;
        }
        ++done;
      }
    };
    f.loop.block_on(body());
    CHECK(done == 9);
    CHECK(last.is_timeout());
  }

  // Before: every limit_until re-armed the timer (a heap removal and
  // insertion), so a server giving each line its own limit ("the next line
  // within 30 s") paid a timer per message after all.
  TEST_CASE("moving limit_until later with every operation arms no timer per operation") {
    FakeLoop f;
    lev::IdleDeadline idle{f.loop, lev::Duration::max()};
    const auto armed0 = f.loop.stats().timers_armed;
    int done = 0;
    auto body = [&]() -> lev::Task<lev::Result<lev::Expired>> {
      for (int i = 0; i < 1000; ++i) {  // a message a second, each with 30 s to come
        idle.limit_until(f.loop.now() + 30s);
        auto r = co_await idle(f.loop.sleep_for(1s));
        if (!r) co_return r;
        ++done;
      }
      idle.limit_until(f.loop.now() + 30s);  // then silence: cut 30 s later
      co_return co_await idle(f.loop.sleep_for(1h));
    };
    const auto began = f.loop.now();
    auto last = f.loop.block_on(body());
    CHECK(done == 1000);
    REQUIRE_FALSE(last);
    CHECK(last.error().is_timeout());
    CHECK(f.loop.now() - began == 1030s);
    // 1,001 sleeps plus the deadline's timer about once per 30 s
    const auto armed = f.loop.stats().timers_armed - armed0;
    CHECK(armed >= 1001);
    CHECK(armed <= 1001 + 1030 / 29 + 2);
  }

  TEST_CASE("a limit moved sooner takes effect at once, a shorter idle limit too") {
    FakeLoop f;
    lev::IdleDeadline idle{f.loop, 1h};
    idle.limit_until(f.loop.now() + 50s);
    idle.limit_until(f.loop.now() + 20s);
    const auto began = f.loop.now();
    auto body = [&]() -> lev::Task<lev::Result<lev::Expired>> {
      co_return co_await idle(f.loop.sleep_for(10h));
    };
    CHECK_FALSE(f.loop.block_on(body()));
    CHECK(f.loop.now() - began == 20s);
    idle.limit_until(lev::TimePoint::max());
    idle.set_idle(5s);
    const auto again = f.loop.now();
    CHECK_FALSE(f.loop.block_on(body()));
    CHECK(f.loop.now() - again == 5s);
  }

  TEST_CASE(
      "once expired, the next guarded operation ends timed_out at once; rearm starts afresh") {
    FakeLoop f;
    lev::IdleDeadline idle{f.loop, 5s};
    auto body = [&]() -> lev::Task<int> {
      auto a = co_await idle(f.loop.sleep_for(1h));
      const auto t1 = f.loop.now();
      auto b = co_await idle(f.loop.sleep_for(1s));
      const bool at_once = f.loop.now() == t1;
      idle.rearm();
      auto c = co_await idle(f.loop.sleep_for(1s));
      co_return (!a && a.error().is_timeout() ? 1 : 0) + (!b && b.error().is_timeout() ? 2 : 0) +
          (at_once ? 4 : 0) + (c ? 8 : 0);
    };
    CHECK(f.loop.block_on(body()) == 15);
  }

  TEST_CASE("no limit: zero, negative and Duration::max() arm nothing") {
    FakeLoop f;
    for (lev::Duration d : {lev::Duration::zero(), lev::Duration(-5s), lev::Duration::max()}) {
      lev::IdleDeadline idle{f.loop, d};
      CHECK(f.loop.live_op_count() == 0);
      CHECK(idle.idle() == lev::Duration::max());
      auto body = [&]() -> lev::Task<bool> {
        auto r = co_await idle(f.loop.sleep_for(10h));
        co_return r.has_value();
      };
      CHECK(f.loop.block_on(body()));
    }
  }

  TEST_CASE(
      "a recv guarded by an idle limit times out on every engine; data sent later is not lost") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      lev::IdleDeadline idle{loop, 50ms};
      std::array<char, 8> buf{};
      auto quiet = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await idle(loop.recv(a, buf));
      };
      const auto t0 = std::chrono::steady_clock::now();
      auto r = loop.block_on(quiet());
      REQUIRE_FALSE(r);
      CHECK(r.error().is_timeout());
      CHECK(r.error().fd == a.get());
      CHECK(std::chrono::steady_clock::now() - t0 >= 50ms);
      REQUIRE(::send(b.get(), "hi", 2, MSG_NOSIGNAL) == 2);
      idle.rearm();
      auto again = loop.block_on(quiet());
      REQUIRE(again);
      CHECK(*again == 2);
      // the pool's recv(fd) too
      auto pooled = [&]() -> lev::Task<lev::Result<lev::Buffer>> {
        co_return co_await idle(loop.recv(a));
      };
      auto p = loop.block_on(pooled());
      REQUIRE_FALSE(p);
      CHECK(p.error().is_timeout());
      REQUIRE(::send(b.get(), "yo", 2, MSG_NOSIGNAL) == 2);
      idle.rearm();
      auto q = loop.block_on(pooled());
      REQUIRE(q);
      CHECK(q->view() == "yo");
    });
  }

  TEST_CASE(
      "a guarded recv that gets data in time is not cancelled, and a stop still reads as a stop") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      lev::IdleDeadline idle{loop, 5s};
      std::array<char, 8> buf{};
      REQUIRE(::send(b.get(), "abc", 3, MSG_NOSIGNAL) == 3);
      auto talk = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await idle(loop.recv(a, buf));
      };
      auto r = loop.block_on(talk());
      REQUIRE(r);
      CHECK(*r == 3);
      std::stop_source stop;
      auto stopper = [&]() -> lev::Task<> {
        (void)co_await loop.sleep_for(10ms);
        stop.request_stop();
      };
      loop.spawn(stopper());
      auto s = loop.block_on(talk().with_stop_token(stop.get_token()));
      REQUIRE_FALSE(s);
      CHECK(s.error().is_cancelled());
      CHECK_FALSE(idle.expired());
    });
  }

  TEST_CASE("a send guarded by an expired idle limit is cancelled, not sent, on every engine") {
    // On epoll a send the socket takes at once does not suspend
    // (Loop::start_now); an expired limit must still cancel it first.
    lev::test::for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      lev::IdleDeadline idle{loop, 10ms};
      std::array<char, 8> buf{};
      auto body = [&]() -> lev::Task<lev::Result<std::size_t>> {
        auto first = co_await loop.send(a, std::string_view("w"));  // a's first use
        REQUIRE(first);
        auto quiet = co_await idle(loop.recv(a, buf));
        REQUIRE_FALSE(quiet);
        CHECK(quiet.error().is_timeout());
        CHECK(idle.expired());
        co_return co_await idle(loop.send(a, std::string_view("x")));
      };
      auto r = loop.block_on(body());
      REQUIRE_FALSE(r);
      CHECK(r.error().is_timeout());
      char got[4];
      CHECK(::recv(b.get(), got, sizeof(got), MSG_DONTWAIT) == 1);  // the "w" only
      CHECK(got[0] == 'w');
      CHECK(loop.live_op_count() == 0);
    });
  }
}
