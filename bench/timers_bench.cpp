// Timers: arm 1,000,000 callback timers with random deadlines and fire
// them all; then arm 1,000,000 far-off timers and cancel each. Reports CPU
// ns per timer (process CPU clock: the wait for deadlines is not counted),
// the heap bytes in use per armed timer (malloc's own count) and the
// resident memory it added, per loop engine. Each engine runs in a process
// of its own (forked before anything is allocated), so that one engine's
// freed heap does not flatter the next.
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <vector>

#include "lev/lev.hpp"

namespace {

double cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

// Resident set size now, in KiB (/proc/self/statm).
long rss_kib() {
  long pages = 0, resident = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

// Bytes malloc has handed out and not taken back (its arena and the
// chunks it maps on its own, such as a large vector's).
std::size_t heap_in_use() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

void run(const char* name, lev::Model model, int count) {
  lev::Loop loop{model};
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> us(0, 200'000);
  long rss0 = rss_kib();
  const std::size_t heap0 = heap_in_use();
  int fired = 0;
  double t0 = cpu_ns();
  for (int i = 0; i < count; ++i)
    loop.after(std::chrono::microseconds(us(rng)),
               [&fired](lev::Operation&, lev::Result<lev::Expired> r) { fired += r ? 1 : 0; });
  double t1 = cpu_ns();
  long rss1 = rss_kib();  // everything armed: the high point
  const double heap_per_timer = static_cast<double>(heap_in_use() - heap0) / count;
  loop.run();
  double t2 = cpu_ns();

  std::vector<lev::Operation> ops;
  ops.reserve(static_cast<std::size_t>(count));
  int cancelled = 0;
  for (int i = 0; i < count; ++i)
    ops.push_back(
        loop.after(std::chrono::hours(1) + std::chrono::microseconds(us(rng)),
                   [&cancelled](lev::Operation& op, auto) { cancelled += op.is_cancelled(); }));
  double t3 = cpu_ns();
  for (auto& op : ops) op.cancel();
  double t4 = cpu_ns();
  loop.run();
  double t5 = cpu_ns();
  std::printf("%-9s %9d %11.0f %11.0f %13.0f %14.0f %12.0f %12.1f %10.1f\n", name, count,
              (t1 - t0) / count, (t2 - t1) / count, (t2 - t0) / count, (t4 - t3) / count,
              (t5 - t4) / count, heap_per_timer, (rss1 - rss0) * 1024.0 / count);
  std::fflush(stdout);
  if (fired != count || cancelled != count) std::fprintf(stderr, "timers_bench: lost timers!\n");
}

}  // namespace

int main(int argc, char** argv) {
  int count = argc > 1 ? std::atoi(argv[1]) : 1'000'000;
  std::printf("timers: %d callback timers, deadlines uniform in [0, 200 ms); CPU ns per timer\n",
              count);
  std::printf("%-9s %9s %11s %11s %13s %14s %12s %12s %10s\n", "engine", "timers", "arm ns",
              "fire ns", "arm+fire ns", "cancel ns", "deliver ns", "heap B/timer", "RSS B/timer");
  std::fflush(stdout);
  int failed = 0;
  for (lev::Model model : {lev::Model::proactor, lev::Model::reactor}) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      run(model == lev::Model::proactor ? "proactor" : "reactor", model, count);
      std::_Exit(0);
    }
    int status = 0;
    if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
      ++failed;
  }
  return failed ? 1 : 0;
}
