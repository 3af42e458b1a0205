// The Loop: op registry, completion queue, timers, rounds. The one place
// where operations are delivered (deliver) and where the cancel/complete
// race is settled (cancel + the backend contract: exactly one completion
// per submitted op). See docs/cancellation.md.
#include "lev/loop.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <system_error>

#include "core/fd_hooks.hpp"
#include "lev/fake.hpp"
#include "proactor/uring/uring_backend.hpp"
#include "reactor/epoll/epoll_backend.hpp"

namespace lev {

namespace detail {

void abandon_op(Loop& loop, OpBase& op) noexcept { loop.abandon(op); }

void release_undelivered(OpBase& op) noexcept {
  if (op.kind == OpKind::accept && op.res >= 0) {
    fd_closing(op.res);
    ::close(op.res);
    op.res = -ECANCELED;
  }
}

void link_root(Loop& loop, RootPromise& p) noexcept {
  p.prev = nullptr;
  p.next = loop.roots_;
  if (loop.roots_) loop.roots_->prev = &p;
  loop.roots_ = &p;
}

void unlink_root(Loop& loop, RootPromise& p) noexcept {
  if (p.prev)
    p.prev->next = p.next;
  else if (loop.roots_ == &p)
    loop.roots_ = p.next;
  if (p.next) p.next->prev = p.prev;
  p.prev = p.next = nullptr;
}

void report_escaped(std::exception_ptr e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "lev: a spawned task ended with an exception: %s\n", ex.what());
  } catch (...) {
    std::fprintf(stderr, "lev: a spawned task ended with a non-standard exception\n");
  }
}

void deliver_callback(OpBase& op);

}  // namespace detail

namespace {

std::shared_ptr<CompletionBackend> make_backend(Model model, const LoopOptions& o) {
  if (o.backend.object()) return o.backend.object();
  std::string name = o.backend.name();
  if (model == Model::reactor) {
    if (name.empty() || name == "epoll") return std::make_shared<EpollBackend>();
    if (name == "fake") return std::make_shared<FakeBackend>();
    throw std::invalid_argument("lev::Loop: unknown backend '" + name +
                                "' for the reactor (known: epoll, fake)");
  }
  if (name.empty()) name = "uring";
  if (name == "uring") return std::make_shared<UringBackend>(o);
  if (name == "fake") return std::make_shared<FakeBackend>();
  if (name == "epoll") return std::make_shared<EpollBackend>();
  if (name == "auto") {
    const char* force = std::getenv("LEV_FORCE_EPOLL");
    try {
      if (!force || !*force) return std::make_shared<UringBackend>(o);
      std::fprintf(stderr, "lev: LEV_FORCE_EPOLL is set; using the epoll completion backend\n");
    } catch (const std::system_error& e) {
      std::fprintf(stderr, "lev: %s; using the epoll completion backend\n", e.what());
    }
    return std::make_shared<EpollBackend>();
  }
  throw std::invalid_argument("lev::Loop: unknown backend '" + name +
                              "' for the proactor (known: uring, epoll, auto, fake)");
}

void ignore_sigpipe_if_default() {
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    ::sigemptyset(&ign.sa_mask);
    ::sigaction(SIGPIPE, &ign, nullptr);
  }
}

}  // namespace

Loop::Loop(Model model, LoopOptions options) : model_(model) {
  if (options.queue_size == 0)
    throw std::invalid_argument("lev::Loop: queue_size must be greater than 0");
  if (options.queue_size > 32768)
    throw std::invalid_argument("lev::Loop: queue_size must be at most 32768");
  if (options.cqe_entries != 0 && options.cqe_entries < options.queue_size)
    throw std::invalid_argument("lev::Loop: cqe_entries must be 0 or at least queue_size");
  backend_ = make_backend(model, options);
  if (options.ignore_sigpipe) ignore_sigpipe_if_default();
  clock_ = options.clock ? options.clock : backend_->preferred_clock();
  if (!clock_) clock_ = std::make_shared<MonotonicClock>();
  pool_ = new detail::CallbackPool;
  backend_->attach(ready_);
  if (auto* uring = dynamic_cast<UringBackend*>(backend_.get())) uring_ = uring->fast_path();
}

Loop::~Loop() {
  // 1. Ask every live operation to stop: the backend's, then the timers.
  backend_->cancel_all();
  while (detail::OpBase* t = timers_.pop()) ready_.push(*t, -ECANCELED);
  // 2. Wait for every completion the backend still owes (kernel buffers).
  while (backend_->in_flight() > 0) backend_->poll(std::nullopt);
  // 3. Drop what nobody will receive, releasing carried resources.
  while (detail::OpBase* op = ready_.pop()) {
    detail::release_undelivered(*op);
    op->state = detail::OpState::delivered;
    --live_count_;
    if (op->deliver == &detail::deliver_callback) {
      auto& cb = *static_cast<detail::CallbackOp*>(op->ctx);
      cb.reset_callable();
      detail::CallbackPool::release(cb);
    }
  }
  // 4. Event sources whose handles outlive the loop must not reach it.
  while (sources_) sources_->detach();
  signals_.reset();
  // 5. Destroy suspended spawned tasks (their ops are all settled now).
  while (roots_) {
    detail::RootPromise* p = roots_;
    detail::unlink_root(*this, *p);
    detail::RootHandle::from_promise(*p).destroy();
  }
  pool_->close_loop();
}

void Loop::start_local(detail::OpBase& op) {
  op.state = detail::OpState::submitted;
  ++live_count_;
  if (op.kind == detail::OpKind::timer) {
    op.seq = timer_seq_++;
    timers_.push(op);
  } else {
    ready_.push(op, 0);  // post: complete at once, delivered from the queue
  }
}

void Loop::cancel(detail::OpBase& op) noexcept {
  if (op.state == detail::OpState::completed && op.kind == detail::OpKind::timer && op.res == 0 &&
      !op.cancel_requested) {
    // A queued expiry has had no effect outside the loop: the cancel wins.
    op.cancel_requested = true;
    op.res = -ECANCELED;
    return;
  }
  if (op.state != detail::OpState::submitted || op.cancel_requested) return;
  op.cancel_requested = true;
  if (op.kind == detail::OpKind::timer) {
    timers_.remove(op);
    ready_.push(op, -ECANCELED);
    return;
  }
  try {
    backend_->cancel(op);
  } catch (const std::exception& e) {
    // The op will still complete on its own; cancellation is a request.
    std::fprintf(stderr, "lev: cancel of %s failed: %s\n", detail::op_name(op.kind), e.what());
  }
}

void Loop::abandon(detail::OpBase& op) noexcept {
  if (op.state == detail::OpState::submitted) {
    cancel(op);
    while (op.state == detail::OpState::submitted) backend_->poll(std::nullopt);
  }
  if (op.state == detail::OpState::completed) {
    ready_.remove(op);
    detail::release_undelivered(op);
    --live_count_;
  }
  op.state = detail::OpState::delivered;
}

void Loop::disarm(detail::OpBase& op) noexcept {
  if (op.kind == detail::OpKind::timer && op.state == detail::OpState::submitted &&
      !op.cancel_requested) {
    timers_.remove(op);  // no completion to queue: nobody waits for it
    op.state = detail::OpState::delivered;
    --live_count_;
    return;
  }
  abandon(op);
}

namespace detail {
void disarm_op(Loop& loop, OpBase& op) noexcept { loop.disarm(op); }
void cancel_op(Loop& loop, OpBase& op) noexcept { loop.cancel(op); }
TimePoint loop_now(Loop& loop) noexcept { return loop.now(); }
}  // namespace detail

// send_all / write_all: true when a partial completion was resubmitted (the
// op stays live); false when it is finished and must be delivered.
bool Loop::continue_all(detail::OpBase& op) {
  if (op.res < 0) return false;
  op.done += static_cast<std::size_t>(op.res);
  if (op.done >= op.total) return false;
  if (op.res == 0) {
    op.res = -EIO;  // the kernel accepted nothing: stop rather than spin
    return false;
  }
  if (op.cancel_requested) {
    op.res = -ECANCELED;
    return false;
  }
  op.buf = static_cast<char*>(op.buf) + op.res;
  if (op.offset != static_cast<std::uint64_t>(-1)) op.offset += static_cast<unsigned>(op.res);
  op.len = static_cast<std::uint32_t>(std::min(op.total - op.done, detail::kMaxIoChunk));
  op.state = detail::OpState::submitted;
  op.cancel_requested = false;
  backend_->submit(op);
  return true;
}

std::size_t Loop::drain_callbacks() {
  // Deliver up to what is queued now; later arrivals wait for the next round
  // (so a task that keeps posting cannot starve the backend). If `last` is
  // taken out of the queue meanwhile (abandoned), the queue is drained.
  detail::OpBase* last = ready_.back();
  std::size_t n = 0;
  while (detail::OpBase* op = ready_.pop()) {
    ++n;
    const bool final = op == last;
    if (op->all) [[unlikely]] {
      const auto res = static_cast<std::size_t>(op->res);
      if (op->res >= 0 && op->done + res >= op->total) {
        op->done += res;  // finished in one submission: the common case
      } else if (continue_all(*op)) {
        if (final) break;
        continue;
      }
    }
    op->state = detail::OpState::delivered;
    --live_count_;
    if (op->deliver)
      op->deliver(*op);
    else
      std::coroutine_handle<>::from_address(op->ctx).resume();
    if (final) break;
  }
  return n;
}

std::size_t Loop::fire_timers(TimePoint now) {
  std::size_t n = 0;
  detail::OpBase* top = nullptr;
  while ((top = timers_.top()) && top->deadline <= now) {
    timers_.pop();
    ready_.push(*top, 0);
    ++n;
  }
  return n;
}

std::size_t Loop::run_once() {
  std::optional<Duration> timeout;
  const detail::OpBase* t = timers_.top();
  TimePoint now{};
  if (t) now = clock_->now();
  if (!ready_.empty()) {
    timeout = Duration::zero();
  } else if (t) {
    timeout = std::max(Duration::zero(), t->deadline - now);
  } else if (backend_->in_flight() == 0) {
    timeout = Duration::zero();  // nothing can arrive: never block forever
  }
  std::size_t n = backend_->poll(timeout);
  // Only a wait that may have lasted needs a fresh reading of the clock.
  if (t) n += fire_timers(timeout && *timeout == Duration::zero() ? now : clock_->now());
  n += drain_callbacks();
  return n;
}

void Loop::run() {
  running_ = true;
  stop_ = false;
  struct Reset {
    bool& flag;
    ~Reset() { flag = false; }
  } reset{running_};
  while (!stop_) {
    if (live_count_ == 0 && ready_.empty()) break;
    run_once();
  }
}

void Loop::launch_root(detail::RootHandle h, bool detached) {
  detail::RootPromise& p = h.promise();
  p.loop = this;
  p.detached = detached;
  detail::link_root(*this, p);
  p.start.kind = detail::OpKind::post;
  p.start.ctx = h.address();
  p.start.deliver = nullptr;  // resume the root's coroutine
  start(p.start);
}

void Loop::run_root(detail::RootHandle h) {
  struct Cleanup {
    Loop& loop;
    detail::RootHandle h;
    ~Cleanup() {
      if (!h.done()) {
        loop.abandon(h.promise().start);
        detail::unlink_root(loop, h.promise());
      }
      h.destroy();
    }
  } cleanup{*this, h};
  while (!h.done()) {
    std::size_t n = run_once();
    if (n == 0 && !h.done() && ready_.empty() && timers_.empty() && backend_->in_flight() == 0)
      throw std::logic_error(
          "lev::Loop::block_on: the task is waiting on nothing that can complete");
  }
}

bool CompletionQueue::remove(detail::OpBase& op) noexcept {
  detail::OpBase* prev = nullptr;
  for (detail::OpBase* cur = head_; cur; prev = cur, cur = cur->next) {
    if (cur != &op) continue;
    if (prev)
      prev->next = cur->next;
    else
      head_ = cur->next;
    if (tail_ == cur) tail_ = prev;
    cur->next = nullptr;
    return true;
  }
  return false;
}

}  // namespace lev
