// Callback timers (lev/detail/timer_slab.hpp): 40-byte nodes in 64 KiB
// blocks, a 4-ary heap of {deadline, arming order | index} entries.
#include "lev/detail/timer_slab.hpp"

#include <cstdlib>
#include <cstring>
#include <system_error>

#include "lev/operation.hpp"

namespace lev::detail {

namespace {
constexpr std::size_t kArity = 4;
inline bool earlier(const TimerSlab::Entry& a, const TimerSlab::Entry& b) noexcept {
  return a.deadline < b.deadline || (a.deadline == b.deadline && a.key < b.key);
}
// A free node keeps the next free index in its storage.
inline std::uint32_t& next_free(TimerNode& n) noexcept {
  return *std::launder(reinterpret_cast<std::uint32_t*>(n.storage));
}
}  // namespace

static_assert(sizeof(TimerSlab::Block) <= TimerSlab::kBlockBytes);
static_assert(offsetof(TimerSlab::Block, nodes) == TimerSlab::kHeader);

TimerSlab::~TimerSlab() {
  for (Block* b : blocks_) std::free(b);
  for (OpBase* m : marker_blocks_) delete[] m;
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

TimerNode& TimerSlab::acquire() {
  if (free_ == UINT32_MAX) {
    void* mem = std::aligned_alloc(kBlockBytes, kBlockBytes);
    if (!mem) throw std::bad_alloc();
    auto* b = static_cast<Block*>(mem);
    b->slab = this;
    b->first = static_cast<std::uint32_t>(blocks_.size()) * kPerBlock;
    try {
      blocks_.push_back(b);
    } catch (...) {
      std::free(mem);
      throw;
    }
    for (std::uint32_t i = kPerBlock; i-- > 0;) {  // lowest index first off the list
      b->nodes[i].state = TimerNode::kFree;
      next_free(b->nodes[i]) = free_;
      free_ = b->first + i;
    }
  }
  TimerNode& n = node(free_);
  free_ = next_free(n);
  n.refs = 1;
  n.state = TimerNode::kArmed;
  n.cancelled = 0;
  n.fn = nullptr;
  return n;
}

void TimerSlab::free_node(TimerNode& n) noexcept {
  n.drop_callable();
  n.state = TimerNode::kFree;
  next_free(n) = free_;
  free_ = index_of(n);
}

void TimerSlab::arm(TimerNode& n, TimePoint deadline, std::uint64_t seq) {
  n.seq = static_cast<std::uint32_t>(seq);  // wraps after 2^32 arms: it orders ties only
  heap_.push_back(
      {deadline.time_since_epoch().count(), (std::uint64_t{n.seq} << 32) | index_of(n)});
  sift_up(heap_.size() - 1);
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
  ++stale_;  // its entry stays until popped or compacted; the node is
  n.cancelled = TimerNode::kStaleEntry | TimerNode::kResultCancelled;  // not reused before
  n.state = TimerNode::kCancelled;
  if (stale_ > 1024 && stale_ * 2 > heap_.size()) compact();
  try {
    queue_marker(n, 0, -ECANCELED);
  } catch (...) {
    std::terminate();  // 64 small records; a loop out of memory cannot keep its promise
  }
  return true;
}

void TimerSlab::fire_top() {
  const Entry e = heap_.front();
  pop_top();
  TimerNode& n = node(static_cast<std::uint32_t>(e.key));
  n.state = TimerNode::kDue;
  queue_marker(n, e.deadline, 0);
}

void TimerSlab::queue_marker(TimerNode& n, std::int64_t deadline, int res) {
  if (!free_markers_) {
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
  OpBase& m = *free_markers_;
  free_markers_ = m.next;
  m.kind = OpKind::timer;
  m.state = OpState::submitted;
  m.cancel = Cancel::none;
  m.flow = 0;
  m.ctx = &n;
  m.deliver = &TimerSlab::deliver_marker;
  m.deadline = TimePoint(Duration(deadline));
  queue->push(m, res);
}

// From the loop's drain: the node's one call. The marker goes back first
// (the callback may arm timers that need one).
void TimerSlab::deliver_marker(OpBase& m) {
  auto& n = *static_cast<TimerNode*>(m.ctx);
  TimerSlab& s = of(n);
  const TimePoint deadline = m.deadline;
  m.next = s.free_markers_;
  s.free_markers_ = &m;
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

// A cancelled timer's entry left the heap: its node may be reused now.
void TimerSlab::drop_stale(const Entry& e) noexcept {
  --stale_;
  TimerNode& n = node(static_cast<std::uint32_t>(e.key));
  n.cancelled &= static_cast<std::uint8_t>(~TimerNode::kStaleEntry);
  if (n.state == TimerNode::kZombie) free_node(n);
}

void TimerSlab::close_loop() noexcept {
  loop_alive = false;
  heap_.clear();
  stale_ = 0;
  // Nodes still held by handles keep the slab; it goes with the last. The
  // queue is empty for good: markers are no longer in use.
  held = 0;
  for (Block* b : blocks_)
    for (TimerNode& t : b->nodes) {
      t.cancelled &= static_cast<std::uint8_t>(~TimerNode::kStaleEntry);  // the heap is gone
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
  if (held == 0) delete this;
}

void TimerSlab::pop_top() noexcept {
  const Entry last = heap_.back();
  heap_.pop_back();
  if (!heap_.empty()) {
    heap_[0] = last;
    sift_down(0);
  }
}

// Drops the stale entries and rebuilds the heap: O(n), once the cancelled
// ones are half of it, so a cancel costs O(1) amortized.
void TimerSlab::compact() noexcept {
  std::size_t out = 0;
  for (std::size_t i = 0; i < heap_.size(); ++i) {
    const Entry e = heap_[i];
    if (live(e))
      heap_[out++] = e;
    else
      drop_stale(e);
  }
  heap_.resize(out);
  if (heap_.size() > 1)
    for (std::size_t i = (heap_.size() - 2) / kArity + 1; i-- > 0;) sift_down(i);
}

void TimerSlab::sift_up(std::size_t i) noexcept {
  const Entry e = heap_[i];
  while (i > 0) {
    const std::size_t parent = (i - 1) / kArity;
    if (!earlier(e, heap_[parent])) break;
    heap_[i] = heap_[parent];
    i = parent;
  }
  heap_[i] = e;
}

void TimerSlab::sift_down(std::size_t i) noexcept {
  const Entry e = heap_[i];
  const std::size_t n = heap_.size();
  for (;;) {
    const std::size_t first = i * kArity + 1;
    if (first >= n) break;
    std::size_t best = first;
    const std::size_t end = first + kArity < n ? first + kArity : n;
    for (std::size_t c = first + 1; c < end; ++c)
      if (earlier(heap_[c], heap_[best])) best = c;
    if (!earlier(heap_[best], e)) break;
    heap_[i] = heap_[best];
    i = best;
  }
  heap_[i] = e;
}

}  // namespace lev::detail
