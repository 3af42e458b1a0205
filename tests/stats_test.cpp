// Loop::stats() and the trace hook (lev/stats.hpp).
#include "lev/stats.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <stop_token>
#include <string>
#include <vector>

#include "lev/loop.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::FakeLoop;
using lev::test::for_each_engine;

namespace {
const lev::OpCount* find_kind(const lev::LoopStats& st, std::string_view kind) {
  for (const lev::OpCount& k : st.ops)
    if (kind == k.kind) return &k;
  return nullptr;
}
}  // namespace

TEST_SUITE("stats") {
  TEST_CASE("counts operations by kind, rounds, timers and live operations on the fake backend") {
    FakeLoop f;
    CHECK(f.loop.stats().submitted == 0);
    CHECK(f.loop.stats().ops.empty());
    auto [a, b] = lev::test::socket_pair();
    char buf[8];
    auto reader = [&]() -> lev::Task<> {
      for (int i = 0; i < 2; ++i) (void)co_await f.loop.recv(a, lev::MutableBuffer{buf, 8});
      (void)co_await f.loop.sleep_for(5ms);
    };
    f.loop.spawn(reader());
    f.loop.run_once();  // the reader's first recv is submitted
    const lev::LoopStats mid = f.loop.stats();
    CHECK(mid.live_ops == 1);
    REQUIRE(find_kind(mid, "recv"));
    CHECK(find_kind(mid, "recv")->submitted == 1);
    CHECK(find_kind(mid, "recv")->completed == 0);
    for (int i = 0; i < 2; ++i) {
      f.fake->complete_with_data(*f.fake->find(lev::detail::OpKind::recv), "hi");
      f.loop.run_once();
    }
    f.loop.run();
    const lev::LoopStats st = f.loop.stats();
    CHECK(st.live_ops == 0);
    CHECK(st.timers_armed == 1);
    REQUIRE(find_kind(st, "recv"));
    CHECK(find_kind(st, "recv")->submitted == 2);
    CHECK(find_kind(st, "recv")->completed == 2);
    REQUIRE(find_kind(st, "timer"));
    CHECK(find_kind(st, "timer")->submitted == 1);
    CHECK(find_kind(st, "timer")->completed == 1);
    CHECK(st.submitted == st.completed);  // nothing live: every op was delivered
    CHECK(st.drains >= 4);  // the spawn, two recvs, the timer: a round each
    CHECK(st.drained >= st.completed);
    CHECK(st.max_per_drain >= 1);
    CHECK(st.mean_per_drain() >= 1.0);
    CHECK(st.kernel_enters == 0);  // the fake never enters a kernel
    const std::string text = st.to_string();
    CHECK(text.find("ops.recv 2 2\n") != std::string::npos);
    CHECK(text.find("timers_armed 1\n") != std::string::npos);
  }

  // What each counts (a user saw `timers_armed 2` beside `ops.timer 3`):
  // ops.timer counts every timer operation started, timers_armed the ones
  // that went on the loop's deadline heap. A sleep started in a task whose
  // stop was already requested ends at once, cancelled, never armed.
  TEST_CASE("a sleep started in a cancelled task counts in ops.timer but is never armed") {
    FakeLoop f;
    std::stop_source stop;
    auto sleeper = [&]() -> lev::Task<> {
      (void)co_await f.loop.sleep_for(5ms);  // armed: stop not yet requested
      stop.request_stop();
      auto r = co_await f.loop.sleep_for(5ms);  // started cancelled
      CHECK(r.error().is_cancelled());
    };
    f.loop.block_on(sleeper().with_stop_token(stop.get_token()));
    const lev::LoopStats st = f.loop.stats();
    REQUIRE(find_kind(st, "timer"));
    CHECK(find_kind(st, "timer")->submitted == 2);
    CHECK(find_kind(st, "timer")->completed == 2);
    CHECK(st.timers_armed == 1);
  }

  TEST_CASE("kernel enters and per-kind counts on the real engines") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      auto t = [&]() -> lev::Task<> {
        for (int i = 0; i < 10; ++i) {
          (co_await loop.send_all(a, std::string_view("ping"))).value();
          char buf[4];
          std::size_t got = 0;
          while (got < 4) got += (co_await loop.recv(b, lev::MutableBuffer{buf + got, 4 - got})).value();
        }
      };
      loop.block_on(t());
      const lev::LoopStats st = loop.stats();
      CHECK(st.kernel_enters > 0);
      REQUIRE(find_kind(st, "send"));
      CHECK(find_kind(st, "send")->submitted == 10);
      CHECK(find_kind(st, "send")->completed == 10);
      REQUIRE(find_kind(st, "recv"));
      CHECK(find_kind(st, "recv")->completed >= 10);
      CHECK(st.cq_dropped == 0);
      CHECK(st.live_ops == loop.live_op_count());
    });
  }

  TEST_CASE("a completion queue too small for a burst shows as an overflow, and nothing is lost" *
            lev::test::needs_uring()) {
    lev::Loop loop{lev::Model::proactor, {.queue_size = 8, .cqe_entries = 8}};
    REQUIRE(loop.backend_name() == "uring");
    int done = 0;
    std::vector<lev::Operation> ops;
    for (int i = 0; i < 200; ++i) ops.push_back(loop.nop([&](lev::Operation&, lev::Result<void> r) {
      CHECK(r);
      ++done;
    }));
    loop.run();
    CHECK(done == 200);
    const lev::LoopStats st = loop.stats();
    CHECK(st.cq_overflows >= 1);
    CHECK(st.cq_dropped == 0);
    CHECK(st.max_per_drain > 8);  // more than the CQ holds, from its backlog
  }

  TEST_CASE("the trace hook sees every op submitted, completed and the task it resumes, in order") {
    FakeLoop f;
    std::vector<lev::TraceRecord> seen;
    f.loop.set_trace_hook([&](const lev::TraceRecord& r) { seen.push_back(r); });
    auto [a, b] = lev::test::socket_pair();
    char buf[8];
    auto t = [&]() -> lev::Task<> {
      (void)co_await f.loop.recv(a, lev::MutableBuffer{buf, 8});
      (void)co_await f.loop.sleep_for(1ms);
    };
    auto drive = [&] {
      f.loop.spawn(t());
      f.loop.run_once();
      f.fake->complete_with_data(*f.fake->find(lev::detail::OpKind::recv), "hi");
      f.loop.run();
    };
    drive();
    std::map<const void*, std::vector<lev::TraceEvent>> by_op;
    std::vector<std::string> kinds;
    int recv_results = 0;
    for (const lev::TraceRecord& r : seen) {
      by_op[r.id].push_back(r.event);
      if (r.event == lev::TraceEvent::op_submitted) kinds.emplace_back(r.op);
      if (r.event == lev::TraceEvent::op_completed && std::string_view(r.op) == "recv") {
        CHECK(r.result == 2);
        CHECK(r.fd == a.get());
        ++recv_results;
      }
    }
    CHECK(recv_results == 1);
    CHECK(std::find(kinds.begin(), kinds.end(), "recv") != kinds.end());
    CHECK(std::find(kinds.begin(), kinds.end(), "timer") != kinds.end());
    // An op's address may be reused by a later op (the same frame slot):
    // per address, events follow submitted -> completed [-> resumed] ->
    // submitted...
    int resumed = 0;
    for (const auto& [id, events] : by_op) {
      REQUIRE(events.size() >= 2);
      for (std::size_t i = 0; i < events.size(); ++i) {
        const lev::TraceEvent prev = i ? events[i - 1] : lev::TraceEvent::task_resumed;
        switch (events[i]) {
          case lev::TraceEvent::op_submitted:
            CHECK(prev != lev::TraceEvent::op_submitted);
            break;
          case lev::TraceEvent::op_completed:
            CHECK(prev == lev::TraceEvent::op_submitted);
            break;
          case lev::TraceEvent::task_resumed:
            CHECK(prev == lev::TraceEvent::op_completed);
            ++resumed;
            break;
        }
      }
      CHECK(events.back() != lev::TraceEvent::op_submitted);  // every op ended
    }
    CHECK(resumed >= 2);  // the recv's and the sleep's awaiter
    CHECK(std::string(lev::to_string(lev::TraceEvent::task_resumed)) == "task_resumed");

    const std::size_t before = seen.size();
    f.loop.set_trace_hook({});  // off
    drive();
    CHECK(seen.size() == before);
  }
}
