#include <doctest/doctest.h>

#include <chrono>
#include <vector>

#include "lev/fake.hpp"
#include "lev/loop.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

TEST_SUITE("timers") {
  TEST_CASE("timers fire in deadline order, equal deadlines in arming order") {
    lev::Loop loop{lev::Model::proactor};
    std::vector<int> order;
    const auto start = loop.now();
    auto at = loop.now() + 20ms;
    loop.after(30ms, [&](lev::Operation&, lev::Result<lev::Expired> r) {
      CHECK(r);
      order.push_back(3);
    });
    loop.after(5ms, [&](lev::Operation&, auto) { order.push_back(1); });
    loop.at(at, [&](lev::Operation&, auto) { order.push_back(2); });
    loop.at(at, [&](lev::Operation&, auto) { order.push_back(21); });
    loop.run();
    CHECK(order == std::vector<int>{1, 2, 21, 3});
    CHECK(loop.now() - start >= 30ms);
  }

  TEST_CASE("an awaited timer resumes no earlier than its deadline and reports it") {
    lev::Loop loop{lev::Model::proactor};
    auto t = [&]() -> lev::Task<lev::Duration> {
      auto start = loop.now();
      auto r = co_await loop.after(10ms);
      REQUIRE(r);
      CHECK(r->deadline >= start + 10ms);
      co_return loop.now() - start;
    };
    CHECK(loop.block_on(t()) >= 10ms);
  }

  TEST_CASE("a negative or past timer fires on the next round") {
    lev::Loop loop{lev::Model::proactor};
    int fired = 0;
    loop.after(-5s, [&](lev::Operation&, auto) { ++fired; });
    loop.at(loop.now() - 1h, [&](lev::Operation&, auto) { ++fired; });
    CHECK(fired == 0);
    loop.run_once();
    CHECK(fired == 2);
  }

  TEST_CASE("a cancelled timer reports ECANCELED and never fires") {
    lev::Loop loop{lev::Model::proactor};
    bool expired = false;
    bool cancelled = false;
    auto op = loop.after(10ms, [&](lev::Operation& o, lev::Result<lev::Expired> r) {
      expired = bool(r);
      cancelled = o.is_cancelled();
    });
    op.cancel();
    loop.run();
    CHECK_FALSE(expired);
    CHECK(cancelled);
  }

  TEST_CASE("a timer cancelled by another timer due at the same instant does not fire") {
    auto fake = std::make_shared<lev::FakeBackend>();
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    auto when = loop.now() + 1s;
    lev::Operation second;
    bool second_expired = false;
    loop.at(when, [&](lev::Operation&, auto) { second.cancel(); });
    second = loop.at(
        when, [&](lev::Operation&, lev::Result<lev::Expired> r) { second_expired = bool(r); });
    loop.run();
    // both were due in the same round; the first ran first and cancelled
    // the second: an expiry has no effect outside the loop, so cancel wins
    CHECK(second.is_cancelled());
    CHECK_FALSE(second_expired);
  }

  TEST_CASE("virtual time moves only when the test (or an idle loop) advances it") {
    auto fake =
        std::make_shared<lev::FakeBackend>(lev::FakeBackend::Options{.auto_advance = false});
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    int fired = 0;
    loop.after(10s, [&](lev::Operation&, auto) { ++fired; });
    loop.run_once();
    CHECK(fired == 0);
    fake->advance(9s);
    loop.run_once();
    CHECK(fired == 0);
    fake->advance(1s);
    loop.run_once();
    CHECK(fired == 1);
  }

  TEST_CASE("armed timers cost no backend waits: one poll per round, whatever their number") {
    auto fake = std::make_shared<lev::FakeBackend>();
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    constexpr int kTimers = 100'000;
    int fired = 0;
    lev::TimePoint last{};
    bool ordered = true;
    for (int i = 0; i < kTimers; ++i) {
      auto d = std::chrono::milliseconds((i * 7919) % 1000);
      loop.after(d, [&](lev::Operation&, lev::Result<lev::Expired> r) {
        ordered = ordered && r->deadline >= last;
        last = r->deadline;
        ++fired;
      });
    }
    CHECK(fake->poll_count() == 0);
    std::size_t rounds = 0;
    while (loop.live_op_count() > 0) {
      loop.run_once();
      ++rounds;
    }
    CHECK(fired == kTimers);
    CHECK(ordered);
    CHECK(fake->poll_count() == rounds);
    CHECK(rounds <= 2 * 1000 + 2);  // at most one wait per distinct deadline
  }
}
