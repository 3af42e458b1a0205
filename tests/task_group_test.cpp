// TaskGroup: children cannot outlive the scope; the first failure cancels
// the rest and is rethrown once.
#include "lev/task_group.hpp"

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <stdexcept>
#include <vector>

#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::for_each_engine;

TEST_SUITE("task_group") {
  TEST_CASE("leaving the scope waits for every child") {
    auto fake = std::make_shared<lev::FakeBackend>();
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    int done = 0;
    auto child = [&](lev::Duration d) -> lev::Task<> {
      (void)co_await loop.after(d);
      ++done;
    };
    auto body = [&]() -> lev::Task<int> {
      int v = co_await lev::with_task_group([&](lev::TaskGroup& g) -> lev::Task<int> {
        for (int i = 1; i <= 5; ++i) g.spawn(child(std::chrono::milliseconds(i * 10)));
        CHECK(done == 0);  // children start from the queue, not inside spawn
        co_return 7;
      });
      CHECK(done == 5);
      co_return v;
    };
    const auto t0 = loop.now();
    CHECK(loop.block_on(body()) == 7);
    CHECK(loop.now() - t0 == 50ms);
    CHECK(loop.live_op_count() == 0);
  }

  TEST_CASE(
      "a child fails while its siblings are blocked in recv: they are cancelled, the error "
      "rethrown once") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      auto [c, d] = lev::test::socket_pair();
      int cancelled = 0;
      auto reader = [&](lev::FdRef fd) -> lev::Task<> {
        std::array<std::byte, 8> buf{};
        auto r = co_await loop.recv(fd, buf);
        if (!r && r.error().is_cancelled()) ++cancelled;
      };
      auto failing = [&]() -> lev::Task<> {
        (void)co_await loop.after(5ms);
        throw std::runtime_error("child failed");
      };
      int body_cancelled = 0;
      auto body = [&]() -> lev::Task<> {
        co_await lev::with_task_group([&](lev::TaskGroup& g) -> lev::Task<> {
          g.spawn(reader(a));
          g.spawn(reader(c));
          g.spawn(failing());
          auto r = co_await loop.after(10s);  // the body is cancelled too
          if (!r && r.error().is_cancelled()) ++body_cancelled;
        });
      };
      CHECK_THROWS_WITH_AS(loop.block_on(body()), "child failed", std::runtime_error);
      CHECK(cancelled == 2);
      CHECK(body_cancelled == 1);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a failing body cancels the children and its error is the one rethrown") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      int cancelled = 0;
      auto reader = [&]() -> lev::Task<> {
        std::array<std::byte, 8> buf{};
        auto r = co_await loop.recv(a, buf);
        if (!r && r.error().is_cancelled()) ++cancelled;
        throw std::runtime_error("second failure");  // not reported: the body failed first
      };
      auto body = [&]() -> lev::Task<> {
        co_await lev::with_task_group([&](lev::TaskGroup& g) -> lev::Task<> {
          g.spawn(reader());
          (void)co_await loop.after(2ms);
          throw std::logic_error("body failed");
        });
      };
      CHECK_THROWS_WITH_AS(loop.block_on(body()), "body failed", std::logic_error);
      CHECK(cancelled == 1);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("children may spawn siblings; the group waits for those too") {
    auto fake = std::make_shared<lev::FakeBackend>();
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    int leaves = 0;
    std::function<lev::Task<>(lev::TaskGroup&, int)> tree = [&](lev::TaskGroup& g,
                                                                int depth) -> lev::Task<> {
      (void)co_await loop.after(1ms);
      if (depth == 0) {
        ++leaves;
        co_return;
      }
      g.spawn(tree(g, depth - 1));
      g.spawn(tree(g, depth - 1));
    };
    auto body = [&]() -> lev::Task<> {
      co_await lev::with_task_group([&](lev::TaskGroup& g) -> lev::Task<> {
        g.spawn(tree(g, 6));
        co_return;
      });
      CHECK(leaves == 64);
    };
    loop.block_on(body());
    CHECK(loop.live_op_count() == 0);
  }

  TEST_CASE("a loop destroyed while a group waits destroys the children and settles their ops") {
    auto [a, b] = lev::test::socket_pair();
    {
      lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
      auto reader = [&]() -> lev::Task<> {
        std::array<std::byte, 8> buf{};
        (void)co_await loop.recv(a, buf);
      };
      auto body = [&]() -> lev::Task<> {
        co_await lev::with_task_group([&](lev::TaskGroup& g) -> lev::Task<> {
          for (int i = 0; i < 3; ++i) g.spawn(reader());
          co_return;
        });
      };
      loop.spawn(body());
      loop.run_once();  // the body runs and spawns: three queued starts
      loop.run_once();  // the children run: three recvs in the kernel
      CHECK(loop.live_op_count() == 3);
    }
    {
      lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
      auto reader = [&]() -> lev::Task<> {
        std::array<std::byte, 8> buf{};
        (void)co_await loop.recv(a, buf);
      };
      auto body = [&]() -> lev::Task<> {
        co_await lev::with_task_group([&](lev::TaskGroup& g) -> lev::Task<> {
          for (int i = 0; i < 3; ++i) g.spawn(reader());
          co_return;
        });
      };
      loop.spawn(body());
      loop.run_once();  // destroyed with the children's starts still queued
      CHECK(loop.live_op_count() == 3);
    }
    // nothing consumed the socket after the loops went away
    REQUIRE(::send(b.get(), "xyz", 3, MSG_NOSIGNAL) == 3);
    std::array<char, 8> got{};
    CHECK(::recv(a.get(), got.data(), got.size(), 0) == 3);
  }

  TEST_CASE("several tasks joining one group all resume when it empties") {
    // Decided (issue 16): join() admits any number of joiners, released in
    // the order they came. Before, it kept one: a second concurrent join
    // replaced the first, which never resumed.
    for_each_engine([](lev::Loop& loop) {
      lev::TaskGroup g{loop};
      auto child = [&]() -> lev::Task<> { (void)co_await loop.after(5ms); };
      g.spawn(child());
      std::vector<int> order;
      auto joiner = [&](int id) -> lev::Task<> {
        co_await g.join();
        order.push_back(id);
      };
      loop.spawn(joiner(1));
      loop.spawn(joiner(2));
      loop.spawn(joiner(3));
      loop.run();
      CHECK(order == std::vector<int>{1, 2, 3});
      CHECK(g.running() == 0);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a group destroyed with joiners still waiting leaves them nothing to touch") {
    for_each_engine([](lev::Loop& loop) {
      int resumed = 0;
      {
        lev::TaskGroup g{loop};
        auto child = [&]() -> lev::Task<> { (void)co_await loop.after(1h); };
        g.spawn(child());
        auto joiner = [&]() -> lev::Task<> {
          co_await g.join();
          ++resumed;
        };
        loop.spawn(joiner());
        loop.spawn(joiner());
        auto pause = [&]() -> lev::Task<> { (void)co_await loop.after(1ms); };
        loop.block_on(pause());  // both wait in join()
      }  // the group goes first (its child with it); the joiners stay parked
      CHECK(resumed == 0);
    });  // the loop's teardown destroys the parked joiners
  }
}
