// operator new hook for the benchmarks.
#include "alloc_counter.hpp"

#include <cstdlib>
#include <new>

namespace alloc_counter {
std::atomic<std::uint64_t> server_allocs{0};
namespace {
thread_local bool is_server = false;
}
void mark_server() noexcept { is_server = true; }
}  // namespace alloc_counter

namespace {
void* counted(std::size_t n) {
  if (alloc_counter::is_server)
    alloc_counter::server_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t n) { return counted(n); }
void* operator new[](std::size_t n) { return counted(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted(n);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
