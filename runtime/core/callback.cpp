// Callback-form operation records: pooled per loop, reference counted by
// the loop (while live) and by Operation handles.
#include "lev/loop.hpp"
#include "lev/operation.hpp"

#include <new>
#include <utility>

namespace lev {
namespace detail {

void deliver_callback(OpBase& op) {
  auto& cb = *static_cast<CallbackOp*>(op.ctx);
  struct Release {
    CallbackOp& cb;
    bool rearmed = false;
    ~Release() {
      if (rearmed) return;
      cb.reset_callable();  // captures are released right after the call
      CallbackPool::release(cb);
    }
  } release{cb};
  {
    Operation handle(cb);
    cb.invoke(cb, handle);
  }
  // every(): the next expiry, skipping ticks already in the past.
  if (cb.interval > Duration::zero() && op.res == 0 && op.cancel == Cancel::none &&
      cb.pool->loop_alive &&
      op.state == OpState::delivered) {
    const TimePoint now = cb.loop->now();
    op.deadline = saturating_add(op.deadline, cb.interval);
    if (op.deadline <= now) {
      const auto behind = (now - op.deadline) / cb.interval + 1;
      op.deadline = saturating_add(op.deadline, behind * cb.interval);
    }
    release.rearmed = true;
    cb.loop->start(op);
  }
}

CallbackOp& CallbackPool::acquire(Loop& loop) {
  CallbackOp* cb = free_list;
  if (cb) {
    free_list = cb->free_next;
  } else {
    cb = new CallbackOp;
    cb->pool = this;
    ++refs;
  }
  cb->op = OpBase{};
  cb->op.ctx = cb;
  cb->op.deliver = &deliver_callback;
  cb->loop = &loop;
  cb->refs = 1;  // the loop's, until delivery
  cb->free_next = nullptr;
  cb->interval = Duration::zero();
  return *cb;
}

void CallbackPool::release(CallbackOp& cb) noexcept {
  if (--cb.refs != 0) return;
  cb.reset_callable();
  if (cb.boxed_args) ::operator delete(std::exchange(cb.boxed_args, nullptr));
  CallbackPool* pool = cb.pool;
  if (pool->loop_alive) {
    cb.free_next = pool->free_list;
    pool->free_list = &cb;
    return;
  }
  delete &cb;
  if (--pool->refs == 0) delete pool;
}

void CallbackPool::close_loop() noexcept {
  loop_alive = false;
  while (CallbackOp* cb = free_list) {
    free_list = cb->free_next;
    delete cb;
    --refs;
  }
  if (--refs == 0) delete this;
}

}  // namespace detail

void Operation::cancel() noexcept {
  if (detail::TimerNode* n = node()) {
    detail::TimerSlab& slab = detail::TimerSlab::of(*n);
    if (slab.loop_alive) slab.cancel(*n);  // queued: the callback runs from the loop
    return;
  }
  // Recorded on the op whatever its state: a queued or running every()
  // is never re-armed after it (deliver_callback asks op.cancel).
  detail::CallbackOp* c = cb();
  if (c && c->pool->loop_alive && c->loop) c->loop->cancel(c->op);
}

}  // namespace lev
