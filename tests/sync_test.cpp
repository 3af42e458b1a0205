// Event, Mutex, Semaphore: FIFO release from the completion queue, mutual
// exclusion, cancellation of parked waiters.
#include "lev/sync.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <string>
#include <vector>

#include "support.hpp"

using namespace std::chrono_literals;

using lev::test::FakeLoop;

TEST_SUITE("sync") {
  TEST_CASE("Event: set releases every waiter, in FIFO order, from the queue") {
    FakeLoop f;
    lev::Event ev{f.loop};
    std::vector<int> order;
    auto waiter = [&](int id) -> lev::Task<> {
      auto r = co_await ev.wait();
      CHECK(r);
      order.push_back(id);
    };
    for (int i = 0; i < 5; ++i) f.loop.spawn(waiter(i));
    f.loop.run_once();  // all park
    CHECK(order.empty());
    ev.set();
    CHECK(order.empty());  // never inside set()
    f.loop.run_once();
    CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
    // once set, waits complete without parking; after reset they park again
    auto again = [&]() -> lev::Task<bool> { co_return static_cast<bool>(co_await ev.wait()); };
    CHECK(f.loop.block_on(again()));
    ev.reset();
    f.loop.spawn(waiter(9));
    f.loop.run_once();
    CHECK(order.size() == 5);
    ev.set();
    f.loop.run_once();
    CHECK(order.back() == 9);
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE("Mutex under 1,000 contending tasks: mutual exclusion and FIFO order hold") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      lev::Mutex m{loop};
      constexpr int kTasks = 1000;
      int inside = 0, max_inside = 0;
      std::vector<int> order;
      auto worker = [&](int id) -> lev::Task<> {
        auto lock = co_await m.lock();
        REQUIRE(lock);
        order.push_back(id);
        ++inside;
        max_inside = std::max(max_inside, inside);
        (void)co_await loop.nop();  // hold the lock across a suspension
        --inside;
      };
      for (int i = 0; i < kTasks; ++i) loop.spawn(worker(i));
      loop.run();
      CHECK(max_inside == 1);
      REQUIRE(order.size() == static_cast<std::size_t>(kTasks));
      bool fifo = true;
      for (int i = 0; i < kTasks; ++i) fifo = fifo && order[static_cast<std::size_t>(i)] == i;
      CHECK(fifo);
      CHECK_FALSE(m.is_locked());
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("Mutex: a parked locker whose token stops leaves the queue; the lock skips it") {
    FakeLoop f;
    lev::Mutex m{f.loop};
    std::stop_source src;
    std::vector<std::string> log;
    auto holder = [&]() -> lev::Task<> {
      auto lock = co_await m.lock();
      (void)co_await f.loop.after(10ms);
      log.push_back("holder done");
    };
    auto quitter = [&]() -> lev::Task<> {
      auto lock = co_await m.lock();
      log.push_back(lock ? "quitter locked" : "quitter cancelled");
    };
    auto next = [&]() -> lev::Task<> {
      auto lock = co_await m.lock();
      log.push_back(lock ? "next locked" : "next cancelled");
    };
    f.loop.spawn(holder());
    f.loop.spawn(quitter(), src.get_token());
    f.loop.spawn(next());
    f.loop.run_once();
    src.request_stop();
    f.loop.run();
    CHECK(log == std::vector<std::string>{"quitter cancelled", "holder done", "next locked"});
    CHECK_FALSE(m.is_locked());
  }

  TEST_CASE("Semaphore: at most N holders, FIFO") {
    FakeLoop f;
    lev::Semaphore sem{f.loop, 3};
    int holders = 0, peak = 0;
    std::vector<int> order;
    auto worker = [&](int id) -> lev::Task<> {
      REQUIRE(co_await sem.acquire());
      order.push_back(id);
      peak = std::max(peak, ++holders);
      (void)co_await f.loop.after(std::chrono::milliseconds(1 + id % 3));
      --holders;
      sem.release();
    };
    for (int i = 0; i < 20; ++i) f.loop.spawn(worker(i));
    f.loop.run();
    CHECK(peak == 3);
    CHECK(order.size() == 20);
    CHECK(sem.available() == 3);
    // FIFO: whoever asked first gets the next unit, whatever the hold times
    std::vector<int> ids(20);
    std::iota(ids.begin(), ids.end(), 0);
    CHECK(order == ids);
  }

  TEST_CASE("a task destroyed while granted the lock passes it on") {
    auto [a, b] = lev::test::socket_pair();
    std::vector<int> got;
    {
      FakeLoop f;
      lev::Mutex m{f.loop};
      REQUIRE(m.try_lock());
      auto locker = [&](int id) -> lev::Task<> {
        auto lock = co_await m.lock();
        got.push_back(id);
      };
      f.loop.spawn(locker(1));
      f.loop.run_once();  // parks
      m.unlock();         // granted; its resumption is queued, then the loop goes
      CHECK(m.is_locked());
    }
    CHECK(got.empty());
  }
}
