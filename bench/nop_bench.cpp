// ns per `co_await loop.nop()` against a raw liburing nop loop, in batches
// of 1 and 32 in flight; same process, alternated rounds, medians.
#include <liburing.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "lev/lev.hpp"
#include "raw_nop.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kOps = 200'000;

double raw_nop(int batch) {
  auto t0 = Clock::now();
  raw_nop_loop(batch, kOps);
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / kOps;
}

lev::Task<> nops(lev::Loop& loop, int count) {
  for (int i = 0; i < count; ++i) (void)co_await loop.nop();
}

double lev_nop(int batch) {
  lev::Loop loop{lev::Model::proactor};
  auto t0 = Clock::now();
  for (int i = 0; i < batch; ++i) loop.spawn(nops(loop, kOps / batch));
  loop.run();
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / kOps;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main() {
  std::printf("%-8s %14s %14s %8s\n", "batch", "raw ns/op", "lev ns/op", "ratio");
  for (int batch : {1, 32}) {
    std::vector<double> raw, lv;
    for (int round = 0; round < 5; ++round) {
      raw.push_back(raw_nop(batch));
      lv.push_back(lev_nop(batch));
    }
    double r = median(raw), l = median(lv);
    std::printf("%-8d %14.1f %14.1f %7.2fx\n", batch, r, l, l / r);
  }
}
