// The receive-buffer pool: one anonymous mapping cut into equal buffers,
// served through the kernel's provided-buffer ring or a free list.
#include "lev/detail/buffer_pool.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>

namespace lev::detail {

BufferPool::BufferPool(std::uint32_t count, std::uint32_t size, std::uint16_t group,
                       const char* what)
    : count_(count), size_(size), group_(group) {
  if (count == 0 || count > 32768)
    throw std::invalid_argument(std::string("lev: ") + what + "_count must be between 1 and 32768");
  if (size == 0) throw std::invalid_argument(std::string("lev: ") + what + "_size must be > 0");
  bytes_ = static_cast<std::size_t>(count) * size;
  void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw std::system_error(errno, std::system_category(), "lev: mapping the receive buffers");
  base_ = static_cast<char*>(p);
  free_.resize(count);
  for (std::uint32_t i = 0; i < count; ++i) free_[i] = static_cast<std::uint16_t>(count - 1 - i);
  nfree_ = count;
}

BufferPool::~BufferPool() { ::munmap(base_, bytes_); }

void BufferPool::attach_ring(io_uring_buf_ring* ring, unsigned entries) noexcept {
  ring_ = ring;
  mask_ = entries - 1;
  tail_ = 0;
  // Every buffer not held by the program goes to the kernel.
  while (nfree_) {
    const std::uint16_t id = free_[--nfree_];
    io_uring_buf& b = ring_->bufs[tail_ & mask_];
    b.addr = reinterpret_cast<std::uintptr_t>(data(id));
    b.len = size_;
    b.bid = id;
    ++tail_;
  }
  std::atomic_ref<__u16>(ring_->tail).store(tail_, std::memory_order_release);
}

void BufferPool::detach_ring() noexcept { ring_ = nullptr; }

void BufferPool::reclaim_ring(std::uint16_t head) noexcept {
  if (!ring_) return;
  for (__u16 i = head; i != tail_ && nfree_ < count_; ++i)
    free_[nfree_++] = ring_->bufs[i & mask_].bid;
  ring_ = nullptr;
}

void BufferPool::orphan() noexcept {
  ring_ = nullptr;
  orphaned_ = true;
  waiters_ = waiters_tail_ = nullptr;
  update_attention();
  if (in_use_ == 0) delete this;
}

void BufferPool::wait(BufferWaiter& w) noexcept {
  if (w.queued) return;
  w.queued = true;
  w.next = nullptr;
  if (waiters_tail_)
    waiters_tail_->next = &w;
  else
    waiters_ = &w;
  waiters_tail_ = &w;
  update_attention();
}

void BufferPool::cancel_wait(BufferWaiter& w) noexcept {
  if (!w.queued) return;
  BufferWaiter* prev = nullptr;
  for (BufferWaiter* p = waiters_; p; prev = p, p = p->next) {
    if (p != &w) continue;
    (prev ? prev->next : waiters_) = p->next;
    if (waiters_tail_ == p) waiters_tail_ = prev;
    break;
  }
  w.queued = false;
  update_attention();
}

void BufferPool::after_give_back() noexcept {
  if (orphaned_) {
    if (in_use_ == 0) delete this;
    return;
  }
  // One buffer came back: one waiter may use it.
  BufferWaiter* w = waiters_;
  if (!w) return;
  waiters_ = w->next;
  if (!waiters_) waiters_tail_ = nullptr;
  w->queued = false;
  update_attention();
  w->retry(*w);
}

}  // namespace lev::detail
