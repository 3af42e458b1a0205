#pragma once
// The fds that have a Watcher on a loop (Loop::watch refuses a second);
// here, not in lev/loop.hpp, so that <unordered_set> stays out of it.
#include <unordered_set>

namespace lev::detail {
struct FdSet : std::unordered_set<int> {};
}  // namespace lev::detail
