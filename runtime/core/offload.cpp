// The offload pool: a few threads for blocking calls (name resolution,
// file system work). Started on demand; detached and living for the
// process, so a job never outlives the pool it runs on.
#include "lev/detail/offload.hpp"

#include <pthread.h>
#include <signal.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace lev::detail {

namespace {

class WorkerPool {
 public:
  static WorkerPool& instance() {
    static WorkerPool* pool = new WorkerPool;  // never destroyed: detached workers use it
    return *pool;
  }
  void post(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(job));
      if (idle_ == 0 && threads_ < kThreads) {
        ++threads_;
        std::thread([this] { work(); }).detach();
      }
    }
    cv_.notify_one();
  }

 private:
  static constexpr int kThreads = 4;
  void work() {
    sigset_t all;  // signals are for the loops' signalfds, never for a worker
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
    std::unique_lock lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return !jobs_.empty(); });
      --idle_;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  int threads_ = 0;
  int idle_ = 0;
};

}  // namespace

void offload_run(std::function<void()> job) { WorkerPool::instance().post(std::move(job)); }

}  // namespace lev::detail
