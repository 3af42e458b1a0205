// The per-thread cache of task frames (see lev/detail/frame_pool.hpp).
#include "lev/detail/frame_pool.hpp"

#include <new>

namespace lev::detail {

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kPool = false;
#else
constexpr bool kPool = true;
#endif

constexpr std::size_t kGrain = 64;
constexpr std::size_t kClasses = kMaxPooledFrame / kGrain;
constexpr std::size_t kPerClass = 256;  // bounds what a thread keeps: a burst's frames

struct FreeFrame {
  FreeFrame* next;
};

struct Cache {
  FreeFrame* head[kClasses] = {};
  std::size_t count[kClasses] = {};
  std::size_t cached = 0;
  std::size_t reused = 0;
  ~Cache();
};

// Set while this thread's cache may be used (false once it is destroyed at
// thread exit: frames freed later go to the allocator).
thread_local bool t_cache_alive = false;
thread_local Cache t_cache;

Cache::~Cache() {
  t_cache_alive = false;
  for (std::size_t c = 0; c < kClasses; ++c)
    while (FreeFrame* f = head[c]) {
      head[c] = f->next;
      ::operator delete(f);
    }
}

Cache* cache() noexcept {
  if (!t_cache_alive) [[unlikely]] {
    static thread_local bool made = false;
    if (made) return nullptr;  // destroyed already: thread exit
    made = true;
    t_cache_alive = true;
    (void)t_cache.cached;  // constructs it
  }
  return &t_cache;
}

std::size_t class_of(std::size_t n) noexcept { return (n + kGrain - 1) / kGrain - 1; }

}  // namespace

void* frame_alloc(std::size_t n) {
  if (!kPool || n > kMaxPooledFrame || n == 0) return ::operator new(n);
  const std::size_t c = class_of(n);
  if (Cache* k = cache()) {
    if (FreeFrame* f = k->head[c]) {
      k->head[c] = f->next;
      --k->count[c];
      --k->cached;
      ++k->reused;
      return f;
    }
  }
  return ::operator new((c + 1) * kGrain);  // the class size: any frame of the class fits
}

void frame_free(void* p, std::size_t n) noexcept {
  if (!p) return;
  if (!kPool || n > kMaxPooledFrame || n == 0) {
    ::operator delete(p);
    return;
  }
  const std::size_t c = class_of(n);
  Cache* k = cache();
  if (!k || k->count[c] >= kPerClass) {
    ::operator delete(p);
    return;
  }
  auto* f = static_cast<FreeFrame*>(p);
  f->next = k->head[c];
  k->head[c] = f;
  ++k->count[c];
  ++k->cached;
}

FramePoolStats frame_pool_stats() noexcept {
  FramePoolStats s;
  s.enabled = kPool;
  if (Cache* k = cache()) {
    s.cached = k->cached;
    s.reused = k->reused;
  }
  return s;
}

}  // namespace lev::detail
