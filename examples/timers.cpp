// Timers: awaited sleeps and callback timers, fired in deadline order.
#include <chrono>
#include <cstdio>

#include "lev/lev.hpp"

using namespace std::chrono_literals;

lev::Task<> ticker(lev::Loop& loop, const char* name, lev::Duration every, int times) {
  for (int i = 1; i <= times; ++i) {
    (void)co_await loop.after(every);
    std::printf("%s tick %d\n", name, i);
  }
}

int main() {
  lev::Loop loop{lev::Model::proactor};
  const auto start = loop.now();
  loop.after(25ms,
             [](lev::Operation&, lev::Result<lev::Expired>) { std::puts("callback at 25ms"); });
  auto never = loop.after(1h, [](lev::Operation& op, auto) {
    std::printf("hour timer %s\n", op.is_cancelled() ? "cancelled" : "fired");
  });
  loop.spawn(ticker(loop, "fast", 10ms, 3));
  loop.spawn(ticker(loop, "slow", 20ms, 2));
  loop.after(50ms, [&](lev::Operation&, auto) { never.cancel(); });
  loop.run();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(loop.now() - start).count();
  std::printf("done after %lld ms\n", static_cast<long long>(ms));
}
