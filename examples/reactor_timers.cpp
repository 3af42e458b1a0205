// The reactor's timers: after, at, every, and cancelling one from another.
#include <chrono>
#include <cstdio>

#include "common.hpp"
#include "lev/lev.hpp"

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  example::Cli cli{"reactor_timers", "The reactor's timers: after, at, every, and cancelling one from another."};
  cli.parse(argc, argv);
  lev::Loop loop{lev::Model::reactor};
  int ticks = 0;
  lev::Operation ticker = loop.every(10ms, [&](lev::Operation& self, lev::Result<lev::Expired> r) {
    if (!r) return;
    std::printf("every: tick %d\n", ++ticks);
    if (ticks == 3) self.cancel();
  });
  loop.after(15ms, [](lev::Operation&, lev::Result<lev::Expired>) { std::puts("after: 15ms"); });
  lev::Operation doomed = loop.at(loop.now() + 50ms, [](lev::Operation& op, auto) {
    std::printf("at: %s\n", op.is_cancelled() ? "cancelled by the 40ms timer" : "fired");
  });
  loop.after(40ms, [&](lev::Operation&, auto) { doomed.cancel(); });
  loop.run();
  std::printf("%s: done\n", std::string(loop.backend_name()).c_str());
}
