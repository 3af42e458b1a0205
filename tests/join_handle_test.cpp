// loop.spawn's JoinHandle: awaiting gives the task's value or exception,
// abort() cancels it, dropping it detaches it.
#include "lev/join_handle.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <system_error>

#include "lev/loop.hpp"
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
}
