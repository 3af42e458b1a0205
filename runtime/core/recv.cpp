// `co_await loop.recv(fd)`: the receive-buffer registry (multishot recv
// per fd on io_uring) and the awaiter. See lev/detail/recv.hpp.
#include "lev/detail/recv.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <new>
#include <stdexcept>
#include <system_error>

#include "core/fd_hooks.hpp"
#include "lev/loop.hpp"

namespace lev::detail {

namespace {
std::uint16_t buffer_id(std::uint32_t flags) noexcept {
  return static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
}
bool has_buffer(int res, std::uint32_t flags) noexcept {
  return res > 0 && (flags & IORING_CQE_F_BUFFER);
}
}  // namespace

// The multishot's steps: its end with ENOBUFS (the pool ran dry) is a step,
// re-armed once a buffer is back; any other end is delivered to on_end.
const Continuation RecvRegistry::kSteps{&RecvRegistry::starved_end, &RecvRegistry::rearm};

// The awaiter's steps on the plain and select paths: readiness (plain: the
// recv comes next), readiness that did not last (EAGAIN: wait again), a
// pool run dry (ENOBUFS: wait for a buffer, then recv again).
const Continuation RecvBufferAwaiter::kSteps{&RecvBufferAwaiter::is_step,
                                             &RecvBufferAwaiter::next_step};

// ------------------------------------------------------------- registry

RecvRegistry::RecvRegistry(Loop& loop, CompletionBackend& backend, std::uint32_t count,
                           std::uint32_t size, Flavor flavor)
    : loop_(loop),
      backend_(backend),
      pool_(new BufferPool(count, size, flavor == Flavor::stream ? 0 : 1,
                           flavor == Flavor::stream ? "recv_buffer" : "datagram_buffer")),
      flavor_(flavor) {
  const BackendFeatures f = backend.features();
  // A one-shot recvmsg with a kernel-picked buffer does not lay the buffer
  // out as the multishot does (its sender goes to the msghdr): without
  // multishot, datagrams take the plain path (readiness, then recvmsg).
  const bool kernel_once = f.provided_buffers && !f.multishot_recv;
  bool provided = false;
  if (flavor == Flavor::stream || !kernel_once) {
    try {
      provided = backend.provide_buffers(*pool_);
    } catch (...) {
      delete pool_;
      throw;
    }
  }
  if (!provided)
    mode_ = Mode::plain;
  else if (f.multishot_recv)
    mode_ = Mode::multishot;
  else
    mode_ = Mode::select;
}

RecvRegistry::~RecvRegistry() {
  // The loop has settled every op by now (teardown): only results remain.
  for (RecvState* st : by_fd_)
    if (st) {
      release(*st);
      delete st;
    }
  for (RecvState* st : dying_) {
    release(*st);
    delete st;
  }
  for (RecvState* st : spare_) delete st;
  backend_.withdraw_buffers(*pool_);
  pool_->orphan();  // deleted now, or when the last Buffer held elsewhere comes back
}

RecvState& RecvRegistry::get(int fd) {
  if (RecvState* st = find(fd)) return *st;
  const auto i = static_cast<std::size_t>(fd);
  if (i >= by_fd_.size()) by_fd_.resize(std::max<std::size_t>(i + 1, by_fd_.size() * 2), nullptr);
  RecvState* st;
  if (!spare_.empty()) {
    st = spare_.back();
    spare_.pop_back();
  } else {
    dying_.reserve(++states_);  // so that closing() never allocates
    st = new RecvState;
    st->items.reserve(kMaxQueued + 4);
    st->starved.retry = &on_buffer;
  }
  CloseLink::mark(loop_, fd);  // a close of the number, on any thread, reaches closing()
  st->reg = this;
  st->fd = fd;
  st->closing = false;
  st->waiter = nullptr;
  st->op.state = OpState::idle;
  by_fd_[i] = st;
  return *st;
}

void RecvRegistry::arm(RecvState& st) noexcept {
  OpBase& op = st.op;
  op.kind = op_kind();
  op.fd = st.fd;
  op.buf = nullptr;
  if (flavor_ == Flavor::datagram) {
    DatagramLayout::arm(st.msg);
    op.buf = &st.msg;
  }
  op.len = 0;
  op.flags = 0;
  op.flow = kFlowHook;
  op.cont = &kSteps;
  op.linked_timeout = false;
  op.select = kSelectMultishot;
  op.pool = pool_;
  op.more = &on_more;
  op.ctx = &st;
  op.deliver = &on_end;
  try {
    loop_.start(op);
    ++arms_;
    ++armed_;
  } catch (const std::exception&) {
    // The submission failed (the ring is gone): report it to the waiter.
    deliver(st, -EIO, 0);
  }
}

void RecvRegistry::deliver(RecvState& st, int res, std::uint32_t flags) noexcept {
  if (has_buffer(res, flags)) pool_->claim();
  if (st.waiter && !st.has_items()) {
    RecvBufferAwaiter* w = std::exchange(st.waiter, nullptr);
    w->hand(res, flags);
    return;
  }
  st.items.push_back({res, flags});  // reserved: allocates only past kMaxQueued + 4
  // Pause when results pile up unread; sooner when the pool runs low: the
  // buffers an unread fd holds are the ones another reader may be waiting
  // for (found by the simulation: with a small pool, fds whose readers were
  // busy held every buffer and the reader that would have unblocked them
  // waited for one for ever).
  const std::size_t unread = st.items.size() - st.head;
  const bool low = pool_->count() - pool_->in_use() <= pool_->count() / 4;
  if ((unread >= unread_cap() || (low && unread >= 1)) && st.live() &&
      st.op.cancel == Cancel::none) {
    ++paused_;
    loop_.cancel(st.op);  // nobody reads: stop taking buffers for this fd
  }
}

void RecvRegistry::on_more(OpBase& op, int res, std::uint32_t flags) noexcept {
  auto& st = *static_cast<RecvState*>(op.ctx);
  st.reg->deliver(st, res, flags);
}

bool RecvRegistry::starved_end(const OpBase& op) noexcept {
  return op.res == -ENOBUFS && !static_cast<const RecvState*>(op.ctx)->closing;
}

// The pool ran dry: no data was lost, try again once a buffer is back.
// Only for a reader that waits: without one the fd stays unarmed until
// its next recv (a multishot nobody reads would take the buffer back).
void RecvRegistry::rearm(OpBase& op) noexcept {
  auto& st = *static_cast<RecvState*>(op.ctx);
  RecvRegistry& reg = *st.reg;
  --reg.armed_;
  ++reg.pool_->exhausted;
  if (!st.waiter) return;
  if (reg.pool_->in_use() < reg.pool_->count() || reg.copy_out_unread(st) > 0)
    reg.arm(st);  // buffers came back meanwhile, or were freed now
  else
    reg.pool_->wait(st.starved);  // the program holds them all (Buffers alive)
}

// With a small pool a quarter is few: 2 or 3 buffers give 1 (found as F5:
// at 16, one fd nobody read held a pool of 3 and the reader of another fd
// waited for ever). The kernel may still take more in one go (a multishot
// receives while the socket has data): copy_out_unread frees those.
std::size_t RecvRegistry::unread_cap() const noexcept {
  return std::clamp<std::size_t>(pool_->count() / 4, 1, kMaxQueued);
}

// Found as F5: the results of fds nobody reads may hold every buffer of
// the pool (a multishot takes several before its pause lands), and the
// reader left without one would wait for ever. Their bytes move to a pool
// made for them; the reader goes on. The rare path: a copy per buffer.
std::size_t RecvRegistry::copy_out_unread(const RecvState& starved) noexcept {
  std::size_t n = 0;
  for (const RecvState* st : by_fd_)
    if (st && st != &starved)
      for (std::size_t i = st->head; i < st->items.size(); ++i)
        if (!st->items[i].copy && has_buffer(st->items[i].res, st->items[i].flags)) ++n;
  if (n == 0) return 0;
  BufferPool* to;
  try {
    to = new BufferPool(static_cast<std::uint32_t>(n), pool_->size(), pool_->group(),
                        flavor_ == Flavor::stream ? "recv_buffer" : "datagram_buffer");
  } catch (const std::exception&) {
    return 0;  // out of memory: the reader waits for a buffer the program gives back
  }
  // First every copy, then the give-backs (each may retry a waiter, which
  // may arm a recv and so reach these states' results).
  std::vector<std::uint16_t> freed;
  try {
    freed.reserve(n);
  } catch (const std::bad_alloc&) {
    delete to;
    return 0;
  }
  for (RecvState* st : by_fd_) {
    if (!st || st == &starved) continue;
    for (std::size_t i = st->head; i < st->items.size(); ++i) {
      RecvState::Item& it = st->items[i];
      if (it.copy || !has_buffer(it.res, it.flags)) continue;
      const std::uint16_t from = buffer_id(it.flags);
      const auto id = static_cast<std::uint16_t>(to->take());
      std::memcpy(to->data(id), pool_->data(from), static_cast<std::size_t>(it.res));
      to->claim();
      it.copy = to;
      it.flags = (it.flags & ((1u << IORING_CQE_BUFFER_SHIFT) - 1)) |
                 (static_cast<std::uint32_t>(id) << IORING_CQE_BUFFER_SHIFT);
      freed.push_back(from);
    }
  }
  to->orphan();  // deleted once the last copy is given back
  copied_ += freed.size();
  for (const std::uint16_t id : freed) pool_->give_back(id);
  return freed.size();
}

// The multishot ended (its last completion, delivered from the queue).
void RecvRegistry::on_end(OpBase& op) {
  auto& st = *static_cast<RecvState*>(op.ctx);
  RecvRegistry& reg = *st.reg;
  const int res = op.res;
  --reg.armed_;
  if (st.closing) {
    if (has_buffer(res, op.cqe_flags)) {
      reg.pool_->claim();
      reg.pool_->give_back(buffer_id(op.cqe_flags));
    }
    reg.release(st);
    reg.dying_.erase(std::find(reg.dying_.begin(), reg.dying_.end(), &st));
    reg.spare_.push_back(&st);
    return;
  }
  // ENOBUFS here was cancelled (paused) first: like ECANCELED, the next
  // recv re-arms.
  if (res == -ECANCELED || res == -ENOBUFS) {  // paused (results piled up) or cancelled at teardown
    if (st.waiter && !st.has_items()) reg.arm(st);
    return;
  }
  // Data with the end (the kernel stops a multishot now and then), EOF or
  // an error: all go to the reader in order; the next recv re-arms.
  reg.deliver(st, res, op.cqe_flags);
}

void RecvRegistry::on_buffer(BufferWaiter& w) noexcept {
  RecvState& st =
      *reinterpret_cast<RecvState*>(reinterpret_cast<char*>(&w) - offsetof(RecvState, starved));
  if (!st.closing && !st.live()) st.reg->arm(st);
}

void RecvRegistry::release(RecvState& st) noexcept {
  pool_->cancel_wait(st.starved);
  while (st.has_items()) {
    const RecvState::Item it = st.pop();
    if (has_buffer(it.res, it.flags)) (it.copy ? it.copy : pool_)->give_back(buffer_id(it.flags));
  }
  st.items.clear();
  st.head = 0;
}

void RecvRegistry::closing(int fd) noexcept {
  // Without multishot a receive waits in an op of its own (a readiness
  // wait, or a recv whose buffer the backend picks): an io_uring request
  // holds the file open past the close and would wait on, so the backend
  // cancels what it has on the fd while the number still names it.
  if (mode_ != Mode::multishot) backend_.cancel_fd(fd);
  RecvState* st = find(fd);
  if (!st) return;
  by_fd_[static_cast<std::size_t>(fd)] = nullptr;  // a new fd of that number starts afresh
  st->closing = true;
  if (st->waiter) std::exchange(st->waiter, nullptr)->hand(-EBADF, 0);
  pool_->cancel_wait(st->starved);
  if (st->live()) {
    dying_.push_back(st);  // reserved in get(): cannot throw
    loop_.cancel(st->op);  // on_end lets it go
    return;
  }
  release(*st);
  spare_.push_back(st);
}

bool RecvRegistry::has_waiter() const noexcept {
  for (const RecvState* st : by_fd_)
    if (st && st->waiter) return true;
  return false;
}

RecvBufferStats RecvRegistry::stats() const noexcept {
  RecvBufferStats s;
  s.buffers = pool_->count();
  s.buffer_size = pool_->size();
  s.in_use = pool_->in_use();
  s.peak_in_use = pool_->peak_in_use();
  s.exhausted = pool_->exhausted;
  s.arms = arms_;
  s.paused = paused_;
  s.copied = copied_;
  s.kernel_ring = pool_->kernel_ring();
  s.multishot = mode_ == Mode::multishot;
  return s;
}

// -------------------------------------------------------------- awaiter

void RecvBufferAwaiter::suspend(std::coroutine_handle<> h, CancelFrom from) {
  coro_ = h.address();
  op_.ctx = coro_;
  op_.deliver = nullptr;
  if (from.stopped()) {
    op_.kind = OpKind::post;
    loop_->start_cancelled(op_);
    return;
  }
  if (reg_->mode() == RecvRegistry::Mode::multishot && flags_ == 0 && fd_ >= 0) {
    RecvState* found = st_ ? st_ : reg_->find(fd_);  // await_ready looked already
    RecvState& st = found ? *found : reg_->get(fd_);
    st_ = &st;
    op_.kind = OpKind::post;
    op_.select = kSelectMultishot;  // a handed buffer goes back if never taken
    op_.pool = &reg_->pool();
    st.waiter = this;
    if (!st.live() && !st.starved.queued) reg_->arm(st);
  } else {
    start_one();
  }
  if (!from.none() && waiting())
    stop_.arm(
        *loop_, from,
        [](void* self) noexcept {
          static_cast<RecvBufferAwaiter*>(self)->interrupt(Cancel::requested);
        },
        this);
  if (timeout_ && waiting()) {
    OpBase& t = timer_.emplace();
    t.kind = OpKind::timer;
    t.deadline = saturating_add(loop_->now(), *timeout_);
    t.ctx = this;
    t.deliver = &on_deadline;
    loop_->start(t);
  }
}

// select: one recv op whose buffer the backend picks when data comes.
// plain: a readiness wait first (so that an idle fd holds no buffer), then
// a recv that does not wait, into a buffer taken then.
void RecvBufferAwaiter::start_one() {
  if (flags_ != 0 && reg_->flavor() == RecvRegistry::Flavor::datagram) [[unlikely]] {
    // DatagramSocket::receive({.flags}): a pool receive lays out what the
    // multishot does and cannot peek or take other flags on io_uring, so
    // no engine takes them (recv_from / recvmsg do).
    post_result(-EINVAL, Cancel::none);
    return;
  }
  op_.fd = fd_;
  op_.flow = kFlowHook;  // its steps are settled by the loop (kSteps)
  op_.cont = &kSteps;
  op_.linked_timeout = false;
  op_.ctx = this;
  op_.deliver = &on_delivered;
  if (reg_->mode() != RecvRegistry::Mode::plain) {
    op_.kind = reg_->op_kind();
    op_.flags = flags_;
    op_.select = kSelectOnce;
    op_.pool = &reg_->pool();
    op_.buf = nullptr;
    op_.len = 0;
  } else {
    op_.kind = OpKind::poll;
    op_.select = kSelectNone;
    op_.flags = POLLIN | POLLRDHUP;
  }
  loop_->start(op_);
}

void RecvBufferAwaiter::recv_now() {
  BufferPool& pool = reg_->pool();
  const int id = pool.take();
  if (id < 0) {
    ++pool.exhausted;
    buffer_wait_.retry = &on_buffer;
    pool.wait(buffer_wait_);
    return;
  }
  taken_ = id;
  pool.claim();
  if (reg_->flavor() == RecvRegistry::Flavor::datagram) {
    recvmsg_now(static_cast<std::uint16_t>(id));
    return;
  }
  op_.kind = OpKind::recv;
  op_.flags = flags_ | MSG_DONTWAIT;
  op_.buf = pool.data(static_cast<std::uint16_t>(id));
  op_.len = pool.size();
  loop_->start(op_);
}

// Plain datagrams: the socket was readable, so the recvmsg (laid out as
// the multishot's) runs now, without waiting; its result ends the wait
// from the queue. Readiness that did not last waits again.
void RecvBufferAwaiter::recvmsg_now(std::uint16_t id) noexcept {
  BufferPool& pool = reg_->pool();
  const long r = DatagramLayout::receive(fd_, pool.data(id), pool.size(), flags_);
  if (r < 0 && errno == EAGAIN) {
    pool.give_back(static_cast<std::uint16_t>(std::exchange(taken_, -1)));
    go_on(false);
    return;
  }
  post_result(r < 0 ? -errno : static_cast<int>(r), Cancel::none);
}

// Ends the wait with `res` from the queue, when no op of ours is in flight.
void RecvBufferAwaiter::post_result(int res, Cancel why) noexcept {
  op_.kind = OpKind::post;
  op_.flow = 0;
  op_.deliver = &on_delivered;
  op_.ctx = this;
  loop_->start(op_);
  op_.res = res;
  op_.cancel = why;
}

// Starts the next step; a failed submission ends the wait with EIO.
void RecvBufferAwaiter::go_on(bool recv) noexcept {
  try {
    if (recv)
      recv_now();
    else
      start_one();
  } catch (const std::exception&) {
    if (taken_ >= 0) reg_->pool().give_back(static_cast<std::uint16_t>(std::exchange(taken_, -1)));
    post_result(-EIO, Cancel::none);
  }
}

void RecvBufferAwaiter::on_buffer(BufferWaiter& w) noexcept {
  auto* self = reinterpret_cast<RecvBufferAwaiter*>(reinterpret_cast<char*>(&w) -
                                                    offsetof(RecvBufferAwaiter, buffer_wait_));
  self->go_on(self->reg_->mode() == RecvRegistry::Mode::plain);
}

bool RecvBufferAwaiter::is_step(const OpBase& op) noexcept {
  const auto* self = static_cast<const RecvBufferAwaiter*>(op.ctx);
  if (op.kind == OpKind::poll) return op.res >= 0;  // readable: the recv comes next
  return op.res == -ENOBUFS || (op.res == -EAGAIN && self->taken_ >= 0);
}

// Called by Loop::settle for a step of ours, only when no cancel is
// recorded on the op (a recorded one ends the wait as ECANCELED instead).
void RecvBufferAwaiter::next_step(OpBase& op) noexcept {
  auto* self = static_cast<RecvBufferAwaiter*>(op.ctx);
  if (op.kind == OpKind::poll) {
    self->go_on(true);  // readable: now take a buffer
    return;
  }
  if (op.res == -EAGAIN) {
    // Readiness that did not last: the buffer goes back, wait again.
    self->reg_->pool().give_back(static_cast<std::uint16_t>(std::exchange(self->taken_, -1)));
    self->go_on(false);
    return;
  }
  // ENOBUFS: the pool was dry when data came: wait for a buffer, then recv
  // again. One may have come back since the kernel looked (found by the
  // simulation: waiting then waits for ever): try again at once.
  BufferPool& pool = self->reg_->pool();
  ++pool.exhausted;
  if (pool.in_use() < pool.count()) {
    self->go_on(self->reg_->mode() == RecvRegistry::Mode::plain);
    return;
  }
  self->buffer_wait_.retry = &on_buffer;
  pool.wait(self->buffer_wait_);
}

void RecvBufferAwaiter::on_delivered(OpBase& op) {
  std::coroutine_handle<>::from_address(static_cast<RecvBufferAwaiter*>(op.ctx)->coro_).resume();
}

void RecvBufferAwaiter::on_deadline(OpBase& t) {
  static_cast<RecvBufferAwaiter*>(t.ctx)->interrupt(Cancel::deadline);
}

// multishot: a result for this waiter (st_ no longer refers to it).
void RecvBufferAwaiter::hand(int res, std::uint32_t flags) noexcept {
  st_ = nullptr;
  loop_->start(op_);  // a post: resumed from the queue
  op_.res = res;
  op_.cqe_flags = flags;
}

void RecvBufferAwaiter::interrupt(Cancel why) noexcept {
  if (st_ && st_->waiter == this) {  // multishot: stop waiting; the recv stays armed
    st_->waiter = nullptr;
    st_ = nullptr;
    loop_->start(op_);
    op_.res = -ECANCELED;
    op_.cancel = why;
    return;
  }
  if (buffer_wait_.queued) {  // waiting for a buffer: nothing in flight
    reg_->pool().cancel_wait(buffer_wait_);
    post_result(-ECANCELED, why);
    return;
  }
  // In flight, or a step of it queued: the loop records the request and
  // settles it (a final result queued first wins).
  loop_->cancel(op_, why);
}

Result<Buffer> RecvBufferAwaiter::make(int res, std::uint32_t flags) {
  BufferPool& pool = reg_->pool();
  if (taken_ >= 0) {  // plain: the buffer was chosen before the recv
    const auto id = static_cast<std::uint16_t>(std::exchange(taken_, -1));
    if (res > 0) return Buffer::adopt(pool, id, static_cast<std::size_t>(res));
    pool.give_back(id);
  }
  if (res < 0) {
    const char* what = reg_->flavor() == RecvRegistry::Flavor::stream ? "recv" : "recvmsg";
    if (res == -ECANCELED && op_.cancel == Cancel::deadline)
      return Error{std::make_error_code(std::errc::timed_out), what, fd_, 0};
    return Error::from_errno(-res, what, fd_);
  }
  if (!has_buffer(res, flags)) return Buffer{};  // end of stream
  return Buffer::adopt(pool, buffer_id(flags), static_cast<std::size_t>(res));
}

void RecvBufferAwaiter::disarm_timer() noexcept { loop_->disarm(*timer_); }

void RecvBufferAwaiter::finish() noexcept {
  stop_.disarm();
  if (timer_live()) disarm_timer();
  if (st_ && st_->waiter == this) st_->waiter = nullptr;
  reg_->pool().cancel_wait(buffer_wait_);
  if (static_cast<unsigned>(op_.state) - 1u < 2u) loop_->abandon(op_);  // frees a handed buffer
  if (taken_ >= 0) reg_->pool().give_back(static_cast<std::uint16_t>(std::exchange(taken_, -1)));
}

}  // namespace lev::detail
