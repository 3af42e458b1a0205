#pragma once
/// \file
/// Where task coroutine frames come from: a per-thread cache of freed
/// frames by size class, so that a server starting a task per connection
/// (or per request) reuses frames instead of calling the allocator each
/// time. Frames above kMaxPooledFrame, and every frame in sanitizer builds
/// (so that use-after-free stays visible), go to the global allocator.

#include <cstddef>

namespace lev::detail {

inline constexpr std::size_t kMaxPooledFrame = 4096;

void* frame_alloc(std::size_t n);
void frame_free(void* p, std::size_t n) noexcept;

/// This thread's cache, for tests and benches.
struct FramePoolStats {
  std::size_t cached = 0;  ///< frames kept for reuse now
  std::size_t reused = 0;  ///< allocations served from the cache
  bool enabled = false;    ///< false in sanitizer builds
};
FramePoolStats frame_pool_stats() noexcept;

/// operator new/delete for promise types.
struct PooledFrame {
  static void* operator new(std::size_t n) { return frame_alloc(n); }
  static void operator delete(void* p, std::size_t n) noexcept { frame_free(p, n); }
};

}  // namespace lev::detail
