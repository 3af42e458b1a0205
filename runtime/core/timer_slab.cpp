// Callback timers (lev/detail/timer_slab.hpp): 40-byte nodes in 64 KiB
// blocks, {deadline, arming order | index} entries in a hierarchical timing
// wheel, a sorted run and a 4-ary heap for what is at or before its cursor.
#include "lev/detail/timer_slab.hpp"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <span>
#include <system_error>

#include "lev/operation.hpp"

namespace lev::detail {

namespace {
constexpr std::size_t kArity = 4;
// The heap of entries at or before the cursor is a sign the cursor jumped
// far ahead of the clock once it holds this many, and a quarter of all.
constexpr std::size_t kEarlyRebuild = 256;
}  // namespace

static_assert(sizeof(TimerSlab::Block) <= TimerSlab::kBlockBytes);
static_assert(offsetof(TimerSlab::Block, nodes) == TimerSlab::kHeader);

TimerSlab::~TimerSlab() {
  for (void* g : groups_) std::free(g);
  for (OpBase* m : marker_blocks_) delete[] m;
  while (Chunk* c = free_chunks_) {
    free_chunks_ = c->next;
    delete c;
  }
}

std::uint32_t TimerSlab::index_of(const TimerNode& n) noexcept {
  auto* b = reinterpret_cast<const Block*>(reinterpret_cast<std::uintptr_t>(&n) &
                                           ~std::uintptr_t{kBlockBytes - 1});
  return b->first + static_cast<std::uint32_t>(&n - b->nodes);
}

TimerSlab& TimerSlab::of(const TimerNode& n) noexcept {
  auto* b = reinterpret_cast<const Block*>(reinterpret_cast<std::uintptr_t>(&n) &
                                           ~std::uintptr_t{kBlockBytes - 1});
  return *b->slab;
}

TimerNode& TimerSlab::fresh_block() {
  // 2^21 blocks of 1,638 nodes: what 32-bit indices reach.
  if (blocks_.size() >= (std::size_t{1} << (32 - kSlotBits))) throw std::bad_alloc();
  if (spare_blocks_ == 0) {
    // Blocks come in groups (1, 2, 4 ... 32 of them): one aligned_alloc
    // per block would be mmapped with its alignment's padding, twice
    // the block.
    const std::size_t count = std::clamp<std::size_t>(blocks_.size(), 1, 32);
    void* mem = std::aligned_alloc(kBlockBytes, count * kBlockBytes);
    if (!mem) throw std::bad_alloc();
    try {
      groups_.push_back(mem);
    } catch (...) {
      std::free(mem);
      throw;
    }
    spare_ = static_cast<unsigned char*>(mem);
    spare_blocks_ = count;
  }
  blocks_.reserve(blocks_.size() + 1);  // before anything changes: may throw
  auto* b = reinterpret_cast<Block*>(spare_);
  b->slab = this;
  b->first = static_cast<std::uint32_t>(blocks_.size()) << kSlotBits;
  blocks_.push_back(b);
  spare_ += kBlockBytes;
  --spare_blocks_;
  // Its nodes are handed out in order from here.
  bump_ = b->nodes + 1;
  bump_end_ = b->nodes + kPerBlock;
  return b->nodes[0];
}

void TimerSlab::arm(TimerNode& n, TimePoint deadline, std::uint64_t seq, TimePoint now) {
  n.seq = static_cast<std::uint32_t>(seq);  // wraps after 2^32 arms: it orders ties only
  // Nothing kept: any cursor is right, and one at the clock puts a timer
  // `delay` ahead on the level of its delay (from cursor 0 every timer
  // began on the top level and was spread down through every level).
  if (entries() == 0) [[unlikely]]
    cursor_ = unit_of(now.time_since_epoch().count());
  place({deadline.time_since_epoch().count(), (std::uint64_t{n.seq} << 32) | index_of(n)});
  if (early_.size() >= kEarlyRebuild && early_.size() * 4 > entries()) [[unlikely]]
    rebuild();
}

// At or before the cursor: the heap; else the bucket of the highest 6-bit
// digit where the unit differs from the cursor's (that digit is past the
// cursor's, the ones above it equal).
void TimerSlab::place(const Entry& e) {
  const std::uint64_t u = unit_of(e.deadline);
  if (u <= cursor_) {
    early_.push_back(e);
    sift_up(early_.size() - 1);
    return;
  }
  const unsigned level = static_cast<unsigned>(std::bit_width(u ^ cursor_) - 1) / kDigitBits;
  append(level, static_cast<unsigned>(u >> (level * kDigitBits)) & 63u, e);
}

void TimerSlab::append(unsigned level, unsigned digit, const Entry& e) {
  Chunk*& head = wheel_[level][digit];
  if (!head || head->count == kChunkEntries) {
    Chunk* c = new_chunk();
    c->next = head;
    c->count = 0;
    head = c;
    occupied_[level] |= std::uint64_t{1} << digit;
  }
  head->entries[head->count++] = e;
  ++wheel_count_;
}

// A bucket's list, newest chunk first, turned around.
TimerSlab::Chunk* TimerSlab::oldest_first(Chunk* list) noexcept {
  Chunk* out = nullptr;
  while (list) {
    Chunk* next = list->next;
    list->next = out;
    out = list;
    list = next;
  }
  return out;
}

TimerSlab::Chunk* TimerSlab::new_chunk() {
  if (Chunk* c = free_chunks_) {
    free_chunks_ = c->next;
    return c;
  }
  return new Chunk;
}

void TimerSlab::free_list(Chunk* c) noexcept {
  while (c) {
    Chunk* next = c->next;
    free_chunk(c);
    c = next;
  }
}

// The run and the heap are used up: the first bucket of the lowest
// occupied level becomes the run (level 0) or is spread over the levels
// below it (the cursor moved to its first unit), until a run or an entry
// at the cursor is found.
void TimerSlab::refill() noexcept {
  try {
    for (;;) {
      unsigned level = 0;
      while (occupied_[level] == 0) ++level;  // wheel_count_ > 0: one is
      const auto digit = static_cast<unsigned>(std::countr_zero(occupied_[level]));
      Chunk* list = wheel_[level][digit];
      wheel_[level][digit] = nullptr;
      occupied_[level] &= ~(std::uint64_t{1} << digit);
      const unsigned shift = level * kDigitBits;
      cursor_ = (cursor_ >> (shift + kDigitBits) << (shift + kDigitBits)) |
                (std::uint64_t{digit} << shift);
      list = oldest_first(list);
      if (level == 0) {
        take_run(list);
        return;
      }
      while (list) {  // in arming order: a bucket's entries stay in it
        wheel_count_ -= list->count;
        for (std::uint32_t i = 0; i < list->count; ++i) place(list->entries[i]);
        Chunk* next = list->next;
        free_chunk(list);
        list = next;
      }
      if (!early_.empty()) return;
    }
  } catch (...) {
    std::terminate();  // a chunk or the run's vector: a loop out of memory cannot keep order
  }
}

// A level-0 bucket (one unit) becomes the run: sorted, its first nodes
// fetched while the round goes on.
void TimerSlab::take_run(Chunk* list) {
  run_.clear();
  run_pos_ = 0;
  while (list) {
    wheel_count_ -= list->count;
    run_.insert(run_.end(), list->entries, list->entries + list->count);
    Chunk* next = list->next;
    free_chunk(list);
    list = next;
  }
  // In arming order: a unit of one deadline (a common case: delays in
  // whole microseconds from one round's clock) is sorted already.
  if (!std::is_sorted(run_.begin(), run_.end(), earlier))
    std::sort(run_.begin(), run_.end(), earlier);
  const std::size_t ahead = std::min(run_.size(), kAhead);
  for (std::size_t i = 0; i < ahead; ++i)
    __builtin_prefetch(&node(static_cast<std::uint32_t>(run_[i].key)), 1);
}

// The cursor goes back to just before the earliest entry at or before it,
// and every entry is placed again.
void TimerSlab::rebuild() {
  std::uint64_t m = unit_of(early_.front().deadline);
  if (run_pos_ < run_.size()) m = std::min(m, unit_of(run_[run_pos_].deadline));
  std::vector<Entry> near;
  near.swap(early_);
  std::vector<Entry> run;
  run.swap(run_);
  const std::size_t from = std::exchange(run_pos_, 0);
  Chunk* lists[kLevels][64];
  std::memcpy(lists, wheel_, sizeof lists);
  std::memset(wheel_, 0, sizeof wheel_);
  std::memset(occupied_, 0, sizeof occupied_);
  wheel_count_ = 0;
  cursor_ = m == 0 ? 0 : m - 1;
  try {
    for (std::size_t i = from; i < run.size(); ++i) place(run[i]);
    for (const Entry& e : near) place(e);
    for (auto& level : lists)
      for (Chunk*& list : level)
        while (list) {
          for (std::uint32_t i = 0; i < list->count; ++i) place(list->entries[i]);
          Chunk* next = list->next;
          free_chunk(list);
          list = next;
        }
  } catch (...) {
    std::terminate();  // half placed: order cannot be kept
  }
  run.clear();
  run_.swap(run);  // keeps the run's capacity
}

bool TimerSlab::cancel(TimerNode& n) noexcept {
  if (n.state == TimerNode::kDue) {
    // Its expiry is queued and has had no effect outside the loop: the
    // cancel wins (the marker delivers it cancelled).
    n.state = TimerNode::kCancelled;
    n.cancelled |= TimerNode::kResultCancelled;
    return true;
  }
  if (n.state != TimerNode::kArmed) return false;  // cancelled already, or delivered
  ++stale_;  // its entry stays until dropped or compacted; the node is
  n.cancelled |= TimerNode::kStaleEntry | TimerNode::kResultCancelled;  // not reused before
  n.state = TimerNode::kCancelled;
  if (stale_ > 1024 && stale_ * 2 > entries()) compact();
  if (!free_markers_) {
    try {
      more_markers();
    } catch (...) {
      std::terminate();  // 64 small records; a loop out of memory cannot keep its promise
    }
  }
  queue_marker(n, 0, -ECANCELED);
  return true;
}

// The entry top() looked at is stale: it goes.
void TimerSlab::drop_top() noexcept {
  Entry e;
  if (top_in_run_) {
    e = run_[run_pos_++];
  } else {
    e = early_.front();
    pop_early();
  }
  drop_stale(e);
}

void TimerSlab::more_markers() {
  constexpr std::size_t kMarkers = 64;
  auto* block = new OpBase[kMarkers];
  try {
    marker_blocks_.push_back(block);
  } catch (...) {
    delete[] block;
    throw;
  }
  for (std::size_t i = 0; i < kMarkers; ++i) {
    block[i].next = free_markers_;
    free_markers_ = &block[i];
  }
}

// From the loop's drain: the node's one call. The marker goes back first
// (the callback may arm timers that need one).
void TimerSlab::deliver_marker(OpBase& m) {
  auto& n = *static_cast<TimerNode*>(m.ctx);
  TimerSlab& s = of(n);
  const TimePoint deadline{Duration(static_cast<std::int64_t>(m.done))};
  m.next = s.free_markers_;
  s.free_markers_ = &m;
  run(n, deadline);
}

// The node's one call (due: expired at `deadline`; cancelled: ECANCELED).
void TimerSlab::run(TimerNode& n, TimePoint deadline) {
  const bool cancelled = n.state == TimerNode::kCancelled;
  n.state = TimerNode::kDone;
  struct Drop {
    TimerNode& n;
    ~Drop() { release(n); }  // the loop's reference, also when the call throws
  } drop{n};
  Operation handle(n);
  if (cancelled) {
    const Result<Expired> r = Error{std::make_error_code(std::errc::operation_canceled), "timer"};
    n.fn(n, TimerNode::Call::run, &handle, &r);
  } else {
    const Result<Expired> r = Expired{deadline};
    n.fn(n, TimerNode::Call::run, &handle, &r);
  }
}

void TimerSlab::release(TimerNode& n) noexcept {
  if (--n.refs != 0) return;
  TimerSlab& s = of(n);
  if (n.cancelled & TimerNode::kStaleEntry) {  // freed when its stale entry goes
    n.drop_callable();
    n.state = TimerNode::kZombie;
    return;
  }
  s.free_node(n);
  if (!s.loop_alive && --s.held == 0) delete &s;
}

// A cancelled timer's entry is gone: its node may be reused now.
void TimerSlab::drop_stale(const Entry& e) noexcept {
  --stale_;
  TimerNode& n = node(static_cast<std::uint32_t>(e.key));
  n.cancelled &= static_cast<std::uint8_t>(~TimerNode::kStaleEntry);
  if (n.state == TimerNode::kZombie) free_node(n);
}

void TimerSlab::close_loop() noexcept {
  loop_alive = false;
  early_.clear();
  run_.clear();
  run_pos_ = 0;
  for (auto& level : wheel_)
    for (Chunk*& list : level) free_list(std::exchange(list, nullptr));
  std::memset(occupied_, 0, sizeof occupied_);
  wheel_count_ = 0;
  stale_ = 0;
  // Nodes still held by handles keep the slab; it goes with the last. The
  // queue is empty for good: markers are no longer in use.
  held = 0;
  // Only nodes ever handed out (all of each block but the newest, whose
  // end is bump_); none at all when every one is free again (a loop that
  // fired all its timers).
  for (Block* b : in_use_ == 0 ? std::span<Block*>() : std::span(blocks_)) {
    const auto here = static_cast<std::size_t>(b == blocks_.back() ? bump_ - b->nodes : kPerBlock);
    for (TimerNode& t : std::span(b->nodes, here)) {
      t.cancelled &= static_cast<std::uint8_t>(~TimerNode::kStaleEntry);  // the wheel is gone
      if (t.state == TimerNode::kArmed || t.state == TimerNode::kDue ||
          t.state == TimerNode::kCancelled) {
        t.state = TimerNode::kDone;  // never delivered: the callback never runs
        t.cancelled |= TimerNode::kResultCancelled;
        t.drop_callable();
        --t.refs;  // the loop's reference
      }
      if (t.state == TimerNode::kZombie || (t.state == TimerNode::kDone && t.refs == 0))
        free_node(t);
      if (t.state != TimerNode::kFree) ++held;
    }
  }
  if (held == 0) delete this;
}

void TimerSlab::pop_early() noexcept {
  const Entry last = early_.back();
  early_.pop_back();
  if (!early_.empty()) {
    early_[0] = last;
    sift_down(0);
  }
}

// Drops the stale entries everywhere (the heap rebuilt, the run and each
// bucket filtered in place): O(n), once the cancelled ones are half of
// all, so a cancel costs O(1) amortized.
void TimerSlab::compact() noexcept {
  std::size_t out = 0;
  for (std::size_t i = run_pos_; i < run_.size(); ++i) {
    const Entry e = run_[i];
    if (live(e))
      run_[out++] = e;
    else
      drop_stale(e);
  }
  run_.resize(out);
  run_pos_ = 0;
  out = 0;
  for (std::size_t i = 0; i < early_.size(); ++i) {
    const Entry e = early_[i];
    if (live(e))
      early_[out++] = e;
    else
      drop_stale(e);
  }
  early_.resize(out);
  if (early_.size() > 1)
    for (std::size_t i = (early_.size() - 2) / kArity + 1; i-- > 0;) sift_down(i);
  for (unsigned level = 0; level < kLevels; ++level)
    for (unsigned digit = 0; digit < 64; ++digit) {
      Chunk* const list = wheel_[level][digit];
      if (!list) continue;
      Chunk* w = list;  // written behind the reading
      std::uint32_t wi = 0;
      for (Chunk* r = list; r;) {
        const std::uint32_t count = r->count;
        Chunk* const next = r->next;
        for (std::uint32_t i = 0; i < count; ++i) {
          if (i + 8 < count)
            __builtin_prefetch(&node(static_cast<std::uint32_t>(r->entries[i + 8].key)));
          const Entry e = r->entries[i];
          if (!live(e)) {
            drop_stale(e);
            --wheel_count_;
            continue;
          }
          if (wi == kChunkEntries) {
            w->count = wi;
            w = w->next;
            wi = 0;
          }
          w->entries[wi++] = e;
        }
        r = next;
      }
      if (wi == 0) {  // nothing live: w is still the first
        free_list(list);
        wheel_[level][digit] = nullptr;
        occupied_[level] &= ~(std::uint64_t{1} << digit);
      } else {
        w->count = wi;
        free_list(std::exchange(w->next, nullptr));
      }
    }
}

void TimerSlab::sift_up(std::size_t i) noexcept {
  const Entry e = early_[i];
  while (i > 0) {
    const std::size_t parent = (i - 1) / kArity;
    if (!earlier(e, early_[parent])) break;
    early_[i] = early_[parent];
    i = parent;
  }
  early_[i] = e;
}

void TimerSlab::sift_down(std::size_t i) noexcept {
  const Entry e = early_[i];
  const std::size_t n = early_.size();
  for (;;) {
    const std::size_t first = i * kArity + 1;
    if (first >= n) break;
    std::size_t best = first;
    const std::size_t end = first + kArity < n ? first + kArity : n;
    for (std::size_t c = first + 1; c < end; ++c)
      if (earlier(early_[c], early_[best])) best = c;
    if (!earlier(early_[best], e)) break;
    early_[i] = early_[best];
    i = best;
  }
  early_[i] = e;
}

}  // namespace lev::detail
