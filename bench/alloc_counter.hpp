#pragma once
// Counts heap allocations per thread class: a thread calls
// alloc_counter::mark_server() and its allocations are counted apart.
#include <atomic>
#include <cstdint>

namespace alloc_counter {
extern std::atomic<std::uint64_t> server_allocs;
void mark_server() noexcept;
inline std::uint64_t server() noexcept { return server_allocs.load(std::memory_order_relaxed); }
}  // namespace alloc_counter
