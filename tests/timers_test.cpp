#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "lev/fake.hpp"
#include "lev/loop.hpp"
#include "lev/net/connect.hpp"
#include "lev/when.hpp"
#include "support.hpp"

namespace {
// Stops `loop` from another thread after `limit` unless disarmed: a test
// of a hang ends as a failure instead of hanging the suite.
class Watchdog {
 public:
  Watchdog(lev::Loop& loop, std::chrono::milliseconds limit)
      : thread_([this, &loop, limit] {
          for (auto waited = std::chrono::milliseconds(0); waited < limit && !done_;
               waited += std::chrono::milliseconds(10))
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          if (!done_) {
            fired_ = true;
            loop.stop();
          }
        }) {}
  ~Watchdog() {
    done_ = true;
    thread_.join();
  }
  [[nodiscard]] bool fired() const { return fired_; }

 private:
  std::atomic<bool> done_{false}, fired_{false};
  std::thread thread_;
};
}  // namespace

using namespace std::chrono_literals;

TEST_SUITE("timers") {
  TEST_CASE("timers fire in deadline order, equal deadlines in arming order") {
    lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
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
    lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
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
    lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
    int fired = 0;
    loop.after(-5s, [&](lev::Operation&, auto) { ++fired; });
    loop.at(loop.now() - 1h, [&](lev::Operation&, auto) { ++fired; });
    CHECK(fired == 0);
    loop.run_once();
    CHECK(fired == 2);
  }

  TEST_CASE("a cancelled timer reports ECANCELED and never fires") {
    lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
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

  TEST_CASE("a round fires at most kFireBudget expiries; the rest fire next round, in order") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      constexpr int kTimers = 2 * static_cast<int>(lev::Loop::kFireBudget) + 100;
      std::vector<int> order;
      const lev::TimePoint past = loop.now() - 1s;
      for (int i = 0; i < kTimers; ++i)  // one deadline per ten: ties in arming order
        loop.at(past + std::chrono::microseconds(i / 10),
                [&order, i](lev::Operation&, lev::Result<lev::Expired> r) {
                  if (r) order.push_back(i);
                });
      loop.run_once();
      CHECK(order.size() == lev::Loop::kFireBudget);
      loop.run_once();
      CHECK(order.size() == 2 * lev::Loop::kFireBudget);
      loop.run_once();
      REQUIRE(order.size() == static_cast<std::size_t>(kTimers));
      CHECK(std::is_sorted(order.begin(), order.end()));
    });
  }

  TEST_CASE("timer_slack: 0 to 1 s; more or less is refused by name") {
    for (const lev::Duration bad : {lev::Duration(-1), lev::Duration(std::chrono::seconds(1) + 1ns)}) {
      try {
        lev::Loop loop{lev::Model::proactor, lev::test::proactor_options({.timer_slack = bad})};
        FAIL("accepted timer_slack " << bad.count());
      } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("timer_slack") != std::string::npos);
      }
    }
    lev::Loop zero{lev::Model::proactor, lev::test::proactor_options({.timer_slack = 0ns})};
    lev::Loop most{lev::Model::proactor, lev::test::proactor_options({.timer_slack = 1s})};
  }

  // io_uring waits for the next timer up to the slack late, so timers due
  // within it of each other fire in one round; none fires early.
  TEST_CASE("io_uring: timers within the slack fire in one round, none before its deadline") {
    if (!lev::test::has_uring()) return;
    for (const lev::Duration slack : {lev::Duration::zero(), lev::Duration(40ms)}) {
      CAPTURE(slack.count());
      lev::Loop loop{lev::Model::proactor, {.backend = "uring", .timer_slack = slack}};
      const lev::TimePoint start = loop.clock().now();
      std::vector<std::size_t> round_of;  // the run_once call each timer fired in
      std::size_t round = 0;
      bool early = false;
      for (const auto d : {2ms, 12ms}) {
        loop.after(d, [&, d](lev::Operation&, lev::Result<lev::Expired> r) {
          early = early || !r || loop.clock().now() < start + d;
          round_of.push_back(round);
        });
      }
      while (round_of.size() < 2 && round < 1000) {
        loop.run_once();
        ++round;
      }
      REQUIRE(round_of.size() == 2);
      CHECK_FALSE(early);
      if (slack > 10ms) CHECK(round_of[0] == round_of[1]);  // one wake for both
    }
  }

  // Broke: now() + Duration::max() wrapped into the past; that timer sat at
  // the top of the heap and the poll timeout overflowed into a ~292-year
  // wait, so no other timer fired (UBSan: signed overflow).
  TEST_CASE("Duration::max() as a delay means never, and other timers still fire") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      bool never = false, soon = false;
      auto forever =
          loop.after(lev::Duration::max(), [&](lev::Operation&, lev::Result<lev::Expired> r) {
            if (r) never = true;
          });
      loop.after(10ms, [&](lev::Operation&, auto) {
        soon = true;
        loop.stop();
      });
      Watchdog dog(loop, 3000ms);
      loop.run();
      CHECK_FALSE(dog.fired());
      CHECK(soon);
      CHECK_FALSE(never);
      forever.cancel();
      loop.drain_callbacks();
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE(
      "deadlines saturate: at(TimePoint::min()) fires at once, every() near the end of time does "
      "not wrap") {
    lev::Loop loop{lev::Model::proactor, {.backend = "fake"}};
    int fired = 0;
    loop.at(lev::TimePoint::min(), [&](lev::Operation&, auto) { ++fired; });
    loop.run_once();
    CHECK(fired == 1);
    CHECK(lev::saturating_add(lev::TimePoint::max(), 1s) == lev::TimePoint::max());
    CHECK(lev::saturating_add(lev::TimePoint::min(), -1s) == lev::TimePoint::min());
    CHECK(lev::saturating_sub(lev::TimePoint::max(), lev::TimePoint::min()) ==
          lev::Duration::max());
  }

  TEST_CASE("with_timeout(task, Duration::max()) waits for the task") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      auto job = [](lev::Loop& l) -> lev::Task<int> {
        (void)co_await l.after(5ms);
        co_return 7;
      };
      Watchdog dog(loop, 3000ms);
      auto r = loop.block_on(lev::with_timeout(loop, job(loop), lev::Duration::max()));
      CHECK_FALSE(dog.fired());
      REQUIRE(r);
      CHECK(*r == 7);
    });
  }

  TEST_CASE("an operation with {.timeout = Duration::max()} is not timed out at once") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::array<char, 8> buf{};
      auto reader = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await loop.recv(a, buf, {.timeout = lev::Duration::max()});
      };
      auto writer = [&]() -> lev::Task<> {
        (void)co_await loop.after(5ms);
        (void)co_await loop.send(b, std::string_view("hi"));
      };
      loop.spawn(writer());
      Watchdog dog(loop, 3000ms);
      auto r = loop.block_on(reader());
      REQUIRE(r);
      CHECK(*r == 2);
      auto pooled =
          loop.block_on([](lev::Loop& l, int fd, int peer) -> lev::Task<lev::Result<lev::Buffer>> {
            (void)::write(peer, "yo", 2);
            co_return co_await l.recv(fd, {.timeout = lev::Duration::max()});
          }(loop, a.get(), b.get()));
      REQUIRE(pooled);
      CHECK(pooled->view() == "yo");
    });
  }

  TEST_CASE("net::connect with {.timeout = Duration::max()} connects") {
    lev::test::for_each_engine([](lev::Loop& loop) {
      auto [listener, addr] = lev::test::tcp_listener();
      Watchdog dog(loop, 3000ms);
      auto fd = loop.block_on(
          lev::net::connect(loop, "127.0.0.1", addr.port(), {.timeout = lev::Duration::max()}));
      REQUIRE(fd);
      CHECK(fd->get() >= 0);
    });
  }

  // Callback timers are 40-byte nodes of a per-loop slab (issue 19): these
  // walk their lifecycle.
  TEST_CASE(
      "a callback timer armed from a callback with no delay fires in the next round, not this "
      "one") {
    lev::test::FakeLoop f;
    int fired = 0;
    std::size_t round_of_second = 0, round = 0;
    f.loop.after(0ms, [&](lev::Operation&, lev::Result<lev::Expired> r) {
      CHECK(r);
      ++fired;
      f.loop.after(0ms, [&](lev::Operation&, lev::Result<lev::Expired>) {
        ++fired;
        round_of_second = round;
      });
    });
    while (f.loop.live_op_count() > 0 && round < 10) {
      f.loop.run_once();
      ++round;
    }
    CHECK(fired == 2);
    CHECK(round_of_second == 1);
  }

  TEST_CASE(
      "a timer armed in the past from a callback waits for the next round; those due already "
      "fire in this one, in order") {
    lev::test::FakeLoop f;
    std::vector<std::pair<int, std::size_t>> seen;  // {timer, round}
    std::size_t round = 0;
    const lev::TimePoint base = f.loop.now();
    f.loop.at(base + 5ms, [&](lev::Operation&, lev::Result<lev::Expired>) {
      seen.emplace_back(1, round);
      f.loop.at(base - 1h, [&](lev::Operation&, lev::Result<lev::Expired> r) {
        CHECK(r);
        seen.emplace_back(3, round);
      });
    });
    f.loop.at(base + 8ms, [&](lev::Operation&, lev::Result<lev::Expired>) {
      seen.emplace_back(2, round);
    });
    f.fake->advance(10ms);
    while (f.loop.live_op_count() > 0 && round < 10) {
      f.loop.run_once();
      ++round;
    }
    REQUIRE(seen.size() == 3);
    CHECK(seen[0] == std::pair<int, std::size_t>{1, seen[0].second});
    CHECK(seen[1] == std::pair<int, std::size_t>{2, seen[0].second});  // same round as 1
    CHECK(seen[2] == std::pair<int, std::size_t>{3, seen[0].second + 1});
  }

  // What a timer's callback queues (a cancel's ECANCELED, a post) comes
  // after the round's other due timers, and a trace hook changes nothing.
  TEST_CASE("what a callback timer queues waits for the round's other due timers") {
    for (const bool hook : {false, true}) {
      CAPTURE(hook);
      lev::test::FakeLoop f;
      if (hook) f.loop.set_trace_hook([](const lev::TraceRecord&) {});
      std::vector<std::string> seen;
      std::size_t round = 0;
      const lev::TimePoint base = f.loop.now();
      lev::Operation far = f.loop.at(base + 1h, [&](lev::Operation&, lev::Result<lev::Expired> r) {
        seen.push_back(r ? "far" : "far-cancelled");
      });
      f.loop.at(base + 5ms, [&](lev::Operation&, lev::Result<lev::Expired>) {
        seen.push_back("1@" + std::to_string(round));
        far.cancel();
        f.loop.post([&] { seen.push_back("post@" + std::to_string(round)); });
      });
      f.loop.at(base + 8ms, [&](lev::Operation&, lev::Result<lev::Expired>) {
        seen.push_back("2@" + std::to_string(round));
      });
      f.fake->advance(10ms);
      while (f.loop.live_op_count() > 0 && round < 10) {
        f.loop.run_once();
        ++round;
      }
      CHECK(seen == std::vector<std::string>{"1@0", "2@0", "far-cancelled", "post@1"});
    }
  }

  TEST_CASE(
      "a callback timer's captures go right after its call, a large callable is boxed, both run "
      "once") {
    lev::test::FakeLoop f;
    auto token = std::make_shared<int>(7);
    struct Big {
      std::shared_ptr<int> keep;
      char pad[64] = {};
      int* calls;
      void operator()(lev::Operation&, lev::Result<lev::Expired>) const { ++*calls; }
    };
    int small_calls = 0, big_calls = 0;
    f.loop.after(1ms, [keep = token, &small_calls](lev::Operation&, lev::Result<lev::Expired>) {
      ++small_calls;
    });
    f.loop.after(2ms, Big{token, {}, &big_calls});
    CHECK(token.use_count() == 3);
    f.loop.run();
    CHECK(small_calls == 1);
    CHECK(big_calls == 1);
    CHECK(token.use_count() == 1);
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE("a handle to a callback timer reports its end, also after the loop is gone") {
    lev::Operation fired, cancelled, never;
    {
      lev::test::FakeLoop f;
      fired = f.loop.after(1ms, [](lev::Operation& o, lev::Result<lev::Expired>) {
        CHECK(o.is_done());
        CHECK_FALSE(o.is_cancelled());
      });
      cancelled = f.loop.after(1h, [](lev::Operation& o, lev::Result<lev::Expired> r) {
        CHECK(o.is_cancelled());
        CHECK(o.failed());
        REQUIRE_FALSE(r);
        CHECK(r.error().is_cancelled());
      });
      never =
          f.loop.after(2h, [](lev::Operation&, lev::Result<lev::Expired>) { FAIL("teardown"); });
      CHECK_FALSE(cancelled.is_done());
      cancelled.cancel();
      CHECK(cancelled.is_done());  // recorded at once, delivered from the loop
      f.loop.run_once();
      f.loop.run_once();
      CHECK(fired.is_done());
      CHECK(cancelled.is_cancelled());
      CHECK(cancelled.error().is_cancelled());
      CHECK_FALSE(never.is_done());
    }  // the loop goes with `never` armed: its callback is never called
    CHECK(fired.is_done());
    CHECK_FALSE(fired.failed());
    CHECK(cancelled.is_cancelled());
    never.cancel();  // harmless after the loop
    lev::Operation copy = never;
    CHECK(copy.valid());
  }  // the slab goes with the last handle (ASan: no leak)

  TEST_CASE(
      "a callback timer that throws: the exception leaves run_once, later timers still fire") {
    lev::test::FakeLoop f;
    int later = 0;
    f.loop.after(1ms, [](lev::Operation&, lev::Result<lev::Expired>) {
      throw std::runtime_error("timer callback failed");
    });
    f.loop.after(1ms, [&](lev::Operation&, lev::Result<lev::Expired>) { ++later; });
    f.loop.after(2ms, [&](lev::Operation&, lev::Result<lev::Expired>) { ++later; });
    CHECK_THROWS_AS(f.loop.run(), std::runtime_error);
    f.loop.run();
    CHECK(later == 2);
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE(
      "ten thousand callback timers with random deadlines fire once each, in deadline order") {
    lev::test::FakeLoop f;
    std::vector<lev::TimePoint> seen;
    std::vector<lev::Operation> kept;
    unsigned x = 7;
    int cancelled = 0;
    for (int i = 0; i < 10000; ++i) {
      x = x * 1103515245u + 12345u;
      auto op = f.loop.after(std::chrono::microseconds(x % 100000),
                             [&](lev::Operation& o, lev::Result<lev::Expired> r) {
                               if (r)
                                 seen.push_back(r->deadline);
                               else if (o.is_cancelled())
                                 ++cancelled;
                             });
      if (i % 3 == 0) kept.push_back(op);
    }
    for (std::size_t i = 0; i < kept.size(); i += 2) kept[i].cancel();
    CHECK(f.loop.census().timers + f.loop.census().queued == f.loop.live_op_count());
    f.loop.run();
    CHECK(static_cast<int>(seen.size()) + cancelled == 10000);
    CHECK(cancelled == static_cast<int>((kept.size() + 1) / 2));
    CHECK(std::is_sorted(seen.begin(), seen.end()));
    CHECK(f.loop.live_op_count() == 0);
  }

  // The wheel (issue 19's timer target): deadlines from the past to hours
  // and never, many ties, cancels enough to compact, timers armed from
  // callbacks, and a cursor that jumped to a far timer before nearer ones
  // were armed (they go to the heap until it is pulled back).
  TEST_CASE(
      "callback timers on every scale fire in deadline order, ties in arming order, through the "
      "wheel's moves") {
    lev::test::FakeLoop f;
    struct Fired {
      lev::TimePoint deadline;
      int index;
    };
    std::vector<Fired> seen;
    std::vector<lev::Operation> cancel_later, never;
    int next_index = 0, cancelled = 0, armed = 0;
    bool running = false;
    unsigned x = 99;
    auto rand = [&x] { return x = x * 1103515245u + 12345u, x >> 8; };
    std::function<void(lev::Duration)> arm = [&](lev::Duration d) {
      const int index = next_index++;
      ++armed;
      auto op = f.loop.after(d, [&, index](lev::Operation& o, lev::Result<lev::Expired> r) {
        if (!r) {
          CHECK(o.is_cancelled());
          ++cancelled;
          return;
        }
        seen.push_back({r->deadline, index});
        if (rand() % 4 == 0) arm(std::chrono::microseconds(rand() % 3 == 0 ? 0 : rand() % 5000));
      });
      if (!running && rand() % 3 != 0) cancel_later.push_back(op);
    };
    f.loop.after(1h, [&](lev::Operation&, lev::Result<lev::Expired> r) {
      seen.push_back({r->deadline, -1});
    });
    // A round that asks for the next deadline without waiting (a cancel is
    // queued): the wheel's cursor goes to the hour.
    f.loop.after(1s, [](auto&, auto) {}).cancel();
    f.loop.run_once();
    REQUIRE(seen.empty());
    const lev::Duration scales[] = {1ns, 1us, 37us, 1ms, 30ms, 500ms};  // up to 34 min
    for (int i = 0; i < 6000; ++i) {
      const int pick = static_cast<int>(rand() % 8);
      if (pick == 6) {
        arm(-std::chrono::microseconds(rand() % 1000));  // in the past
      } else if (pick == 7) {
        arm(std::chrono::milliseconds(rand() % 4));  // ties
      } else {
        arm(scales[pick] * (rand() % 4096));
      }
    }
    for (int i = 0; i < 300; ++i)
      never.push_back(f.loop.after(lev::Duration::max(), [](auto&, auto) {}));
    for (auto& op : cancel_later) op.cancel();  // two thirds: the wheel compacts
    f.loop.after(2h, [&](lev::Operation&, lev::Result<lev::Expired>) {
      for (auto& op : never) op.cancel();
    });
    running = true;
    f.loop.run();
    CHECK(static_cast<int>(seen.size()) + cancelled == armed + 1);
    CHECK(cancelled == static_cast<int>(cancel_later.size()));
    CHECK(seen.back().index == -1);  // the hour came last
    seen.pop_back();
    CHECK(std::is_sorted(seen.begin(), seen.end(), [](const Fired& a, const Fired& b) {
      return a.deadline < b.deadline || (a.deadline == b.deadline && a.index < b.index);
    }));
    CHECK(f.loop.live_op_count() == 0);
  }
}
