// when_all, when_any, with_timeout: on the fake backend's virtual clock where
// the order matters, on the real engines where I/O does.
#include "lev/when.hpp"

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::for_each_engine;

namespace {

using lev::test::FakeLoop;

// Sleeps `d`; returns `id` if it expired, -1 if it was cancelled.
lev::Task<int> nap(lev::Loop& loop, lev::Duration d, int id, std::vector<int>* ended = nullptr) {
  auto r = co_await loop.after(d);
  if (ended) ended->push_back(id);
  co_return r ? id : -1;
}

}  // namespace

TEST_SUITE("when") {
  TEST_CASE("when_any of three timers: the earliest wins, the others are cancelled and reaped") {
    FakeLoop f;
    std::vector<int> ended;
    auto body = [&]() -> lev::Task<lev::Winner<std::variant<int, int, int>>> {
      co_return co_await lev::when_any(nap(f.loop, 30ms, 0, &ended), nap(f.loop, 10ms, 1, &ended),
                                       nap(f.loop, 20ms, 2, &ended));
    };
    const auto t0 = f.loop.now();
    auto w = f.loop.block_on(body());
    CHECK(w.index == 1);
    CHECK(std::get<1>(w.value) == 1);
    CHECK(ended.size() == 3);  // every loser ended before when_any returned
    CHECK(f.loop.live_op_count() == 0);
    CHECK(f.loop.now() - t0 == 10ms);  // the losers never waited out their time
  }

  TEST_CASE("when_any over a range, with a loser that is already finished") {
    FakeLoop f;
    auto body = [&]() -> lev::Task<lev::Winner<int>> {
      std::vector<lev::Task<int>> ts;
      ts.push_back(nap(f.loop, 50ms, 0));
      ts.push_back(nap(f.loop, 5ms, 1));
      ts.push_back(nap(f.loop, 5ms, 2));  // same deadline: armed later, fires later
      co_return co_await lev::when_any(std::move(ts));
    };
    auto w = f.loop.block_on(body());
    CHECK(w.index == 1);
    CHECK(w.value == 1);
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE("when_all returns every value in order") {
    FakeLoop f;
    auto body = [&]() -> lev::Task<> {
      auto [a, b, c] = co_await lev::when_all(nap(f.loop, 3ms, 7), nap(f.loop, 1ms, 8),
                                              [&]() -> lev::Task<> { co_return; }());
      CHECK(a == 7);
      CHECK(b == 8);
      (void)c;
      std::vector<lev::Task<int>> ts;
      for (int i = 0; i < 10; ++i) ts.push_back(nap(f.loop, std::chrono::milliseconds(10 - i), i));
      auto all = co_await lev::when_all(std::move(ts));
      REQUIRE(all.size() == 10);
      for (int i = 0; i < 10; ++i) CHECK(all[static_cast<std::size_t>(i)] == i);
    };
    f.loop.block_on(body());
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE("when_all where one child throws: the others are cancelled, the error rethrown once") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      int cancelled_readers = 0;
      auto reader = [&]() -> lev::Task<int> {
        std::array<std::byte, 8> buf{};
        auto r = co_await loop.recv(a, buf);
        if (!r && r.error().is_cancelled()) ++cancelled_readers;
        co_return 0;
      };
      auto thrower = [&]() -> lev::Task<int> {
        (void)co_await loop.after(2ms);
        throw std::runtime_error("child failed");
      };
      auto body = [&]() -> lev::Task<> {
        (void)co_await lev::when_all(reader(), thrower(), reader());
      };
      CHECK_THROWS_WITH_AS(loop.block_on(body()), "child failed", std::runtime_error);
      CHECK(cancelled_readers == 2);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("with_timeout on a recv that never completes: timed_out, the recv cancelled") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::array<std::byte, 8> buf{};
      auto recv_task = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await loop.recv(a, buf);
      };
      auto body = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await lev::with_timeout(recv_task(), 20ms);
      };
      const auto t0 = std::chrono::steady_clock::now();
      auto r = loop.block_on(body());
      REQUIRE_FALSE(r);
      CHECK(r.error().is_timeout());
      CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
      CHECK(loop.live_op_count() == 0);
      // the socket still works, and the cancelled recv took nothing
      REQUIRE(::send(b.get(), "hi", 2, MSG_NOSIGNAL) == 2);
      auto again = loop.block_on(body());
      REQUIRE(again);
      CHECK(*again == 2);
    });
  }

  TEST_CASE("with_timeout returns the value when the task finishes first, and cancels the timer") {
    FakeLoop f;
    auto body = [&]() -> lev::Task<lev::Result<int>> {
      co_return co_await lev::with_timeout(nap(f.loop, 5ms, 42), 1h);
    };
    const auto t0 = f.loop.now();
    auto r = f.loop.block_on(body());
    REQUIRE(r);
    CHECK(*r == 42);
    CHECK(f.loop.now() - t0 == 5ms);
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE("with_timeout outside a task on a loop is a clear error") {
    FakeLoop f;
    auto bare = [&]() -> lev::Task<> {
      auto inner = lev::with_timeout(nap(f.loop, 1ms, 1), 1s);
      // awaited from a coroutine that is not a lev::Task: no loop to use
      co_return;
    };
    f.loop.block_on(bare());
    // with_timeout(loop, ...) needs no current loop
    lev::Task<lev::Result<int>> t = lev::with_timeout(f.loop, nap(f.loop, 1ms, 1), 1s);
    auto r = f.loop.block_on(std::move(t));
    CHECK(r);
  }

  TEST_CASE("a stop of the caller's token reaches the children of when_all") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::stop_source src;
      auto reader = [&]() -> lev::Task<bool> {
        std::array<std::byte, 8> buf{};
        auto r = co_await loop.recv(a, buf);
        co_return !r && r.error().is_cancelled();
      };
      auto stopper = [&]() -> lev::Task<> {
        (void)co_await loop.after(5ms);
        src.request_stop();
      };
      auto body = [&]() -> lev::Task<std::tuple<bool, bool>> {
        co_return co_await lev::when_all(reader(), reader());
      };
      loop.spawn(stopper());
      auto [x, y] = loop.block_on(body().with_stop_token(src.get_token()));
      CHECK(x);
      CHECK(y);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("with_timeout takes an operation's awaitable as well as a task") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::array<char, 8> buf{};
      auto quiet = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await lev::with_timeout(loop, loop.recv(a, buf), 10ms);
      };
      auto r = loop.block_on(quiet());
      REQUIRE_FALSE(r);
      CHECK(r.error().code == std::errc::timed_out);
      REQUIRE(::write(b.get(), "hi", 2) == 2);
      auto talk = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await lev::with_timeout(loop.recv(a, buf), 5s);  // the calling task's loop
      };
      auto n = loop.block_on(talk());
      REQUIRE(n);
      CHECK(*n == 2);
      auto ready = [&]() -> lev::Task<lev::Result<unsigned>> {
        co_return co_await lev::with_timeout(loop, loop.writable(a), 5s);
      };
      CHECK(loop.block_on(ready()));
      CHECK(loop.live_op_count() == 0);
    });
  }

  // Regression (issue 20, defect 8): with_timeout decided "expired" by which
  // child ended first, and an outer stop ends the timer first, so a
  // cancellation from above was reported as a timeout (the tutorial client
  // exited 3 instead of 130 on Ctrl-C).
  TEST_CASE("with_timeout cancelled from outside reports a cancellation, not a timeout") {
    auto check = [](lev::Loop& loop, lev::Fd& a) {
      std::stop_source src;
      std::array<std::byte, 8> buf{};
      auto recv_task = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await loop.recv(a, buf);
      };
      auto sleep_task = [&]() -> lev::Task<> { (void)co_await loop.sleep_for(1h); };
      auto stopper = [&]() -> lev::Task<> {
        (void)co_await loop.after(20ms);
        src.request_stop();
      };
      auto on_recv = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await lev::with_timeout(recv_task(), 30s);
      };
      loop.spawn(stopper());
      auto r = loop.block_on(on_recv().with_stop_token(src.get_token()));
      REQUIRE_FALSE(r);
      CHECK(r.error().is_cancelled());
      CHECK_FALSE(r.error().is_timeout());
      // a void task (a sleep) and a JoinHandle's abort: the same
      auto on_sleep = [&]() -> lev::Task<lev::Result<void>> {
        co_return co_await lev::with_timeout(sleep_task(), 30s);
      };
      auto h = loop.spawn(on_sleep());
      auto aborter = [&]() -> lev::Task<lev::Result<void>> {
        (void)co_await loop.after(10ms);
        h.abort();
        co_return co_await std::move(h);
      };
      auto s = loop.block_on(aborter());
      CHECK(s);  // the sleep ended (cancelled) and the task returned: no timeout
      CHECK(loop.live_op_count() == 0);
    };
    SUBCASE("fake") {
      FakeLoop f;
      auto [a, b] = lev::test::socket_pair();
      check(f.loop, a);
    }
    for_each_engine([&](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      check(loop, a);
    });
  }

  TEST_CASE("with_timeout whose limit passes first still reports the timeout on every engine") {
    auto check = [](lev::Loop& loop) {
      auto sleep_task = [&]() -> lev::Task<> { (void)co_await loop.sleep_for(1h); };
      auto body = [&]() -> lev::Task<lev::Result<void>> {
        co_return co_await lev::with_timeout(sleep_task(), 5ms);
      };
      auto r = loop.block_on(body());
      REQUIRE_FALSE(r);
      CHECK(r.error().is_timeout());
      CHECK(loop.live_op_count() == 0);
    };
    SUBCASE("fake") {
      FakeLoop f;
      check(f.loop);
    }
    for_each_engine(check);
  }
  // Regression (issue 22, item 6): a task's cancellation error became a
  // bare with_timeout error: "with_timeout: Connection timed out", its op,
  // fd and `transferred` gone, so a send_all cut short by the deadline no
  // longer said how many bytes had gone.
  TEST_CASE(
      "with_timeout keeps the op, the fd and the bytes a send_all moved before the deadline") {
    FakeLoop f;
    std::optional<lev::Result<std::size_t>> r;
    auto body = [&]() -> lev::Task<> {
      r = co_await lev::with_timeout(f.loop, f.loop.send_all(7, std::string_view("0123456789")),
                                     1s);
    };
    f.loop.spawn(body());
    while (!f.fake->find(lev::detail::OpKind::send)) f.loop.run_once();
    f.fake->complete(*f.fake->find(lev::detail::OpKind::send), 4);  // a partial send
    while (!r) f.loop.run_once();  // the rest is resubmitted; the clock jumps to the deadline
    REQUIRE_FALSE(*r);
    CHECK(r->error().is_timeout());
    CHECK(std::string(r->error().op) == "send");
    CHECK(r->error().fd == 7);
    CHECK(r->error().transferred == 4);
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE(
      "with_timeout gives the value a task returns after catching its cancellation, and timed_out "
      "for its cancellation error") {
    FakeLoop f;
    // The task turns its cancellation into a value: with_timeout keeps it.
    auto fallback = [&]() -> lev::Task<int> {
      auto slept = co_await f.loop.sleep_for(1h);
      co_return slept ? 1 : 2;
    };
    auto kept = [&]() -> lev::Task<lev::Result<int>> {
      co_return co_await lev::with_timeout(fallback(), 5ms);
    };
    auto v = f.loop.block_on(kept());
    REQUIRE(v);
    CHECK(*v == 2);
    // The task hands its cancellation error back: that is the timeout.
    auto passes_on = [&]() -> lev::Task<lev::Result<lev::Expired>> {
      co_return co_await f.loop.sleep_for(1h);
    };
    auto reported = [&]() -> lev::Task<lev::Result<lev::Expired>> {
      co_return co_await lev::with_timeout(passes_on(), 5ms);
    };
    auto e = f.loop.block_on(reported());
    REQUIRE_FALSE(e);
    CHECK(e.error().is_timeout());
    CHECK(std::string(e.error().op) == "timer");
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE(
      "when_any takes operation awaitables beside tasks, and its winner is read by position") {
    FakeLoop f;
    auto body = [&]() -> lev::Task<> {
      auto w = co_await lev::when_any(nap(f.loop, 1h, 0), f.loop.sleep_for(10ms));
      CHECK(w.won<1>());
      CHECK_FALSE(w.won<0>());
      CHECK(w.get_if<0>() == nullptr);
      REQUIRE(w.get_if<1>() != nullptr);
      CHECK(w.get<1>().has_value());  // the sleep's Result<Expired>
      CHECK_THROWS_AS((void)w.get<0>(), std::bad_variant_access);
      auto both = co_await lev::when_all(f.loop.sleep_for(1ms), nap(f.loop, 2ms, 7));
      CHECK(std::get<0>(both).has_value());
      CHECK(std::get<1>(both) == 7);
    };
    f.loop.block_on(body());
    CHECK(f.loop.live_op_count() == 0);
  }
}
