// loop.spawn's JoinHandle: awaiting gives the task's value or exception,
// abort() cancels it, dropping it detaches it.
#include "lev/join_handle.hpp"

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <stdexcept>
#include <string>
#include <system_error>

#include "lev/loop.hpp"
#include "lev/task_group.hpp"
#include "lev/when.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::FakeLoop;

namespace {
lev::Task<int> answer_after(lev::Loop& loop, lev::Duration d) {
  auto r = co_await loop.sleep_for(d);
  r.value();  // a cancelled sleep throws operation_canceled
  co_return 42;
}
lev::Task<> fails(lev::Loop& loop) {
  (void)co_await loop.sleep_for(1ms);
  throw std::runtime_error("it broke");
}
}  // namespace

TEST_SUITE("join_handle") {
  TEST_CASE("awaiting a spawned task's handle gives its value") {
    FakeLoop f;
    auto h = f.loop.spawn(answer_after(f.loop, 10ms));
    auto waiter = [&]() -> lev::Task<int> { co_return co_await std::move(h); };
    CHECK(f.loop.block_on(waiter()) == 42);
    CHECK(h.done());
  }

  TEST_CASE("a handle awaited after its task ended still gives the value") {
    FakeLoop f;
    auto h = f.loop.spawn(answer_after(f.loop, 1ms));
    f.loop.run();
    REQUIRE(h.done());
    auto waiter = [&]() -> lev::Task<int> { co_return co_await std::move(h); };
    CHECK(f.loop.block_on(waiter()) == 42);
  }

  TEST_CASE("an exception the task throws reaches the awaiter") {
    FakeLoop f;
    auto h = f.loop.spawn(fails(f.loop));
    auto waiter = [&]() -> lev::Task<std::string> {
      try {
        co_await std::move(h);
      } catch (const std::runtime_error& e) {
        co_return e.what();
      }
      co_return "no exception";
    };
    CHECK(f.loop.block_on(waiter()) == "it broke");
  }

  TEST_CASE("abort() cancels the task; the awaiter sees how it ended") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      auto h = loop.spawn(answer_after(loop, 1h));
      auto waiter = [&]() -> lev::Task<std::string> {
        (void)co_await loop.sleep_for(1ms);
        h.abort();
        try {
          co_return std::to_string(co_await std::move(h));
        } catch (const std::system_error& e) {
          co_return e.code() == std::errc::operation_canceled ? "cancelled" : e.what();
        }
      };
      CHECK(loop.block_on(waiter()) == "cancelled");
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("abort() also reaches a task spawned with a token of its own, and that token still works") {
    FakeLoop f;
    std::stop_source mine;
    auto a = f.loop.spawn(answer_after(f.loop, 1h), mine.get_token());
    auto b = f.loop.spawn(answer_after(f.loop, 1h), mine.get_token());
    a.abort();
    f.loop.run_once();
    f.loop.run_once();
    CHECK(a.done());
    CHECK_FALSE(b.done());
    mine.request_stop();
    f.loop.run_once();
    f.loop.run_once();
    CHECK(b.done());
  }

  TEST_CASE("dropping the handle detaches the task: it runs to its end") {
    FakeLoop f;
    int ran = 0;
    {
      auto h = f.loop.spawn([](lev::Loop& l, int& r) -> lev::Task<> {
        (void)co_await l.sleep_for(5ms);
        ++r;
      }(f.loop, ran));
    }
    f.loop.run();
    CHECK(ran == 1);
  }

  TEST_CASE("an exception of a task nobody awaits goes to the log, the loop goes on") {
    const std::string err = lev::test::run_in_child([] {
      lev::Loop loop{lev::Model::proactor, {.backend = "fake"}};
      loop.spawn(fails(loop));  // detached at once
      auto kept = loop.spawn(fails(loop));
      loop.run();
      kept.detach();  // ended with an exception nobody took
    });
    std::size_t n = 0;
    for (std::size_t at = err.find("it broke"); at != std::string::npos;
         at = err.find("it broke", at + 1))
      ++n;
    CHECK(n == 2);
  }

  TEST_CASE("a task awaiting a handle can be destroyed with its loop") {
    auto witness = std::make_shared<int>(0);
    {
      FakeLoop f;
      auto h = f.loop.spawn(answer_after(f.loop, 1h));
      f.loop.spawn([](lev::JoinHandle<int> h, std::shared_ptr<int> w) -> lev::Task<> {
        (void)co_await std::move(h);
        ++*w;
      }(std::move(h), witness));
      f.loop.run_once();
      f.loop.run_once();
    }
    CHECK(*witness == 0);
    CHECK(witness.use_count() == 1);
  }

  TEST_CASE("a loop destroyed before its spawned tasks ever ran frees their shared state") {
    // Regression (LSan, listen_test): the root released the handle's state
    // from a local of its body, which a never-started root never reaches.
    auto witness = std::make_shared<int>(0);
    auto body = [](std::shared_ptr<int> w) -> lev::Task<int> { co_return ++*w; };
    lev::JoinHandle<int> outlives;  // handle destroyed after the loop
    {
      FakeLoop f;
      outlives = f.loop.spawn(body(witness));
      (void)f.loop.spawn(body(witness));  // dropped at once: detached
      auto inner = f.loop.spawn(body(witness));  // dropped before the loop
      CHECK_FALSE(inner.done());
    }
    CHECK_FALSE(outlives.done());
    CHECK(*witness == 0);  // none ran
    CHECK(witness.use_count() == 1);  // every frame went, with its arguments
  }

  // abort() works through the task tree's scope, not through a
  // std::stop_callback per operation: these walk the shapes a tree takes.
  TEST_CASE("abort() reaches an operation awaited three tasks deep, and later ones start cancelled") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      int cancelled = 0;
      auto leaf = [&]() -> lev::Task<> {
        std::array<std::byte, 8> buf{};
        auto r = co_await loop.recv(a, buf);
        if (!r && r.error().is_cancelled()) ++cancelled;
        auto again = co_await loop.recv(a, buf);  // the scope stays stopped
        if (!again && again.error().is_cancelled()) ++cancelled;
      };
      auto mid = [&]() -> lev::Task<> { co_await leaf(); };
      auto top = [&]() -> lev::Task<> { co_await mid(); };
      auto h = loop.spawn(top());
      auto aborter = [&]() -> lev::Task<> {
        (void)co_await loop.sleep_for(5ms);
        h.abort();
        co_await std::move(h);
      };
      loop.block_on(aborter());
      CHECK(cancelled == 2);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("abort() reaches a nested task bound to a token of its own, and its current_stop_token") {
    FakeLoop f;
    std::stop_source other;  // never stopped
    bool token_stopped = false;
    bool sleep_cancelled = false;
    auto inner = [&]() -> lev::Task<> {
      auto r = co_await f.loop.sleep_for(1h);
      sleep_cancelled = !r && r.error().is_cancelled();
    };
    auto outer = [&]() -> lev::Task<> {
      std::stop_token mine = co_await lev::current_stop_token();
      co_await inner().with_stop_token(other.get_token());
      token_stopped = mine.stop_requested();
    };
    auto h = f.loop.spawn(outer());
    f.loop.run_once();
    h.abort();
    f.loop.run();
    CHECK(sleep_cancelled);
    CHECK(token_stopped);
    CHECK(h.done());
  }

  TEST_CASE("abort() before the task first ran: its first operation starts cancelled") {
    FakeLoop f;
    const auto t0 = f.loop.now();
    auto h = f.loop.spawn(answer_after(f.loop, 1h));
    h.abort();
    auto waiter = [&]() -> lev::Task<std::string> {
      try {
        co_return std::to_string(co_await std::move(h));
      } catch (const std::system_error& e) {
        co_return e.code() == std::errc::operation_canceled ? "cancelled" : e.what();
      }
    };
    CHECK(f.loop.block_on(waiter()) == "cancelled");
    CHECK(f.loop.now() - t0 < 1h);  // the sleep never waited
  }

  TEST_CASE("abort() of a task waiting in when_all and with_task_group cancels every child") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      int cancelled = 0;
      auto reader = [&]() -> lev::Task<> {
        std::array<std::byte, 8> buf{};
        auto r = co_await loop.recv(a, buf);
        if (!r && r.error().is_cancelled()) ++cancelled;
      };
      auto sleeper = [&]() -> lev::Task<> {
        auto r = co_await loop.sleep_for(1h);
        if (!r && r.error().is_cancelled()) ++cancelled;
      };
      auto top = [&]() -> lev::Task<> {
        co_await lev::when_all(reader(), sleeper());
        co_await lev::with_task_group([&](lev::TaskGroup& g) -> lev::Task<> {
          g.spawn(sleeper());
          g.spawn(sleeper());
          auto r = co_await loop.sleep_for(1h);  // the body too
          if (!r && r.error().is_cancelled()) ++cancelled;
        });
      };
      auto h = loop.spawn(top());
      auto aborter = [&]() -> lev::Task<> {
        (void)co_await loop.sleep_for(5ms);
        h.abort();
        co_await std::move(h);
      };
      loop.block_on(aborter());
      // when_all: both children; the group: its body and both children (the
      // scope is stopped, so everything the group starts starts cancelled)
      CHECK(cancelled == 5);
      CHECK(loop.live_op_count() == 0);
    });
  }
}
