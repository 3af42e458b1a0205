// The `sim` suite: the deterministic simulation over many seeds.
//   LEV_SIM_SEEDS=N   how many seeds (default 2000), from LEV_SIM_FIRST (1)
//   LEV_SIM_SEED=S    replays seed S alone, saying what it ran
// A failure prints its seed and step first; the replay is exact.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "sim.hpp"

namespace {
std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}
}  // namespace

TEST_SUITE("sim") {
  TEST_CASE("every seed keeps every invariant at every step") {
    if (const char* one = std::getenv("LEV_SIM_SEED"); one && *one) {
      const std::string failure = lev::sim::run_seed(std::strtoull(one, nullptr, 10), true);
      if (!failure.empty()) FAIL(failure);
      return;
    }
    const std::uint64_t first = env_u64("LEV_SIM_FIRST", 1);
    const std::uint64_t seeds = env_u64("LEV_SIM_SEEDS", 2000);
    const auto start = std::chrono::steady_clock::now();
    std::uint64_t failed = 0;
    const bool trace = std::getenv("LEV_SIM_TRACE") != nullptr;  // names each seed first
    for (std::uint64_t seed = first; seed < first + seeds; ++seed) {
      if (trace) std::fprintf(stderr, "seed %llu\n", static_cast<unsigned long long>(seed));
      const std::string failure = lev::sim::run_seed(seed, trace);
      if (!failure.empty()) {
        ++failed;
        FAIL_CHECK(failure);
        if (failed >= 5) break;  // the first few say enough
      }
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("sim: %llu seeds from %llu in %.2f s (%.0f seeds/s), %llu failed\n",
                static_cast<unsigned long long>(seeds), static_cast<unsigned long long>(first), secs,
                static_cast<double>(seeds) / secs, static_cast<unsigned long long>(failed));
    const lev::sim::Reach& r = lev::sim::reach();
    std::printf("sim: reached: %llu file ops on the workers (%llu cancelled while queued, %llu "
                "cancels that found one running, %llu slow, %llu stuck), %llu teardowns waiting "
                "for a running one; %llu fds closed with an op pending (%llu of those numbers "
                "given out again), %llu numbers reused in the step they were closed; finding F1 (an open's fd left open by a teardown) "
                "%llu times\n",
                static_cast<unsigned long long>(r.file_ops),
                static_cast<unsigned long long>(r.queued_cancelled),
                static_cast<unsigned long long>(r.running_cancel),
                static_cast<unsigned long long>(r.slow), static_cast<unsigned long long>(r.stuck),
                static_cast<unsigned long long>(r.torn_down_running),
                static_cast<unsigned long long>(r.closed_pending),
                static_cast<unsigned long long>(r.reused_after_pending),
                static_cast<unsigned long long>(r.reused),
                static_cast<unsigned long long>(r.f1_leaks));
  }
}
