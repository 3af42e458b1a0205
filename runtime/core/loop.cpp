// The Loop: op registry, completion queue, timers, rounds. The one place
// where operations are delivered (deliver) and where the cancel/complete
// race is settled (cancel + the backend contract: exactly one completion
// per submitted op). See docs/cancellation.md.
#include "lev/loop.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <system_error>

#include "core/fd_hooks.hpp"
#include "lev/fake.hpp"
#include "proactor/uring/uring_backend.hpp"
#include "reactor/epoll/epoll_backend.hpp"

namespace lev {

namespace detail {

// The loop running on this thread (inside run() or block_on()), if any.
thread_local Loop* t_running = nullptr;

void abandon_op(Loop& loop, OpBase& op) noexcept { loop.abandon(op); }
bool loop_links_timeouts(Loop& loop) noexcept { return loop.uring_backend_ != nullptr; }
void begin_external(Loop& loop, OpBase& op) noexcept { loop.begin_external(op); }
void post_op_to(Loop& loop, OpBase& op) noexcept { loop.post_op(op); }

void release_undelivered(OpBase& op) noexcept {
  if (op.select && op.res > 0 && (op.cqe_flags & IORING_CQE_F_BUFFER)) {
    // A pool buffer nobody will take (a recv op's is not counted yet).
    if (op.kind == OpKind::recv) op.pool->claim();
    op.pool->give_back(static_cast<std::uint16_t>(op.cqe_flags >> IORING_CQE_BUFFER_SHIFT));
    op.select = kSelectNone;
    return;
  }
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

// Post ops handed over from any thread wait here (linked through
// link_next: a post never reaches a backend) until the loop thread takes
// them. `flagged` is set by the first post after the loop last looked, and
// only that post writes the eventfd: a busy loop costs posters no syscall.
// The waking post goes by MSG_RING when both loops are io_uring loops and
// the poster runs on its own loop's thread; by the eventfd otherwise.
struct Inbox {
  std::mutex mu;
  OpBase* head = nullptr;
  OpBase* tail = nullptr;
  std::atomic<bool> flagged{false};
  std::atomic<bool> efd_written{false};
  int efd = -1;
  int ring_fd = -1;  // this loop's ring, when it takes MSG_RING wakes
  std::atomic<std::uint64_t> by_msg_ring{0}, by_eventfd{0};

  void wake() noexcept {
    if (flagged.exchange(true, std::memory_order_acq_rel)) return;
    if (ring_fd >= 0 && t_running && t_running->uring_backend_ &&
        t_running->uring_backend_->send_wake(ring_fd, efd)) {
      by_msg_ring.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    by_eventfd.fetch_add(1, std::memory_order_relaxed);
    efd_written.store(true, std::memory_order_relaxed);
    const std::uint64_t one = 1;
    ssize_t r = ::write(efd, &one, sizeof one);
    (void)r;  // EAGAIN: the counter is already huge, so it is readable
  }
  void push(OpBase& op) noexcept {
    op.link_next = nullptr;
    {
      std::lock_guard lock(mu);
      if (tail)
        tail->link_next = &op;
      else
        head = &op;
      tail = &op;
    }
    wake();
  }
  OpBase* take() noexcept {
    flagged.store(false, std::memory_order_release);
    if (efd_written.exchange(false, std::memory_order_relaxed)) {
      std::uint64_t v;
      ssize_t r = ::read(efd, &v, sizeof v);  // re-arm the edge; EAGAIN is fine
      (void)r;
    }
    std::lock_guard lock(mu);
    OpBase* h = head;
    head = tail = nullptr;
    return h;
  }
  bool remove(OpBase& op) noexcept {
    std::lock_guard lock(mu);
    OpBase* prev = nullptr;
    for (OpBase* cur = head; cur; prev = cur, cur = cur->link_next) {
      if (cur != &op) continue;
      (prev ? prev->link_next : head) = cur->link_next;
      if (tail == cur) tail = prev;
      return true;
    }
    return false;
  }
};

void deliver_remote(OpBase& op) {
  std::unique_ptr<RemoteNode> node(static_cast<RemoteNode*>(op.ctx));
  try {
    node->run();
  } catch (...) {
    report_escaped(std::current_exception());
  }
}

// A stop request made on another thread, carried to the loop thread.
struct RemoteStop final : RemoteNode {
  StopLink* link;
  explicit RemoteStop(StopLink* l) noexcept : link(l) {}
  ~RemoteStop() override {
    if (link) link->posted_.store(nullptr, std::memory_order_relaxed);
  }
  void run() override {
    StopLink* l = std::exchange(link, nullptr);
    if (!l) return;  // the link was disarmed first
    l->posted_.store(nullptr, std::memory_order_relaxed);
    l->handler_(l->arg_);
  }
};

void StopLink::arm(Loop& loop, const std::stop_token& token, Handler handler, void* arg) {
  loop_ = &loop;
  handler_ = handler;
  arg_ = arg;
  ::new (static_cast<void*>(&posted_)) std::atomic<RemoteStop*>(nullptr);
  armed_ = true;
  ::new (static_cast<void*>(storage_)) Callback(token, Fire{this});  // runs Fire now if stopped
}

void StopLink::Fire::operator()() const noexcept {
  StopLink* s = self;
  if (s->loop_->in_loop_thread()) {
    s->handler_(s->arg_);
    return;
  }
  auto* node = new (std::nothrow) RemoteStop(s);
  if (!node) return;  // out of memory: the operation runs to its end
  s->posted_.store(node, std::memory_order_release);
  s->loop_->post_node(node);
}

void StopLink::disarm_slow() noexcept {
  armed_ = false;
  cb().~Callback();  // waits for a Fire running on another thread to return
  if (RemoteStop* n = posted_.exchange(nullptr, std::memory_order_acquire)) n->link = nullptr;
}

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
  if (options.recv_buffer_count == 0 || options.recv_buffer_count > 32768)
    throw std::invalid_argument("lev::Loop: recv_buffer_count must be between 1 and 32768");
  if (options.recv_buffer_size == 0 || options.recv_buffer_size > (1u << 30))
    throw std::invalid_argument("lev::Loop: recv_buffer_size must be between 1 and 2^30");
  recv_count_ = options.recv_buffer_count;
  recv_size_ = options.recv_buffer_size;
  backend_ = make_backend(model, options);
  if (options.ignore_sigpipe) ignore_sigpipe_if_default();
  clock_ = options.clock ? options.clock : backend_->preferred_clock();
  if (!clock_) clock_ = std::make_shared<MonotonicClock>();
  pool_ = new detail::CallbackPool;
  inbox_ = std::make_unique<detail::Inbox>();
  inbox_->efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (inbox_->efd < 0) {
    delete pool_;
    throw std::system_error(errno, std::system_category(), "lev::Loop: eventfd");
  }
  backend_->attach(ready_);
  backend_->set_wakeup_fd(inbox_->efd);
  if (auto* uring = dynamic_cast<UringBackend*>(backend_.get())) {
    uring_ = uring->fast_path();
    uring_backend_ = uring;
    inbox_->ring_fd = uring->msg_ring_target();
  }
}

Loop::~Loop() {
  // 1. Ask every live operation to stop: the backend's, then the timers.
  backend_->cancel_all();
  while (detail::OpBase* t = timers_.pop()) ready_.push(*t, -ECANCELED);
  // 2. Wait for every completion the backend still owes (kernel buffers).
  while (backend_->in_flight() > 0) backend_->poll(std::nullopt);
  // 2b. Offloaded functions still running write into their awaiters.
  while (external_ > 0) wait_inbox();
  // 3. Drop what nobody will receive, releasing carried resources.
  while (detail::OpBase* op = ready_.pop()) {
    detail::release_undelivered(*op);
    op->state = detail::OpState::delivered;
    --live_count_;
    if (op->deliver == &detail::deliver_callback) {
      auto& cb = *static_cast<detail::CallbackOp*>(op->ctx);
      cb.reset_callable();
      detail::CallbackPool::release(cb);
    } else if (op->deliver == &detail::deliver_remote) {
      delete static_cast<detail::RemoteNode*>(op->ctx);
    }
  }
  for (detail::OpBase* op = inbox_->take(); op;) {
    detail::OpBase* next = op->link_next;
    if (op->deliver == &detail::deliver_remote)
      delete static_cast<detail::RemoteNode*>(op->ctx);
    else
      op->state = detail::OpState::delivered;  // a waiter's wakeup: its frame goes next
    op = next;
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
  // 6. Results no task took; the pool goes once the last Buffer is back.
  recv_.reset();
  pool_->close_loop();
  ::close(inbox_->efd);
}

void Loop::make_recv_registry() {
  recv_ = std::make_unique<detail::RecvRegistry>(*this, *backend_, recv_count_, recv_size_);
}

void Loop::closing(int fd) noexcept { detail::fd_closing(fd); }

void Loop::post_node(detail::RemoteNode* node) noexcept {
  node->op.kind = detail::OpKind::post;
  node->op.ctx = node;
  node->op.deliver = &detail::deliver_remote;
  post_op(node->op);
}

void Loop::post_op(detail::OpBase& op) noexcept {
  if (in_loop_thread()) {
    start_local(op);
    return;
  }
  inbox_->push(op);
}

bool Loop::retract(detail::OpBase& op) noexcept { return inbox_->remove(op); }

std::size_t Loop::take_inbox() {
  if (!inbox_->flagged.load(std::memory_order_acquire)) [[likely]]
    return 0;
  std::size_t n = 0;
  for (detail::OpBase* op = inbox_->take(); op; ++n) {
    detail::OpBase* next = op->link_next;
    if (op->state == detail::OpState::submitted) {  // an external op coming back
      --external_;
      ready_.push(*op, 0);
    } else {
      start_local(*op);
    }
    op = next;
  }
  return n;
}

// Blocks until another thread posts, then takes the inbox.
void Loop::wait_inbox() {
  pollfd p{inbox_->efd, POLLIN, 0};
  if (!inbox_->flagged.load(std::memory_order_acquire)) ::poll(&p, 1, 100);
  take_inbox();
}

Loop::WakeupStats Loop::wakeup_stats() const noexcept {
  return {inbox_->by_msg_ring.load(std::memory_order_relaxed),
          inbox_->by_eventfd.load(std::memory_order_relaxed)};
}

void Loop::stop() noexcept {
  stop_.store(true, std::memory_order_release);
  if (!in_loop_thread()) inbox_->wake();
}

void Loop::start_cancelled(detail::OpBase& op) noexcept {
  op.state = detail::OpState::submitted;
  op.cancel_requested = true;
  ++live_count_;
  ready_.push(op, -ECANCELED);
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
  if (op.kind == detail::OpKind::post) return;  // runs to its end (offload)
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
  if (op.kind == detail::OpKind::post) {
    while (op.state == detail::OpState::submitted) wait_inbox();  // an offload finishing
  } else if (op.state == detail::OpState::submitted) {
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
  take_inbox();
  const detail::OpBase* t = timers_.top();
  TimePoint now{};
  if (t) now = clock_->now();
  if (!ready_.empty()) {
    timeout = Duration::zero();
  } else if (t) {
    timeout = std::max(Duration::zero(), t->deadline - now);
  } else if (backend_->in_flight() == 0 && holds_ == 0 && external_ == 0) {
    timeout = Duration::zero();  // nothing can arrive: never block forever
  }
  std::size_t n = backend_->poll(timeout);
  n += take_inbox();
  // Only a wait that may have lasted needs a fresh reading of the clock.
  if (t) n += fire_timers(timeout && *timeout == Duration::zero() ? now : clock_->now());
  n += drain_callbacks();
  return n;
}

void Loop::run() {
  owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  running_ = true;
  struct Reset {
    Loop& loop;
    Loop* outer = std::exchange(detail::t_running, &loop);
    ~Reset() {
      loop.running_ = false;
      loop.stop_.store(false, std::memory_order_relaxed);
      detail::t_running = outer;
    }
  } reset{*this};
  while (!stop_.load(std::memory_order_acquire)) {
    // Multishot recvs armed for fds nobody is reading now do not count:
    // they wait for no one.
    if ((live_count_ == 0 || (recv_ && recv_->only_unread_multishots(live_count_))) &&
        ready_.empty() && holds_ == 0 && !inbox_->flagged.load(std::memory_order_acquire))
      break;
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
    Loop* outer = std::exchange(detail::t_running, &loop);
    ~Cleanup() {
      detail::t_running = outer;
      if (!h.done()) {
        loop.abandon(h.promise().start);
        detail::unlink_root(loop, h.promise());
      }
      h.destroy();
    }
  } cleanup{*this, h};
  while (!h.done()) {
    std::size_t n = run_once();
    if (n == 0 && !h.done() && ready_.empty() && timers_.empty() && backend_->in_flight() == 0 &&
        holds_ == 0 && external_ == 0)
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
