// In-process workloads for bench/cost.py, run under callgrind with two
// counts (the difference of the totals over the difference of the counts
// is the cost per op; start-up cancels):
//   cost_ops WORKLOAD COUNT
//   nop1, nop32         `co_await loop.nop()` from 1 / 32 spawned tasks
//   raw_nop1, raw_nop32 the hand-written liburing nop loop, batches of 1 / 32
//   coro_nop1, coro_nop32  that loop resuming 1 / 32 bare C++20 coroutines
//                       (the coroutine floor, raw_coro_nop.hpp)
//   timer               `loop.at(deadline, cb)` armed and fired (deadlines
//                       spread over a past millisecond: all due at once,
//                       so no wait's length enters the count)
//   sleep               `co_await loop.sleep_for(0)` in one spawned task
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "lev/lev.hpp"
#include "raw_coro_nop.hpp"
#include "raw_nop.hpp"

namespace {

lev::Task<> nops(lev::Loop& loop, int count) {
  for (int i = 0; i < count; ++i) (void)co_await loop.nop();
}

lev::Task<> sleeps(lev::Loop& loop, int count) {
  for (int i = 0; i < count; ++i) (void)co_await loop.sleep_for(lev::Duration::zero());
}

void lev_nop(int batch, int count) {
  lev::Loop loop{lev::Model::proactor};
  for (int i = 0; i < batch; ++i) loop.spawn(nops(loop, count / batch));
  loop.run();
}

void timers(int count) {
  lev::Loop loop{lev::Model::proactor};
  const lev::TimePoint base = loop.now() - std::chrono::milliseconds(1);
  long fired = 0;
  unsigned x = 12345;
  for (int i = 0; i < count; ++i) {
    x = x * 1103515245u + 12345u;  // spread the deadlines: the heap does real work
    loop.at(base + std::chrono::microseconds(x % 1000),
            [&fired](lev::Operation&, lev::Result<lev::Expired> r) { fired += r ? 1 : 0; });
  }
  loop.run();
  if (fired != count) {
    std::fprintf(stderr, "cost_ops: %ld of %d timers fired\n", fired, count);
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: cost_ops nop1|nop32|raw_nop1|raw_nop32|coro_nop1|coro_nop32|timer|sleep COUNT\n");
    return 2;
  }
  const std::string_view w = argv[1];
  const int count = std::atoi(argv[2]);
  if (count <= 0) {
    std::fprintf(stderr, "cost_ops: COUNT must be positive\n");
    return 2;
  }
  if (w == "nop1") {
    lev_nop(1, count);
  } else if (w == "nop32") {
    lev_nop(32, count);
  } else if (w == "raw_nop1") {
    raw_nop_loop(1, count);
  } else if (w == "raw_nop32") {
    raw_nop_loop(32, count);
  } else if (w == "coro_nop1") {
    coro_nop_loop(1, count);
  } else if (w == "coro_nop32") {
    coro_nop_loop(32, count);
  } else if (w == "timer") {
    timers(count);
  } else if (w == "sleep") {
    lev::Loop loop{lev::Model::proactor};
    loop.spawn(sleeps(loop, count));
    loop.run();
  } else {
    std::fprintf(stderr, "cost_ops: unknown workload %s\n", argv[1]);
    return 2;
  }
}
