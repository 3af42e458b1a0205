// A worker thread hands results to the loop through a Waker.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "common.hpp"
#include "lev/lev.hpp"

int main(int argc, char** argv) {
  example::Cli cli{"wakeup", "A worker thread hands results to the loop through a Waker."};
  cli.parse(argc, argv);
  lev::Loop loop{lev::Model::reactor};
  std::mutex mu;
  std::vector<int> inbox;
  int total = 0;
  lev::Waker waker = loop.waker([&] {
    std::vector<int> batch;
    {
      std::lock_guard lock(mu);
      batch.swap(inbox);
    }
    for (int v : batch) total += v;
    if (total == 5050) {
      std::printf("loop received 1..100, sum %d\n", total);
      loop.stop();
    }
  });
  std::thread worker([&, wake = waker.remote()] {
    for (int i = 1; i <= 100; ++i) {
      {
        std::lock_guard lock(mu);
        inbox.push_back(i);
      }
      wake();  // thread-safe; wakes coalesce
    }
  });
  loop.run();
  worker.join();
}
