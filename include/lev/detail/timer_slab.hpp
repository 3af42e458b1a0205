#pragma once
/// \file
/// The callback timers of `loop.after(d, cb)` / `loop.at(t, cb)`: 40-byte
/// nodes from a per-loop slab and 16-byte {deadline, key} entries in a
/// hierarchical timing wheel (about 57 bytes per armed timer, against 488
/// for a pooled callback operation). Not for users; lev/loop.hpp uses it.
///
/// The wheel: deadlines in units of 512 ns, ten levels of 64 buckets (6
/// bits of the unit each), an entry in the level of the highest 6-bit
/// digit where its unit differs from the cursor's. Buckets are lists of
/// 1 KiB chunks in arming order (a unit of one deadline needs no sort). When the sorted run (the
/// cursor's unit) is used up, the first non-empty bucket of the lowest level is taken: at level 0
/// it is sorted into the run, above it is spread over the lower levels
/// (each entry moves at most once per level). Entries at or before the
/// cursor (a past deadline, or one nearer than the run already taken) go
/// to a small 4-ary heap; the top is the earlier of the run's front and
/// the heap's, so the order stays exact: deadline, then arming order. A
/// cursor far ahead of the clock (it jumped to a far timer) is pulled back
/// when that heap holds a quarter of the entries: everything is placed
/// again, O(n) after n/4 arms.
///
/// The wheel holds pairs only: moving an entry touches no node, and the
/// run's nodes are prefetched before they fire. A cancel leaves its entry
/// behind, stale (the node's arming order no longer matches, or it is no
/// longer armed): the top skips it, and everything is compacted when stale
/// entries are half of it.
///
/// A node is armed (in the wheel), then due (its expiry taken by a round)
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
  enum : std::uint8_t { kResultCancelled = 1, kStaleEntry = 2, kNoDrop = 4 };
  static constexpr std::size_t kInline = 24;
  enum class Call : std::uint8_t { run, drop };

  std::uint32_t seq;   // arming order (low 32 bits): its entry's, while armed
  std::uint16_t refs;  // the loop's (until the callback ran) + one per handle
  std::uint8_t state;
  // kResultCancelled: its result; kStaleEntry: its entry still kept;
  // kNoDrop: the callable is inline and trivially destructible.
  std::uint8_t cancelled;
  // Runs the callable with the result (run) or destroys it (drop).
  void (*fn)(TimerNode& self, Call what, Operation* handle, const Result<Expired>* r);
  alignas(8) unsigned char storage[kInline];  // the callable, or a pointer to it boxed

  template <class F>
  void emplace(F&& f);
  void drop_callable() noexcept {
    if (fn && !(cancelled & kNoDrop)) fn(*this, Call::drop, nullptr, nullptr);
    fn = nullptr;
  }
};
static_assert(sizeof(TimerNode) == 40, "a callback timer is 40 bytes");

/// The slab, the wheel, and what a round has taken off it.
struct TimerSlab {
  struct Entry {
    std::int64_t deadline;  // ns on the loop's clock
    std::uint64_t key;      // arming order << 32 | node index: ties fire in arming order
  };

  TimerSlab() = default;
  TimerSlab(const TimerSlab&) = delete;
  TimerSlab& operator=(const TimerSlab&) = delete;

  /// A fresh node (refs 1: the loop's), its callable not yet made.
  TimerNode& acquire() {
    TimerNode* n = free_;
    if (n) [[likely]] {
      free_ = next_free(*n);
    } else if (bump_ != bump_end_) {
      n = bump_++;
    } else {
      n = &fresh_block();
    }
    ++in_use_;
    n->refs = 1;
    n->state = TimerNode::kArmed;
    n->cancelled = 0;
    n->fn = nullptr;
    return *n;
  }
  /// Puts `n` in the wheel at `deadline`, in arming order `seq`; `now`:
  /// the loop's clock as its round read it (where an empty wheel starts).
  void arm(TimerNode& n, TimePoint deadline, std::uint64_t seq, TimePoint now);
  /// Operation::cancel: an armed node is queued cancelled (its entry left
  /// stale); a due one not yet delivered becomes cancelled (its expiry had
  /// no effect outside the loop); else nothing. True when it changed.
  bool cancel(TimerNode& n) noexcept;
  /// The earliest armed entry, if any (stale ones are dropped on the way;
  /// the wheel may move buckets down: out of memory there terminates).
  [[nodiscard]] const Entry* top() noexcept {
    for (;;) {
      const bool in_run = run_pos_ < run_.size();
      if (!in_run && early_.empty()) {
        if (wheel_count_ == 0) return nullptr;
        refill();
        continue;
      }
      top_in_run_ = in_run && (early_.empty() || !earlier(early_.front(), run_[run_pos_]));
      const Entry& e = top_in_run_ ? run_[run_pos_] : early_.front();
      if (TimerNode* n = live(e)) [[likely]] {
        top_node_ = n;
        return &e;
      }
      drop_top();
    }
  }
  /// Takes the entry top() returned (it was live; called right after it,
  /// nothing in between) and queues its node's expiry on the loop's queue.
  /// Inline: Loop::fire_timers calls it once per expiry.
  void fire_top() {
    if (!free_markers_) [[unlikely]]
      more_markers();  // first: out of memory leaves the timer armed, not lost
    TimerNode& n = *top_node_;
    const Entry e = take_top();
    n.state = TimerNode::kDue;
    queue_marker(n, e.deadline, 0);
  }
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

  [[nodiscard]] std::size_t armed() const noexcept { return entries() - stale_; }

  // A node's index: its block's number << kSlotBits | its slot there.
  TimerNode& node(std::uint32_t i) noexcept {
    return blocks_[i >> kSlotBits]->nodes[i & ((1u << kSlotBits) - 1)];
  }
  static std::uint32_t index_of(const TimerNode& n) noexcept;
  static TimerSlab& of(const TimerNode& n) noexcept;
  /// A handle's reference went (and maybe the node's last).
  static void release(TimerNode& n) noexcept;

  static constexpr std::size_t kBlockBytes = 65536;  // aligned: a node finds its block
  struct Block;
  static constexpr std::size_t kHeader = 16;
  static constexpr std::uint32_t kPerBlock =
      static_cast<std::uint32_t>((kBlockBytes - kHeader) / sizeof(TimerNode));
  static constexpr unsigned kSlotBits = 11;
  static_assert(kPerBlock <= (1u << kSlotBits));
  struct Block {
    TimerSlab* slab;
    std::uint32_t first;  // index of nodes[0]: the block's number << kSlotBits
    std::uint32_t pad_;
    TimerNode nodes[kPerBlock];
  };

  // The wheel's shape: a unit is 2^kUnitShift ns; levels of 6 bits cover
  // the 55 bits of a unit.
  static constexpr unsigned kUnitShift = 9;
  static constexpr unsigned kDigitBits = 6;
  static constexpr unsigned kLevels = (64 - kUnitShift + kDigitBits - 1) / kDigitBits;
  static constexpr std::size_t kChunkEntries = 63;
  struct Chunk {  // 1 KiB: one piece of a bucket's unsorted list
    Chunk* next;
    std::uint32_t count;
    std::uint32_t pad_;
    Entry entries[kChunkEntries];
  };

  bool loop_alive = true;
  std::size_t held = 0;  // nodes alive after close_loop (handles hold them)

 private:
  ~TimerSlab();
  static bool earlier(const Entry& a, const Entry& b) noexcept {
    return a.deadline < b.deadline || (a.deadline == b.deadline && a.key < b.key);
  }
  // The unit of a deadline, in an unsigned order (the sign bit flipped).
  static std::uint64_t unit_of(std::int64_t deadline) noexcept {
    return (static_cast<std::uint64_t>(deadline) ^ (std::uint64_t{1} << 63)) >> kUnitShift;
  }
  void free_node(TimerNode& n) noexcept {
    n.drop_callable();
    n.state = TimerNode::kFree;
    next_free(n) = free_;
    free_ = &n;
    --in_use_;
  }
  // A free node keeps the next free one in its storage.
  static TimerNode*& next_free(TimerNode& n) noexcept {
    return *std::launder(reinterpret_cast<TimerNode**>(n.storage));
  }
  TimerNode& fresh_block();
  // The node of an entry still armed for it; null for a stale entry.
  TimerNode* live(const Entry& e) noexcept {
    TimerNode& n = node(static_cast<std::uint32_t>(e.key));
    return n.state == TimerNode::kArmed && n.seq == static_cast<std::uint32_t>(e.key >> 32)
               ? &n
               : nullptr;
  }
  std::size_t entries() const noexcept {
    return wheel_count_ + (run_.size() - run_pos_) + early_.size();
  }
  void place(const Entry& e);
  void append(unsigned level, unsigned digit, const Entry& e);
  void refill() noexcept;
  void take_run(Chunk* list);
  void rebuild();
  void drop_top() noexcept;
  void drop_stale(const Entry& e) noexcept;
  void compact() noexcept;
  void pop_early() noexcept;
  void sift_up(std::size_t i) noexcept;
  void sift_down(std::size_t i) noexcept;
  Chunk* new_chunk();
  void free_chunk(Chunk* c) noexcept {
    c->next = free_chunks_;
    free_chunks_ = c;
  }
  void free_list(Chunk* c) noexcept;
  static Chunk* oldest_first(Chunk* list) noexcept;

  std::vector<Block*> blocks_;
  std::vector<void*> groups_;       // the allocations blocks_ were cut from
  unsigned char* spare_ = nullptr;  // blocks allocated, not yet in blocks_
  std::size_t spare_blocks_ = 0;
  TimerNode* free_ = nullptr;  // free list through the nodes' storage
  TimerNode* bump_ = nullptr;  // the newest block's first node never handed out
  TimerNode* bump_end_ = nullptr;
  std::size_t in_use_ = 0;   // nodes not free (armed, due, done but held, zombie)
  // How far ahead of the one firing the run's nodes are prefetched.
  static constexpr std::size_t kAhead = 16;
  // Queues `n`'s result by a free marker (the caller made sure of one).
  void queue_marker(TimerNode& n, std::int64_t deadline, int res) noexcept {
    OpBase& m = *free_markers_;
    free_markers_ = m.next;
    m.kind = OpKind::timer;
    m.state = OpState::submitted;
    m.cancel = Cancel::none;
    m.flow = 0;
    m.ctx = &n;
    m.deliver = &TimerSlab::deliver_marker;
    // The deadline in the record's first cache line (`done`, which a timer
    // never uses), beside everything the queue and the drain touch: a round
    // that fires many timers writes and reads one line per marker, not two.
    m.done = static_cast<std::size_t>(deadline);
    queue->push(m, res);
  }
  void more_markers();
  static void deliver_marker(OpBase& m);
  static void run(TimerNode& n, TimePoint deadline);
  Entry take_top() noexcept {
    Entry e;
    if (top_in_run_) {
      e = run_[run_pos_++];
      if (run_pos_ + kAhead < run_.size())
        __builtin_prefetch(&node(static_cast<std::uint32_t>(run_[run_pos_ + kAhead].key)), 1);
    } else {
      e = early_.front();
      pop_early();
    }
    return e;
  }

  // Entries at or before cursor_ are in run_ (sorted, from run_pos_) or
  // early_ (a heap); the wheel's are after it, each bucket's digit past
  // the cursor's at its level.
  std::uint64_t cursor_ = 0;
  std::vector<Entry> run_;
  std::size_t run_pos_ = 0;
  bool top_in_run_ = false;      // which one top() returned
  TimerNode* top_node_ = nullptr;  // and its node
  std::vector<Entry> early_;
  Chunk* wheel_[kLevels][64] = {};
  std::uint64_t occupied_[kLevels] = {};
  std::size_t wheel_count_ = 0;
  Chunk* free_chunks_ = nullptr;
  std::size_t stale_ = 0;  // entries of cancelled timers still kept
  // Markers: OpBase records lent to due / cancelled nodes while queued.
  std::vector<OpBase*> marker_blocks_;
  OpBase* free_markers_ = nullptr;  // linked through `next`
};
static_assert(sizeof(TimerSlab::Chunk) == 1024);

template <class F>
void TimerNode::emplace(F&& f) {
  using Fn = std::decay_t<F>;
  if constexpr (sizeof(Fn) <= kInline && alignof(Fn) <= 8) {
    ::new (static_cast<void*>(storage)) Fn(std::forward<F>(f));
    if constexpr (std::is_trivially_destructible_v<Fn>) cancelled |= kNoDrop;
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
