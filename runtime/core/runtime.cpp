// Thread-per-core: one Loop per thread, each built, run and destroyed on
// its own thread (a loop belongs to one thread from birth to death).
#include "lev/runtime.hpp"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>

namespace lev {

Runtime::Runtime(RuntimeOptions o) {
  if (o.loop.backend.object())
    throw std::invalid_argument("lev::Runtime: loops need a backend by name, not a shared object");
  if (o.threads > 65536)
    throw std::invalid_argument("lev::Runtime: threads must be at most 65536 (got " +
                                std::to_string(o.threads) + ")");
  const auto n = static_cast<unsigned>(
      o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency()));
  if (o.stop_on_signals) {
    sigset_t set;
    ::sigemptyset(&set);
    ::sigaddset(&set, SIGINT);
    ::sigaddset(&set, SIGTERM);
    ::pthread_sigmask(SIG_BLOCK, &set, &old_mask_);  // inherited by the loop threads
    signals_blocked_ = true;
  }
  slots_.reserve(n);
  for (unsigned i = 0; i < n; ++i) slots_.push_back(std::make_unique<Slot>());
  for (unsigned i = 0; i < n; ++i) slots_[i]->thread = std::thread([this, i, o] { body(i, o); });
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return started_ == n || error_; });
  if (error_) {
    std::exception_ptr e = error_;
    lock.unlock();
    stop();
    for (auto& s : slots_)
      if (s->thread.joinable()) s->thread.join();
    if (signals_blocked_) ::pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
    std::rethrow_exception(e);
  }
}

Runtime::~Runtime() {
  stop();
  try {
    wait();
  } catch (...) {  // reported by wait() to those who call it
  }
  if (signals_blocked_) ::pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
}

Runtime::Slot& Runtime::slot(std::size_t i) const {
  if (i >= slots_.size())
    throw std::out_of_range("lev::Runtime: no loop " + std::to_string(i) + " (there are " +
                            std::to_string(slots_.size()) + ")");
  return *slots_[i];
}

void Runtime::body(std::size_t i, const RuntimeOptions& o) {
  Slot& s = *slots_[i];
  try {
    if (o.pin) {
      cpu_set_t allowed;
      if (::sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) > 0) {
        int k = static_cast<int>(i % static_cast<std::size_t>(CPU_COUNT(&allowed)));
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
          if (!CPU_ISSET(cpu, &allowed) || k-- != 0) continue;
          cpu_set_t one;
          CPU_ZERO(&one);
          CPU_SET(cpu, &one);
          ::pthread_setaffinity_np(::pthread_self(), sizeof one, &one);
          break;
        }
      }
    }
    Loop loop{o.model, o.loop};
    Loop::Hold hold = loop.hold();  // run until stopped, idle or not
    std::optional<Signal> sigint, sigterm;
    if (o.stop_on_signals && i == 0) {
      sigint.emplace(loop.signal(SIGINT, [this](int) { stop(); }));
      sigterm.emplace(loop.signal(SIGTERM, [this](int) { stop(); }));
    }
    {
      std::lock_guard lock(s.mu);
      s.loop = &loop;
      s.alive = true;
    }
    {
      std::lock_guard lock(mu_);
      ++started_;
      if (stopping_) loop.stop();
    }
    cv_.notify_all();
    if (!stopped()) loop.run();
    {
      std::lock_guard lock(s.mu);  // no post reaches the loop past here
      s.alive = false;
    }
    // Posts that were already queued are dropped with the loop.
  } catch (...) {
    {
      std::lock_guard lock(s.mu);
      s.alive = false;
    }
    std::lock_guard lock(mu_);
    if (!error_) error_ = std::current_exception();
    cv_.notify_all();
    stopping_ = true;
    for (auto& other : slots_) {
      std::lock_guard l(other->mu);
      if (other->alive) other->loop->stop();
    }
  }
}

void Runtime::stop() noexcept {
  std::lock_guard lock(mu_);
  stopping_ = true;
  for (auto& s : slots_) {
    std::lock_guard l(s->mu);
    if (s->alive) s->loop->stop();
  }
}

bool Runtime::stopped() const noexcept {
  std::lock_guard lock(mu_);
  return stopping_;
}

void Runtime::wait() {
  for (auto& s : slots_)
    if (s->thread.joinable() && s->thread.get_id() != std::this_thread::get_id()) s->thread.join();
  std::lock_guard lock(mu_);
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

}  // namespace lev
