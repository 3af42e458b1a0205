#include "reactor/epoll/file_workers.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <system_error>

#include "lev/detail/ops/all.hpp"

namespace lev {

FileWorkers::FileWorkers(unsigned size) : size_(std::max(1u, size)) {}

FileWorkers::~FileWorkers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  for (std::thread& t : threads_) t.join();
  if (done_fd_ >= 0) ::close(done_fd_);
}

void FileWorkers::push(detail::OpBase& op) {
  if (done_fd_ < 0) {
    done_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (done_fd_ < 0)
      throw std::system_error(errno, std::system_category(), "lev: eventfd (file workers)");
  }
  std::unique_lock<std::mutex> lock(mutex_);
  queue_.push_back(&op);
  if (queue_.size() > idle_ && threads_.size() < size_) {  // nobody free to take it
    try {
      threads_.emplace_back([this] { run(); });
    } catch (...) {
      queue_.pop_back();
      throw;
    }
    return;
  }
  lock.unlock();
  work_.notify_one();
}

bool FileWorkers::cancel(detail::OpBase& op) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = std::find(queue_.begin(), queue_.end(), &op);
  if (it == queue_.end()) return false;
  queue_.erase(it);
  return true;
}

std::vector<detail::OpBase*> FileWorkers::take_done() {
  if (!pending_.exchange(false, std::memory_order_acquire)) return {};
  std::uint64_t n;
  (void)::read(done_fd_, &n, sizeof(n));
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<detail::OpBase*> out;
  out.swap(done_);
  return out;
}

std::vector<detail::OpBase*> FileWorkers::take_queued() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<detail::OpBase*> out(queue_.begin(), queue_.end());
  queue_.clear();
  return out;
}

void FileWorkers::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    ++idle_;
    work_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    --idle_;
    if (queue_.empty()) return;  // stopping, nothing left
    detail::OpBase* op = queue_.front();
    queue_.pop_front();
    lock.unlock();
    const detail::KindEntry& e = detail::kind_entry(op->kind);
    long r;
    do {
      r = e.attempt(*op);
    } while (r < 0 && errno == EINTR);
    op->res = r >= 0 ? static_cast<int>(std::min<long>(r, INT_MAX)) : -errno;
    lock.lock();
    done_.push_back(op);
    pending_.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    (void)::write(done_fd_, &one, sizeof(one));
  }
}

}  // namespace lev
