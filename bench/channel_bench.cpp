// Channel benchmark: ns per item through lev::Channel on one loop and
// between two loops of a Runtime (woken by MSG_RING, and by eventfd), Loop::post from another
// thread, and a baseline in the same process: a std::mutex + std::condition_variable bounded queue
// between two plain threads.
//
//   channel_bench [--items 1000000] [--capacity 64] [--rounds 3]
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lev/lev.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double ns_per(Clock::duration d, long items) {
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()) /
         static_cast<double>(items);
}

double single_loop(long items, std::size_t capacity) {
  lev::Loop loop{lev::Model::proactor};
  lev::Channel<long> ch{capacity};
  long sum = 0;
  auto producer = [&]() -> lev::Task<> {
    for (long i = 0; i < items; ++i) (void)co_await ch.send(i);
  };
  auto consumer = [&]() -> lev::Task<> {
    for (long i = 0; i < items; ++i) sum += *co_await ch.receive();
  };
  const auto t0 = Clock::now();
  loop.spawn(producer());
  loop.block_on(consumer());
  const auto t1 = Clock::now();
  if (sum != items * (items - 1) / 2) std::fprintf(stderr, "channel_bench: wrong sum\n");
  return ns_per(t1 - t0, items);
}

// by_eventfd: wake the other loop through its eventfd even where MSG_RING works.
double cross_loop(long items, std::size_t capacity, bool by_eventfd) {
  if (by_eventfd) ::setenv("LEV_URING_NO_MSG_RING", "1", 1);
  lev::Runtime rt{{.threads = 2, .stop_on_signals = false}};
  ::unsetenv("LEV_URING_NO_MSG_RING");
  lev::Channel<long> ch{capacity};
  long sum = 0;
  Clock::time_point t0, t1;
  rt.post_to(0, [&] { t0 = Clock::now(); });  // before either starts
  rt.spawn_on(0, [&](lev::Loop&) -> lev::Task<> {
    for (long i = 0; i < items; ++i) (void)co_await ch.send(i);
  });
  rt.spawn_on(1, [&](lev::Loop&) -> lev::Task<> {
    for (long i = 0; i < items; ++i) sum += *co_await ch.receive();
    t1 = Clock::now();
    rt.stop();
  });
  rt.wait();
  if (sum != items * (items - 1) / 2) std::fprintf(stderr, "channel_bench: wrong sum\n");
  return ns_per(t1 - t0, items);
}

double posts(long items) {
  lev::Loop loop{lev::Model::proactor};
  long seen = 0;
  auto hold = loop.hold();
  const auto t0 = Clock::now();
  std::thread poster([&] {
    for (long i = 0; i < items; ++i)
      loop.post([&] {
        if (++seen == items) loop.stop();
      });
  });
  loop.run();
  const auto t1 = Clock::now();
  poster.join();
  return ns_per(t1 - t0, items);
}

double mutex_queue(long items, std::size_t capacity) {
  std::mutex mu;
  std::condition_variable not_full, not_empty;
  std::deque<long> q;
  long sum = 0;
  const auto t0 = Clock::now();
  std::thread producer([&] {
    for (long i = 0; i < items; ++i) {
      std::unique_lock lock(mu);
      not_full.wait(lock, [&] { return q.size() < capacity; });
      q.push_back(i);
      not_empty.notify_one();
    }
  });
  for (long i = 0; i < items; ++i) {
    std::unique_lock lock(mu);
    not_empty.wait(lock, [&] { return !q.empty(); });
    sum += q.front();
    q.pop_front();
    not_full.notify_one();
  }
  producer.join();
  const auto t1 = Clock::now();
  if (sum != items * (items - 1) / 2) std::fprintf(stderr, "channel_bench: wrong sum\n");
  return ns_per(t1 - t0, items);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  long items = 1000000;
  std::size_t capacity = 64;
  int rounds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--items")
      items = std::atol(argv[i + 1]);
    else if (k == "--capacity")
      capacity = static_cast<std::size_t>(std::atol(argv[i + 1]));
    else if (k == "--rounds")
      rounds = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "channel_bench: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (items < 1 || capacity < 1 || rounds < 1) {
    std::fprintf(stderr, "channel_bench: --items, --capacity and --rounds must be positive\n");
    return 2;
  }
  struct Row {
    const char* name;
    std::function<double()> run;
    std::vector<double> ns;
  };
  std::vector<Row> rows = {
      {"mutex+condvar queue, 2 threads", [&] { return mutex_queue(items, capacity); }, {}},
      {"lev Channel, one loop", [&] { return single_loop(items, capacity); }, {}},
      {"lev Channel, 2 loops, MSG_RING", [&] { return cross_loop(items, capacity, false); }, {}},
      {"lev Channel, 2 loops, eventfd", [&] { return cross_loop(items, capacity, true); }, {}},
      {"Loop::post from another thread", [&] { return posts(items); }, {}},
  };
  for (int r = 0; r < rounds; ++r)
    for (std::size_t i = 0; i < rows.size(); ++i) {
      Row& row = rows[(i + static_cast<std::size_t>(r)) % rows.size()];  // alternate the order
      row.ns.push_back(row.run());
    }
  std::printf("channel: %ld items, capacity %zu, %d rounds, medians (ns per item)\n", items,
              capacity, rounds);
  std::printf("%-32s %10s %18s\n", "path", "ns/item", "vs mutex+condvar");
  const double base = median(rows[0].ns);
  for (auto& row : rows)
    std::printf("%-32s %10.1f %17.2fx\n", row.name, median(row.ns), median(row.ns) / base);
}
