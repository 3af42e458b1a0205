#include "lev/timer.hpp"

#include <doctest/doctest.h>

#include <chrono>

#include "lev/loop.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::for_each_engine;

TEST_SUITE("timer") {
  TEST_CASE("a one-shot timerfd is awaited, no earlier than its delay") {
    for_each_engine([](lev::Loop& loop) {
      lev::Timer t{loop};
      auto task = [&]() -> lev::Task<> {
        auto start = loop.now();
        REQUIRE(t.arm(10ms));
        auto n = co_await t.wait();
        REQUIRE(n);
        CHECK(*n == 1);
        CHECK(loop.now() - start >= 10ms);
      };
      loop.block_on(task());
    });
  }

  TEST_CASE("a periodic timerfd counts expirations a slow waiter missed") {
    for_each_engine([](lev::Loop& loop) {
      lev::Timer t{loop};
      auto task = [&]() -> lev::Task<std::uint64_t> {
        REQUIRE(t.arm(2ms, 2ms));
        (void)co_await loop.after(15ms);  // fall behind
        auto n = co_await t.wait();
        REQUIRE(t.disarm());
        co_return n.value();
      };
      CHECK(loop.block_on(task()) >= 3);
      CHECK(t.take_expirations().value() == 0);
    });
  }

  TEST_CASE("a reactor watcher drives a periodic timerfd") {
    lev::Loop loop{lev::Model::reactor};
    lev::Timer t{loop};
    REQUIRE(t.arm(1ms, 1ms));
    std::uint64_t ticks = 0;
    auto w = loop.watch(t.fd(), {.read = [&](lev::Watcher& self) {
                          ticks += t.take_expirations().value();
                          if (ticks >= 5) self.cancel();
                        }});
    loop.run();
    CHECK(ticks >= 5);
  }
}
