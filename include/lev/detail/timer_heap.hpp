#pragma once
/// \file
/// The loop's deadline structure: a 4-ary min-heap of timer ops keyed by
/// deadline, each op knowing its slot so cancel is O(log n). One kernel wait
/// covers the earliest deadline; a million armed timers cost memory only.

#include <cstddef>
#include <vector>

#include "lev/detail/op.hpp"

namespace lev::detail {

class TimerHeap {
 public:
  void push(OpBase& op);
  void remove(OpBase& op) noexcept;
  [[nodiscard]] OpBase* top() const noexcept { return heap_.empty() ? nullptr : heap_.front(); }
  OpBase* pop() noexcept;
  [[nodiscard]] bool empty() const noexcept { return heap_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return heap_.size(); }

 private:
  void sift_up(std::size_t i) noexcept;
  void sift_down(std::size_t i) noexcept;
  void place(std::size_t i, OpBase* op) noexcept {
    heap_[i] = op;
    op->heap_index = i;
  }
  std::vector<OpBase*> heap_;
};

}  // namespace lev::detail
