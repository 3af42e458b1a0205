// Channel<T>: bounded FIFO between tasks, on one loop and across threads.
#include "lev/channel.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "lev/when.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

using lev::test::FakeLoop;

TEST_SUITE("channel") {
  TEST_CASE("capacity 1, 10 producers x 10,000 items: each received once, in per-producer order") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      constexpr int kProducers = 10, kItems = 10000;
      lev::Channel<std::pair<int, int>> ch{1};
      std::vector<int> next(kProducers, 0);
      bool in_order = true;
      int received = 0;
      auto producer = [&](int p) -> lev::Task<> {
        for (int i = 0; i < kItems; ++i) REQUIRE(co_await ch.send({p, i}));
      };
      auto consumer = [&]() -> lev::Task<> {
        for (int n = 0; n < kProducers * kItems; ++n) {
          auto item = co_await ch.receive();
          REQUIRE(item);
          auto [p, i] = *item;
          in_order = in_order && next[static_cast<std::size_t>(p)] == i;
          next[static_cast<std::size_t>(p)] = i + 1;
          ++received;
        }
      };
      for (int p = 0; p < kProducers; ++p) loop.spawn(producer(p));
      loop.block_on(consumer());
      CHECK(received == kProducers * kItems);
      CHECK(in_order);
      for (int p = 0; p < kProducers; ++p) CHECK(next[static_cast<std::size_t>(p)] == kItems);
      CHECK(ch.size() == 0);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("close while receivers wait: each gets errc::closed; buffered items drain first") {
    FakeLoop f;
    lev::Channel<int> ch{4};
    std::vector<std::string> log;
    auto receiver = [&](int id) -> lev::Task<> {
      auto r = co_await ch.receive();
      if (r)
        log.push_back(std::to_string(id) + ":" + std::to_string(*r));
      else
        log.push_back(std::to_string(id) + ":" + (r.error().is_closed() ? "closed" : "?"));
    };
    for (int i = 0; i < 3; ++i) f.loop.spawn(receiver(i));
    f.loop.run_once();
    ch.close();
    f.loop.run();
    CHECK(log == std::vector<std::string>{"0:closed", "1:closed", "2:closed"});
    CHECK(f.loop.live_op_count() == 0);

    lev::Channel<int> ch2{4};
    int one = 1, two = 2;
    REQUIRE(ch2.try_send(one));
    REQUIRE(ch2.try_send(two));
    ch2.close();
    int three = 3;
    CHECK_FALSE(ch2.try_send(three));
    auto drain = [&]() -> lev::Task<std::vector<int>> {
      std::vector<int> got;
      while (auto r = co_await ch2.receive()) got.push_back(*r);
      auto s = co_await ch2.send(4);
      CHECK(s.error().is_closed());
      CHECK(s.error().message() == "Channel::send: channel closed");
      co_return got;
    };
    CHECK(f.loop.block_on(drain()) == std::vector<int>{1, 2});
  }

  TEST_CASE("a parked sender cancelled by its token leaves; its item never enters the channel") {
    FakeLoop f;
    lev::Channel<int> ch{1};
    std::stop_source src;
    bool cancelled = false;
    auto sender = [&]() -> lev::Task<> {
      REQUIRE(co_await ch.send(1));
      auto r = co_await ch.send(2);  // full: parks
      cancelled = !r && r.error().is_cancelled();
    };
    f.loop.spawn(sender(), src.get_token());
    f.loop.run_once();
    src.request_stop();
    f.loop.run();
    CHECK(cancelled);
    CHECK(ch.size() == 1);
    CHECK(ch.try_receive() == 1);
    CHECK_FALSE(ch.try_receive());
  }

  TEST_CASE("across threads: producers on their own loops, one consumer; nothing lost or doubled") {
    constexpr int kThreads = 3, kItems = 20000;
    lev::Channel<std::pair<int, int>> ch{16};
    std::vector<std::thread> threads;
    std::atomic<int> failed{0};
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        // An exception must not leave a thread (std::terminate): a loop
        // that cannot start, or a refused send, closes the channel, and the
        // consumer fails on the main thread.
        try {
          lev::Loop loop{t % 2 ? lev::Model::reactor : lev::Model::proactor,
                         t % 2 ? lev::LoopOptions{} : lev::test::proactor_options()};
          auto producer = [&]() -> lev::Task<bool> {
            for (int i = 0; i < kItems; ++i)
              if (!co_await ch.send({t, i})) co_return false;
            co_return true;
          };
          // parked senders are woken from the consumer's thread
          if (!loop.block_on(producer())) throw std::runtime_error("send refused");
        } catch (const std::exception& e) {
          std::fprintf(stderr, "producer %d: %s\n", t, e.what());
          ++failed;
          ch.close();
        }
      });
    lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
    std::vector<int> next(kThreads, 0);
    bool in_order = true;
    auto consumer = [&]() -> lev::Task<> {
      for (int n = 0; n < kThreads * kItems; ++n) {
        auto item = co_await ch.receive();
        if (!item) break;  // a producer failed and closed it: the checks below fail
        in_order = in_order && next[static_cast<std::size_t>(item->first)] == item->second;
        next[static_cast<std::size_t>(item->first)] = item->second + 1;
      }
    };
    loop.block_on(consumer());
    for (auto& t : threads) t.join();
    CHECK(failed.load() == 0);
    CHECK(in_order);
    for (int t = 0; t < kThreads; ++t) CHECK(next[static_cast<std::size_t>(t)] == kItems);
  }
}
