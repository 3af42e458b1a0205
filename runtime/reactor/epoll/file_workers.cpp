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

namespace detail {
std::atomic<void (*)(const OpBase&)> before_file_work{nullptr};
}  // namespace detail

FileWorkers::FileWorkers(unsigned size) : size_(std::max(1u, size)) { running_.reserve(size_); }

FileWorkers::~FileWorkers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  for (std::thread& t : threads_) t.join();
  if (done_fd_ >= 0) ::close(done_fd_);
}

int FileWorkers::open_done_fd() {
  if (done_fd_ < 0) {
    const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
      throw std::system_error(errno, std::system_category(), "lev: eventfd (file workers)");
    std::lock_guard<std::mutex> lock(mutex_);  // read by closing() on other threads
    done_fd_ = fd;
  }
  return done_fd_;
}

void FileWorkers::push(detail::OpBase& op) {
  std::unique_lock<std::mutex> lock(mutex_);
  // Room in done_ for every op held, so that closing() and the workers
  // never allocate.
  const std::size_t need = queue_.size() + running_.size() + done_.size() + 1;
  if (done_.capacity() < need) done_.reserve(std::max(need, 2 * done_.capacity()));
  queue_.push_back(&op);
  held_.fetch_add(1, std::memory_order_relaxed);
  if (queue_.size() > idle_ && threads_.size() < size_) {  // nobody free to take it
    try {
      threads_.emplace_back([this] { run(); });
    } catch (...) {
      if (threads_.empty()) {  // nobody will ever take it
        queue_.pop_back();
        held_.fetch_sub(1, std::memory_order_relaxed);
        throw;
      }
      // The workers already started will take it.
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
  held_.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

void FileWorkers::closing(int fd) noexcept {
  if (fd < 0 || held_.load(std::memory_order_acquire) == 0) return;
  std::unique_lock<std::mutex> lock(mutex_);
  bool cancelled = false;
  for (auto it = queue_.begin(); it != queue_.end();) {
    if ((*it)->fd != fd) {
      ++it;
      continue;
    }
    (*it)->res = -ECANCELED;
    done_.push_back(*it);  // reserved in push()
    it = queue_.erase(it);
    held_.fetch_sub(1, std::memory_order_relaxed);
    cancelled = true;
  }
  if (cancelled) {
    pending_.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    (void)!::write(done_fd_, &one, sizeof(one));
  }
  const auto on_fd = [fd](const detail::OpBase* op) { return op->fd == fd; };
  ++close_waiters_;
  finished_.wait(lock, [&] { return std::none_of(running_.begin(), running_.end(), on_fd); });
  --close_waiters_;
}

void FileWorkers::take_done(std::vector<detail::OpBase*>& out) {
  out.clear();
  if (!pending_.exchange(false, std::memory_order_acquire)) return;
  std::uint64_t n;
  (void)!::read(done_fd_, &n, sizeof(n));
  std::lock_guard<std::mutex> lock(mutex_);
  out.swap(done_);  // done_ takes out's storage, grown to what is held
  done_.reserve(queue_.size() + running_.size());
}

std::vector<detail::OpBase*> FileWorkers::take_queued() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<detail::OpBase*> out(queue_.begin(), queue_.end());
  held_.fetch_sub(queue_.size(), std::memory_order_relaxed);
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
    running_.push_back(op);  // reserved: size_ workers at most
    lock.unlock();
    if (auto hook = detail::before_file_work.load(std::memory_order_relaxed)) [[unlikely]]
      hook(*op);
    const detail::KindEntry& e = detail::kind_entry(op->kind);
    long r;
    do {
      r = e.attempt(*op);
    } while (r < 0 && errno == EINTR);
    op->res = r >= 0 ? static_cast<int>(std::min<long>(r, INT_MAX)) : -errno;
    lock.lock();
    running_.erase(std::find(running_.begin(), running_.end(), op));
    done_.push_back(op);  // reserved in push()
    held_.fetch_sub(1, std::memory_order_relaxed);
    if (close_waiters_) finished_.notify_all();
    pending_.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    (void)!::write(done_fd_, &one, sizeof(one));
  }
}

}  // namespace lev
