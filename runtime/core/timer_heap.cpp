#include "lev/detail/timer_heap.hpp"

namespace lev::detail {

namespace {
constexpr std::size_t kArity = 4;
inline bool earlier(const OpBase* a, const OpBase* b) noexcept {
  return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}
}  // namespace

void TimerHeap::push(OpBase& op) {
  heap_.push_back(&op);
  op.heap_index = heap_.size() - 1;
  sift_up(op.heap_index);
}

OpBase* TimerHeap::pop() noexcept {
  if (heap_.empty()) return nullptr;
  OpBase* top = heap_.front();
  remove(*top);
  return top;
}

void TimerHeap::remove(OpBase& op) noexcept {
  std::size_t i = op.heap_index;
  if (i >= heap_.size() || heap_[i] != &op) return;  // not in the heap
  OpBase* last = heap_.back();
  heap_.pop_back();
  if (i < heap_.size()) {
    place(i, last);
    sift_up(i);
    sift_down(last->heap_index);
  }
  op.heap_index = static_cast<std::size_t>(-1);
}

void TimerHeap::sift_up(std::size_t i) noexcept {
  OpBase* op = heap_[i];
  while (i > 0) {
    std::size_t parent = (i - 1) / kArity;
    if (!earlier(op, heap_[parent])) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, op);
}

void TimerHeap::sift_down(std::size_t i) noexcept {
  OpBase* op = heap_[i];
  const std::size_t n = heap_.size();
  for (;;) {
    std::size_t first = i * kArity + 1;
    if (first >= n) break;
    std::size_t best = first;
    std::size_t end = first + kArity < n ? first + kArity : n;
    for (std::size_t c = first + 1; c < end; ++c)
      if (earlier(heap_[c], heap_[best])) best = c;
    if (!earlier(heap_[best], op)) break;
    place(i, heap_[best]);
    i = best;
  }
  place(i, op);
}

}  // namespace lev::detail
