#pragma once
/// \file
/// The loop's receive-buffer pool, behind `co_await loop.recv(fd)`: a fixed
/// set of equal buffers in one mapping. On io_uring it is the kernel's
/// provided-buffer ring (the kernel picks a buffer only when data arrives);
/// elsewhere the backend takes one from a free list at the same moment.
/// Loop thread only. Not for users; lev::Buffer is the handle they hold.

// clang-format off
#include <linux/time_types.h>  // liburing/io_uring.h needs it first
#include <liburing/io_uring.h>  // the kernel ABI, as liburing ships it
// clang-format on

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace lev::detail {

/// Something waiting for a buffer to come back (a multishot recv that
/// ended with ENOBUFS, a one-shot recv the pool could not serve).
struct BufferWaiter {
  BufferWaiter* next = nullptr;
  void (*retry)(BufferWaiter&) noexcept = nullptr;
  bool queued = false;
};

class BufferPool {
 public:
  /// Throws std::invalid_argument (count 0 or above 32768, size 0: the
  /// message names `what`, the LoopOptions field) or std::system_error (the
  /// mapping failed). `group`: the kernel's buffer group id on io_uring.
  BufferPool(std::uint32_t count, std::uint32_t size, std::uint16_t group = 0,
             const char* what = "recv_buffer");
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  [[nodiscard]] std::uint32_t count() const noexcept { return count_; }
  [[nodiscard]] std::uint32_t size() const noexcept { return size_; }
  /// The buffer group id the kernel knows this pool by (io_uring).
  [[nodiscard]] std::uint16_t group() const noexcept { return group_; }
  [[nodiscard]] char* data(std::uint16_t id) const noexcept {
    return base_ + static_cast<std::size_t>(id) * size_;
  }
  /// Buffers held by the program (claimed, not yet given back).
  [[nodiscard]] std::uint32_t in_use() const noexcept { return in_use_; }
  [[nodiscard]] std::uint32_t peak_in_use() const noexcept { return peak_; }
  [[nodiscard]] bool kernel_ring() const noexcept { return ring_ != nullptr; }

  /// User-space mode (epoll, fake): a free buffer's id, or -1 when none is.
  int take() noexcept { return nfree_ ? free_[--nfree_] : -1; }
  /// Puts back a buffer take() gave that was not used (no data came).
  void untake(std::uint16_t id) noexcept { free_[nfree_++] = id; }
  /// A completion handed buffer `id` to the program.
  void claim() noexcept {
    if (++in_use_ > peak_) peak_ = in_use_;
  }
  /// The program is done with buffer `id`: back to the kernel's ring or to
  /// the free list; a waiter for buffers is retried.
  void give_back(std::uint16_t id) noexcept {
    --in_use_;
    if (ring_) {
      io_uring_buf& b = ring_->bufs[tail_ & mask_];
      b.addr = reinterpret_cast<std::uintptr_t>(data(id));
      b.len = size_;
      b.bid = id;
      std::atomic_ref<__u16>(ring_->tail).store(++tail_, std::memory_order_release);
    } else {
      free_[nfree_++] = id;
    }
    if (attention_) [[unlikely]]
      after_give_back();
  }

  /// Makes `ring` (of `entries`, a power of two >= count, registered with
  /// the kernel by the backend) the source of buffers and fills it.
  void attach_ring(io_uring_buf_ring* ring, unsigned entries) noexcept;
  /// The backend is going away: no more kernel ring.
  void detach_ring() noexcept;
  /// The kernel's ring is going away (the loop moves to a new io_uring
  /// ring) having taken its entries up to `head`: the ones from there to
  /// the tail, buffers nobody took, go back to the free list for the next
  /// attach_ring. No kernel ring after.
  void reclaim_ring(std::uint16_t head) noexcept;
  /// The loop is going away: the pool deletes itself once the last buffer
  /// held by the program comes back (at once when none is out).
  void orphan() noexcept;

  /// Calls `w.retry(w)` once, from a later give_back (not from this call).
  void wait(BufferWaiter& w) noexcept;
  void cancel_wait(BufferWaiter& w) noexcept;
  /// Times a recv found the pool exhausted (ENOBUFS from the kernel, or no
  /// free buffer for a one-shot recv).
  std::uint64_t exhausted = 0;

 private:
  void after_give_back() noexcept;
  void update_attention() noexcept { attention_ = waiters_ != nullptr || orphaned_; }

  char* base_ = nullptr;
  std::size_t bytes_ = 0;
  std::uint32_t count_;
  std::uint32_t size_;
  std::uint16_t group_;
  std::uint32_t in_use_ = 0;
  std::uint32_t peak_ = 0;
  std::vector<std::uint16_t> free_;  // sized count: never grows
  std::uint32_t nfree_ = 0;
  io_uring_buf_ring* ring_ = nullptr;
  unsigned mask_ = 0;
  __u16 tail_ = 0;
  bool attention_ = false;
  bool orphaned_ = false;
  BufferWaiter* waiters_ = nullptr;  // FIFO
  BufferWaiter* waiters_tail_ = nullptr;
};

}  // namespace lev::detail
