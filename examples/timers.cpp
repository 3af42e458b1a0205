// Timers: awaited sleeps and callback timers, fired in deadline order.
//   timers [--backend uring|epoll|auto]
#include <chrono>
#include <cstdio>

#include "common.hpp"
#include "lev/lev.hpp"

using namespace std::chrono_literals;

// Ticks at start + every, start + 2 x every...: absolute deadlines, so a
// late wake-up does not push the later ticks back (sleeping `every` each
// time would drift).
lev::Task<> ticker(lev::Loop& loop, const char* name, lev::Duration every, int times) {
  const lev::TimePoint start = loop.now();
  for (int i = 1; i <= times; ++i) {
    (void)co_await loop.at(start + i * every);
    std::printf("%s tick %d\n", name, i);
  }
}

int main(int argc, char** argv) {
  example::LoopArgs loop_args;
  example::Cli cli{"timers", "Awaited sleeps and callback timers, fired in deadline order."};
  loop_args.add_to(cli, false);
  cli.parse(argc, argv);
  lev::Loop loop{lev::Model::proactor, loop_args.options()};
  const auto start = loop.now();
  loop.after(25ms,
             [](lev::Operation&, lev::Result<lev::Expired>) { std::puts("callback at 25ms"); });
  auto never = loop.after(1h, [](lev::Operation& op, auto) {
    std::printf("hour timer %s\n", op.is_cancelled() ? "cancelled" : "fired");
  });
  loop.spawn(ticker(loop, "fast", 10ms, 3));
  loop.spawn(ticker(loop, "slow", 16ms, 2));
  loop.after(50ms, [&](lev::Operation&, auto) { never.cancel(); });
  loop.run();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(loop.now() - start).count();
  std::printf("done after %lld ms\n", static_cast<long long>(ms));
}
