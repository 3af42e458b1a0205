#pragma once
/// \file
/// The callback timers of `loop.after(d, cb)` / `loop.at(t, cb)`: 40-byte
/// nodes from a per-loop slab and a 4-ary heap of 16-byte {deadline, key}
/// entries (about 57 bytes per armed timer, against 488 for a pooled
/// callback operation). Not for users; lev/loop.hpp uses it.
///
/// The heap holds pairs only: moving an entry touches no node, so a pop
/// costs the heap's cache lines, not a node's per level. A cancel leaves
/// its entry behind, stale (the node's arming order no longer matches, or
/// it is no longer armed): the pop skips it, and the heap is compacted
/// when stale entries are half of it.
///
/// A node is armed (on the heap), then due (its expiry taken by a round)
/// or cancelled (Operation::cancel), then done (its callback called once,
/// never inside `at`). A due or cancelled node is delivered through the
/// loop's completion queue like every other result, by a marker op (an
/// OpBase lent by the slab only while it is queued), so callback timers,
/// awaited timers and deadlines fire in one order: deadline, then arming
/// order. The loop holds one reference until the callback has run; each
/// Operation handle holds one; the slab (which outlives its loop while
/// handles do) frees a node with its last reference.

#include <cstddef>
#include <cstdint>
#include <exception>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "lev/backend.hpp"
#include "lev/clock.hpp"
#include "lev/detail/op.hpp"
#include "lev/error.hpp"
#include "lev/op_types.hpp"

namespace lev {
class Operation;
}

namespace lev::detail {

struct TimerSlab;

struct TimerNode {
  enum : std::uint8_t { kFree, kArmed, kDue, kCancelled, kDone, kZombie };
  enum : std::uint8_t { kResultCancelled = 1, kStaleEntry = 2 };
  static constexpr std::size_t kInline = 24;
  enum class Call : std::uint8_t { run, drop };

  std::uint32_t seq;   // arming order (low 32 bits): its heap entry's, while armed
  std::uint16_t refs;  // the loop's (until the callback ran) + one per handle
  std::uint8_t state;
  std::uint8_t cancelled;  // kResultCancelled: its result; kStaleEntry: its entry still on the heap
  // Runs the callable with the result (run) or destroys it (drop).
  void (*fn)(TimerNode& self, Call what, Operation* handle, const Result<Expired>* r);
  alignas(8) unsigned char storage[kInline];  // the callable, or a pointer to it boxed

  template <class F>
  void emplace(F&& f);
  void drop_callable() noexcept {
    if (fn) fn(*this, Call::drop, nullptr, nullptr);
    fn = nullptr;
  }
};
static_assert(sizeof(TimerNode) == 40, "a callback timer is 40 bytes");

/// The slab, the heap, and what a round has taken off it.
struct TimerSlab {
  struct Entry {
    std::int64_t deadline;  // ns on the loop's clock
    std::uint64_t key;      // arming order << 32 | node index: ties fire in arming order
  };

  TimerSlab() = default;
  TimerSlab(const TimerSlab&) = delete;
  TimerSlab& operator=(const TimerSlab&) = delete;

  /// A fresh node (refs 1: the loop's), its callable not yet made.
  TimerNode& acquire();
  /// Puts `n` on the heap at `deadline`, in arming order `seq`.
  void arm(TimerNode& n, TimePoint deadline, std::uint64_t seq);
  /// Operation::cancel: an armed node is queued cancelled (its heap entry
  /// left stale); a due one not yet delivered becomes cancelled (its
  /// expiry had no effect outside the loop); else nothing. True when it
  /// changed.
  bool cancel(TimerNode& n) noexcept;
  /// The earliest armed entry, if any (stale ones are dropped on the way).
  [[nodiscard]] const Entry* top() noexcept {
    prune_top();
    return heap_.empty() ? nullptr : &heap_.front();
  }
  /// Takes the top entry off the heap (it was live) and queues its node's
  /// expiry on the loop's queue.
  void fire_top();
  /// The earliest deadline of an armed timer (TimePoint::max() when none).
  [[nodiscard]] TimePoint next_deadline() noexcept {
    const Entry* e = top();
    return e ? TimePoint(Duration(e->deadline)) : TimePoint::max();
  }
  /// Teardown (once the loop's queue is empty for good): every node not
  /// yet delivered is dropped without its callback; the slab goes with the
  /// last handle.
  void close_loop() noexcept;
  /// The queue markers are delivered through.
  CompletionQueue* queue = nullptr;

  [[nodiscard]] std::size_t armed() const noexcept { return heap_.size() - stale_; }

  TimerNode& node(std::uint32_t i) noexcept { return blocks_[i / kPerBlock]->nodes[i % kPerBlock]; }
  static std::uint32_t index_of(const TimerNode& n) noexcept;
  static TimerSlab& of(const TimerNode& n) noexcept;
  /// A handle's reference went (and maybe the node's last).
  static void release(TimerNode& n) noexcept;

  static constexpr std::size_t kBlockBytes = 65536;  // aligned: a node finds its block
  struct Block;
  static constexpr std::size_t kHeader = 16;
  static constexpr std::uint32_t kPerBlock =
      static_cast<std::uint32_t>((kBlockBytes - kHeader) / sizeof(TimerNode));
  struct Block {
    TimerSlab* slab;
    std::uint32_t first;  // index of nodes[0]
    std::uint32_t pad_;
    TimerNode nodes[kPerBlock];
  };

  bool loop_alive = true;
  std::size_t held = 0;  // nodes alive after close_loop (handles hold them)

 private:
  ~TimerSlab();
  void free_node(TimerNode& n) noexcept;
  void sift_up(std::size_t i) noexcept;
  void sift_down(std::size_t i) noexcept;
  bool live(const Entry& e) noexcept {
    const TimerNode& n = node(static_cast<std::uint32_t>(e.key));
    return n.state == TimerNode::kArmed && n.seq == static_cast<std::uint32_t>(e.key >> 32);
  }
  void prune_top() noexcept {
    while (!heap_.empty() && !live(heap_.front())) {
      const Entry e = heap_.front();
      pop_top();
      drop_stale(e);
    }
  }
  void drop_stale(const Entry& e) noexcept;
  void pop_top() noexcept;
  void compact() noexcept;

  std::vector<Block*> blocks_;
  std::uint32_t free_ = UINT32_MAX;  // free list through the nodes' storage
  void queue_marker(TimerNode& n, std::int64_t deadline, int res);
  static void deliver_marker(OpBase& m);

  std::vector<Entry> heap_;
  std::size_t stale_ = 0;  // entries of cancelled timers still on the heap
  // Markers: OpBase records lent to due / cancelled nodes while queued.
  std::vector<OpBase*> marker_blocks_;
  OpBase* free_markers_ = nullptr;  // linked through `next`
};

template <class F>
void TimerNode::emplace(F&& f) {
  using Fn = std::decay_t<F>;
  if constexpr (sizeof(Fn) <= kInline && alignof(Fn) <= 8) {
    ::new (static_cast<void*>(storage)) Fn(std::forward<F>(f));
    fn = [](TimerNode& self, Call what, Operation* handle, const Result<Expired>* r) {
      Fn& callable = *std::launder(reinterpret_cast<Fn*>(self.storage));
      if (what == Call::run)
        callable(*handle, *r);
      else
        callable.~Fn();
    };
  } else {
    Fn* boxed = new Fn(std::forward<F>(f));
    ::new (static_cast<void*>(storage)) Fn*(boxed);
    fn = [](TimerNode& self, Call what, Operation* handle, const Result<Expired>* r) {
      Fn* callable = *std::launder(reinterpret_cast<Fn**>(self.storage));
      if (what == Call::run)
        (*callable)(*handle, *r);
      else
        delete callable;
    };
  }
}

}  // namespace lev::detail
