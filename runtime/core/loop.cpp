// The Loop: op registry, completion queue, timers, rounds. The one place
// where operations are delivered (deliver) and where the cancel/complete
// race is settled (cancel + the backend contract: exactly one completion
// per submitted op). See docs/cancellation.md.
#include "lev/loop.hpp"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <system_error>

#include "core/fd_hooks.hpp"
#include "core/inbox.hpp"
#include "lev/fake.hpp"
#include "lev/log.hpp"
#include "proactor/uring/uring_backend.hpp"
#include "reactor/epoll/epoll_backend.hpp"
#include "reactor/watched_fds.hpp"

namespace lev {

namespace detail {

std::atomic<void (*)()> before_eventfd_wake{nullptr};

// The loop running on this thread (inside run() or block_on()), if any.
thread_local Loop* t_running = nullptr;

void abandon_op(Loop& loop, OpBase& op) noexcept { loop.abandon(op); }
bool loop_links_timeouts(Loop& loop) noexcept { return loop.links_timeouts_; }
void begin_external(Loop& loop, OpBase& op) noexcept { loop.begin_external(op); }
void post_op_to(Loop& loop, OpBase& op) noexcept { loop.post_op(op); }
void post_join_wakeup(Loop& loop, OpBase& op) noexcept { loop.start(op); }

void wrong_thread() noexcept {
  log_message(LogLevel::error,
              "an operation was started on a thread that does not own its Loop (a Loop and its "
              "operations belong to one thread: from other threads, post() to it)");
  std::abort();
}

void close_cancelled(OpBase& op) noexcept {
  if (op.res != -ECANCELED) return;
  ::close(op.fd);  // it never reached the kernel (a backend's teardown): close it here
  op.res = 0;
}

void release_undelivered(OpBase& op) noexcept {
  if (op.flow & kFlowClose) {
    close_cancelled(op);
    return;
  }
  if (op.select && op.res > 0 && (op.cqe_flags & IORING_CQE_F_BUFFER)) {
    // A pool buffer nobody will take (a recv op's is not counted yet).
    if (op.kind == OpKind::recv || op.kind == OpKind::recvmsg) op.pool->claim();
    op.pool->give_back(static_cast<std::uint16_t>(op.cqe_flags >> IORING_CQE_BUFFER_SHIFT));
    op.select = kSelectNone;
    return;
  }
  if ((op.kind == OpKind::accept || op.kind == OpKind::openat) && op.res >= 0) {
    fd_closing(op.res);
    ::close(op.res);
    op.res = -ECANCELED;
  }
}

bool is_intermediate(const OpBase& op) noexcept {
  if (op.flow & kFlowRetry) return op.res == -EOPNOTSUPP;
  if (op.flow & kFlowHook) return op.cont->intermediate(op);
  if (op.flow & kFlowAll)
    return op.res > 0 && op.done + static_cast<std::size_t>(op.res) < op.total;
  return false;
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
    log_message(LogLevel::error,
                std::string("a spawned task ended with an exception: ") + ex.what());
  } catch (...) {
    log_message(LogLevel::error, "a spawned task ended with a non-standard exception");
  }
}

void deliver_callback(OpBase& op);

void Inbox::wake() noexcept {
  if (flagged.exchange(true, std::memory_order_acq_rel)) return;
  if (ring_fd >= 0 && t_running && t_running->uring_backend_ &&
      t_running->uring_backend_->send_wake(ring_fd, *this)) {
    by_msg_ring.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  wake_by_eventfd();
}

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
  TokenLink* link;
  explicit RemoteStop(TokenLink* l) noexcept : link(l) {}
  ~RemoteStop() override {
    if (link) link->posted_.store(nullptr, std::memory_order_relaxed);
  }
  void run() override {
    TokenLink* l = std::exchange(link, nullptr);
    if (!l) return;  // the link was disarmed first
    l->posted_.store(nullptr, std::memory_order_relaxed);
    l->handler_(l->arg_);
  }
};

void TokenLink::arm(Loop& loop, const std::stop_token& token, Handler handler, void* arg) {
  loop_ = &loop;
  handler_ = handler;
  arg_ = arg;
  ::new (static_cast<void*>(&posted_)) std::atomic<RemoteStop*>(nullptr);
  armed_ = true;
  ::new (static_cast<void*>(storage_)) Callback(token, Fire{this});  // runs Fire now if stopped
}

void TokenLink::Fire::operator()() const noexcept {
  TokenLink* s = self;
  if (s->loop_->in_loop_thread()) {
    s->handler_(s->arg_);
    return;
  }
  auto* node = new (std::nothrow) RemoteStop(s);
  if (!node) return;  // out of memory: the operation runs to its end
  s->posted_.store(node, std::memory_order_release);
  s->loop_->post_node(node);
}

void TokenLink::disarm_slow() noexcept {
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
    if (name.empty() || name == "epoll") return std::make_shared<EpollBackend>(static_cast<unsigned>(o.file_workers));
    if (name == "fake") return std::make_shared<FakeBackend>();
    throw std::invalid_argument("lev::Loop: unknown backend '" + name +
                                "' for the reactor (known: epoll, fake)");
  }
  if (name.empty()) name = "uring";
  if (name == "uring") return std::make_shared<UringBackend>(o);
  if (name == "fake") return std::make_shared<FakeBackend>();
  if (name == "epoll") return std::make_shared<EpollBackend>(static_cast<unsigned>(o.file_workers));
  if (name == "auto") {
    const char* force = std::getenv("LEV_FORCE_EPOLL");
    try {
      if (!force || !*force) return std::make_shared<UringBackend>(o);
      log_message(LogLevel::info, "LEV_FORCE_EPOLL is set; using the epoll completion backend");
    } catch (const std::system_error& e) {
      std::string_view why = e.what();
      if (why.starts_with("lev: ")) why.remove_prefix(5);
      log_message(LogLevel::warning, std::string(why) + "; using the epoll completion backend");
    }
    return std::make_shared<EpollBackend>(static_cast<unsigned>(o.file_workers));
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
  // Each count in its range (std::size_t holds what no backend takes).
  auto check = [](const char* name, std::size_t v, std::size_t lo, std::size_t hi,
                  const char* range) {
    if (v < lo || v > hi)
      throw std::invalid_argument(std::string("lev::Loop: ") + name + " must be " + range +
                                  " (got " + std::to_string(v) + ")");
  };
  check("queue_size", options.queue_size, 1, 32768, "between 1 and 32768");
  if (options.cqe_entries != 0)
    check("cqe_entries", options.cqe_entries, options.queue_size, 65536,
          "0 or between queue_size and 65536");
  check("submit_batch_size", options.submit_batch_size, 0, 32768, "at most 32768");
  check("file_workers", options.file_workers, 1, 65536, "between 1 and 65536");
  check("recv_buffer_count", options.recv_buffer_count, 1, 32768, "between 1 and 32768");
  check("recv_buffer_size", options.recv_buffer_size, 1, std::size_t{1} << 30,
        "between 1 and 2^30");
  check("datagram_buffer_count", options.datagram_buffer_count, 1, 32768, "between 1 and 32768");
  check("datagram_buffer_size", options.datagram_buffer_size, 1, std::size_t{1} << 30,
        "between 1 and 2^30");
  if (options.timer_slack &&
      (*options.timer_slack < Duration::zero() || *options.timer_slack > std::chrono::seconds(1)))
    throw std::invalid_argument(
        "lev::Loop: timer_slack must be between 0 and 1 s (got " +
        std::to_string(options.timer_slack->count()) + " ns)");
  fixed_slack_ = options.timer_slack;
  note_thread();
  auto link = std::make_unique<detail::CloseLink>(*this);  // first: nothing to undo if it throws
  recv_count_ = static_cast<std::uint32_t>(options.recv_buffer_count);  // checked above
  recv_size_ = static_cast<std::uint32_t>(options.recv_buffer_size);
  dgram_count_ = static_cast<std::uint32_t>(options.datagram_buffer_count);
  dgram_size_ = static_cast<std::uint32_t>(options.datagram_buffer_size);
  backend_ = make_backend(model, options);
  if (options.ignore_sigpipe) ignore_sigpipe_if_default();
  clock_ = options.clock ? options.clock : backend_->preferred_clock();
  if (!clock_) clock_ = std::make_shared<MonotonicClock>();
  round_now_ = clock_->now();
  const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) throw std::system_error(errno, std::system_category(), "lev::Loop: eventfd");
  inbox_ = new detail::Inbox;
  inbox_->efd = efd;
  try {
    backend_->attach(ready_);
    backend_->set_wakeup_fd(inbox_->efd);
  } catch (...) {
    inbox_->release();
    throw;
  }
  pool_ = new detail::CallbackPool;
  links_timeouts_ = backend_->features().linked_timeouts;
  if (auto* uring = dynamic_cast<UringBackend*>(backend_.get())) {
    uring_ = uring->fast_path();
    uring_backend_ = uring;
    inbox_->ring_fd = uring->msg_ring_target();
  }
  if (auto* epoll = dynamic_cast<EpollBackend*>(backend_.get())) {
    link->epoll = epoll;
    epoll->set_marks(link->marks);
    reactor_ = epoll;
  }
  close_link_ = link.release();
  close_link_->enlist();  // from here on, closes on any thread reach this loop
}

namespace {
// An op nobody will receive (teardown): the resource its result carries is
// released, its callback record or posted node freed, its frame left to
// whoever destroys it.
void drop_undelivered(detail::OpBase& op) noexcept {
  detail::release_undelivered(op);
  op.state = detail::OpState::delivered;
  if (op.deliver == &detail::deliver_callback) {
    auto& cb = *static_cast<detail::CallbackOp*>(op.ctx);
    cb.reset_callable();
    detail::CallbackPool::release(cb);
  } else if (op.deliver == &detail::deliver_remote) {
    delete static_cast<detail::RemoteNode*>(op.ctx);
  }
}
}  // namespace

Loop::~Loop() {
  // 0. The destroying thread owns the loop now: its closes (a task's Fd
  //    destroyed below) reach it at once.
  adopt_thread();
  // 1. Ask every live operation to stop: the backend's, then the timers.
  backend_->cancel_all();
  while (detail::OpBase* t = timers_.pop()) ready_.push(*t, -ECANCELED);
  // 2. Wait for every completion the backend still owes (kernel buffers).
  while (backend_->in_flight() > 0) backend_->poll(std::nullopt);
  // 2b. Offloaded functions still running write into their awaiters.
  while (external_ > 0) wait_inbox();
  // 3. Drop what nobody will receive, releasing carried resources.
  drop_queued();
  // 4. Event sources whose handles outlive the loop must not reach it.
  while (sources_) sources_->detach();
  signals_.reset();
  // 5. Destroy suspended spawned tasks (their ops are all settled now).
  //    Their destructors may still post (to the queue, or from another
  //    thread to the inbox): drop until both stay empty, then close the
  //    inbox, so that a later cross-thread post is dropped by its poster.
  while (roots_) {
    detail::RootPromise* p = roots_;
    detail::unlink_root(*this, *p);
    detail::RootHandle::from_promise(*p).destroy();
  }
  drop_queued();
  for (detail::OpBase* op = inbox_->close(); op;) {
    detail::OpBase* next = op->link_next;
    drop_undelivered(*op);
    op = next;
  }
  // 6. Callback timers never delivered: dropped, their callbacks never
  //    called (the queue, which lent their markers, is empty for good).
  if (tslab_) {
    tslab_->close_loop();
    tslab_ = nullptr;
  }
  //    Results no task took; the pool goes once the last Buffer is back.
  recv_.reset();
  dgram_.reset();
  pool_->close_loop();
  inbox_->release();  // the eventfd closes with the last waker's reference
  close_link_->delist();
  delete close_link_;
}

// Teardown: drops the completion queue and the inbox until both are empty.
void Loop::drop_queued() noexcept {
  for (;;) {
    bool any = false;
    while (detail::OpBase* op = ready_.pop()) {
      any = true;
      --live_count_;
      drop_undelivered(*op);
    }
    for (detail::OpBase* op = inbox_->take(); op;) {
      any = true;
      detail::OpBase* next = op->link_next;
      drop_undelivered(*op);  // a waiter's wakeup is only marked: its frame goes next
      op = next;
    }
    if (!any) return;
  }
}

void Loop::make_recv_registry() {
  recv_ = std::make_unique<detail::RecvRegistry>(*this, *backend_, recv_count_, recv_size_);
}

void Loop::make_datagram_registry() {
  dgram_ = std::make_unique<detail::RecvRegistry>(
      *this, *backend_, dgram_count_,
      static_cast<std::uint32_t>(dgram_size_ + detail::DatagramLayout::header),
      detail::RecvRegistry::Flavor::datagram);
}

bool Loop::only_idle_ops() const noexcept {
  std::size_t idle = (recv_ ? recv_->armed() : 0) + (dgram_ ? dgram_->armed() : 0);
  if (weak_sources_) [[unlikely]]
    for (const detail::Source* s = sources_; s; s = s->src_next)
      if (!s->keeps_alive) idle += s->live_ops();
  if (idle != live_count_) return false;
  // A multishot someone waits on is not idle.
  return !(recv_ && recv_->has_waiter()) && !(dgram_ && dgram_->has_waiter());
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
  if (!inbox_->push(op) && op.deliver == &detail::deliver_remote)
    delete static_cast<detail::RemoteNode*>(op.ctx);  // the loop is closing: dropped
}

bool Loop::retract(detail::OpBase& op) noexcept { return inbox_->remove(op); }

inline std::size_t Loop::take_inbox() {
  if (!inbox_->flagged.load(std::memory_order_acquire)) [[likely]]
    return 0;
  return take_inbox_slow();
}

std::size_t Loop::take_inbox_slow() {
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
  if (in_loop_thread()) {
    stop_.store(true, std::memory_order_release);
    return;
  }
  // Another thread: once stop_ is seen the loop may end and be destroyed,
  // so take what the wake needs first, and hold the inbox through it.
  detail::Inbox* box = inbox_;
  box->add_ref();
  stop_.store(true, std::memory_order_release);
  box->wake();
  box->release();
}

void Loop::start_cancelled(detail::OpBase& op, detail::Cancel why) noexcept {
  op.state = detail::OpState::submitted;
  op.cancel = why;
  ++live_count_;
  ++counters_.submitted[static_cast<std::size_t>(op.kind)];
  ready_.push(op, -ECANCELED);
}

void Loop::start_failed(detail::OpBase& op, int res) noexcept {
  op.state = detail::OpState::submitted;
  ++live_count_;
  ++counters_.submitted[static_cast<std::size_t>(op.kind)];
  ready_.push(op, res);
}

void Loop::start_local(detail::OpBase& op) {
  op.state = detail::OpState::submitted;
  ++live_count_;
  ++counters_.submitted[static_cast<std::size_t>(op.kind)];
  if (trace_) [[unlikely]]
    trace(TraceEvent::op_submitted, op);
  if (op.kind == detail::OpKind::timer) {
    ++counters_.timers_armed;
    op.seq = timer_seq_++;
    timers_.push(op);
  } else {
    ready_.push(op, 0);  // post: complete at once, delivered from the queue
  }
}

void Loop::cancel(detail::OpBase& op, detail::Cancel why) noexcept {
  using detail::OpState;
  if (op.cancel != detail::Cancel::none) return;  // recorded once: the first request stands
  switch (op.state) {
    case OpState::submitted:
      // A post runs to its end (offload, a resumption); a close too (the fd
      // is released already: it must be closed, whatever happens).
      if (op.kind == detail::OpKind::post || op.kind == detail::OpKind::close) return;
      op.cancel = why;
      if (op.kind == detail::OpKind::timer) {
        timers_.remove(op);
        ready_.push(op, -ECANCELED);
        return;
      }
      try {
        backend_->cancel(op);
      } catch (const std::exception& e) {
        // The op will still complete on its own; cancellation is a request,
        // and settle() honours the recorded one at the next step.
        log_message(LogLevel::error,
                    std::string("cancel of ") + detail::op_name(op.kind) + " failed: " + e.what());
      }
      return;
    case OpState::completed:
      if (op.kind == detail::OpKind::timer && op.res == 0) {
        // A queued expiry has had no effect outside the loop: the cancel wins.
        op.cancel = why;
        op.res = -ECANCELED;
      } else if (op.flow && detail::is_intermediate(op)) {
        op.cancel = why;  // settle() delivers it cancelled instead of continuing it
      }
      return;  // a final result wins: it may carry a side effect the caller must see
    case OpState::delivered:
      op.cancel = why;  // every(): asked from inside its own callback, so not re-armed
      return;
    case OpState::idle:
      return;
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
      op.cancel == detail::Cancel::none) {
    timers_.remove(op);  // no completion to queue: nobody waits for it
    op.state = detail::OpState::delivered;
    --live_count_;
    return;
  }
  abandon(op);
}

namespace detail {
void disarm_op(Loop& loop, OpBase& op) noexcept { loop.disarm(op); }
void cancel_op(Loop& loop, OpBase& op, Cancel why) noexcept { loop.cancel(op, why); }
TimePoint loop_now(Loop& loop) noexcept { return loop.now(); }
}  // namespace detail

// The one place that decides, for an op whose result is queued, whether it
// is delivered now (true) or continues and stays live (false). Every
// continuation lev has goes through here and asks the recorded cancel
// first: send_all / write_all resubmitting the rest (kFlowAll), a refused
// zero-copy send going out plain (kFlowRetry), recv(fd) going from
// readiness to the recv or waiting for a pool buffer (kFlowHook). A
// cancelled intermediate result is delivered as ECANCELED (timed_out for
// a deadline), with the bytes already moved in `done`. docs/cancellation.md
// tables every continuation against cancel, stop, deadline and teardown.
bool Loop::settle(detail::OpBase& op) noexcept {
  using namespace detail;
  if (!is_intermediate(op)) {
    if (op.flow & kFlowClose) {
      close_cancelled(op);
    } else if (op.flow & kFlowAll) {
      if (op.res > 0)
        op.done += static_cast<std::size_t>(op.res);
      else if (op.res == 0 && op.done < op.total)
        op.res = -EIO;  // the kernel accepted nothing: stop rather than spin
    }
    return true;
  }
  if (op.cancel != Cancel::none) {
    if ((op.flow & kFlowAll) && op.res > 0) op.done += static_cast<std::size_t>(op.res);
    op.res = -ECANCELED;
    return true;
  }
  if (op.flow & kFlowHook) {
    // The owner continues: this step is over (it may start the op again).
    op.state = OpState::delivered;
    --live_count_;
    op.cont->next(op);
    return false;
  }
  if (op.flow & kFlowRetry) {
    op.flow &= static_cast<std::uint8_t>(~kFlowRetry);  // once: it goes out plain now
  } else {                                              // kFlowAll: the rest of the buffer
    const auto moved = static_cast<std::size_t>(op.res);
    op.done += moved;
    op.buf = static_cast<char*>(op.buf) + moved;
    if (op.offset != static_cast<std::uint64_t>(-1)) op.offset += moved;
    op.len = static_cast<std::uint32_t>(std::min(op.total - op.done, kMaxIoChunk));
  }
  try {
    resubmit(op);
    return false;
  } catch (const std::system_error& e) {
    op.res = e.code().value() > 0 ? -e.code().value() : -EIO;
  } catch (const std::exception&) {
    op.res = -EIO;
  }
  return true;  // could not go on: delivered with the error (and `done`)
}

// A continuing op goes back to the backend; it is marked submitted only
// once the backend took it (a submit that throws leaves it completed).
void Loop::resubmit(detail::OpBase& op) {
  backend_->submit(op);
  op.state = detail::OpState::submitted;
}

// A round that fires thousands of timers delivers them one after another,
// each touching a node (or a frame) last seen when it fired: what the
// record a few places ahead will touch is fetched meanwhile. Walked afresh
// from the queue's head each time (a delivery may take records out).
[[gnu::always_inline]] inline void Loop::prefetch_ahead() const noexcept {
  constexpr int kAhead = 4;
  const detail::OpBase* ahead = ready_.front();
  for (int i = 0; i < kAhead && ahead; ++i) ahead = ahead->next;
  if (ahead) __builtin_prefetch(ahead->ctx);
}

std::size_t Loop::drain_callbacks() {
  // Deliver up to what is queued now; later arrivals wait for the next round
  // (so a task that keeps posting cannot starve the backend). If `last` is
  // taken out of the queue meanwhile (abandoned), the queue is drained.
  detail::OpBase* last = ready_.back();
  std::size_t n = 0;
  while (detail::OpBase* op = ready_.pop()) {
    ++n;
    if (op->kind == detail::OpKind::timer) [[unlikely]]
      prefetch_ahead();
    const bool final = op == last;
    if (op->flow && !settle(*op)) [[unlikely]] {
      if (final) break;
      continue;
    }
    op->state = detail::OpState::delivered;
    --live_count_;
    ++counters_.completed[static_cast<std::size_t>(op->kind)];
    if (trace_) [[unlikely]] {
      trace(TraceEvent::op_completed, *op);
      if (!op->deliver) trace(TraceEvent::task_resumed, *op);
    }
    if (op->deliver)
      op->deliver(*op);
    else
      std::coroutine_handle<>::from_address(op->ctx).resume();
    if (final) break;
  }
  if (n) {
    ++counters_.drains;
    counters_.drained += n;
    if (n > counters_.max_per_drain) counters_.max_per_drain = n;
  }
  return n;
}

void Loop::trace_now(const detail::OpBase& op) const {
  trace(TraceEvent::op_submitted, op);
  trace(TraceEvent::op_completed, op);
}

void Loop::trace(TraceEvent event, const detail::OpBase& op) const {
  TraceRecord r;
  r.event = event;
  r.op = detail::op_name(op.kind);
  r.fd = op.fd;
  r.result = event == TraceEvent::op_submitted ? 0 : op.res;
  r.id = &op;
  (*trace_)(r);
}

void Loop::set_trace_hook(TraceHook hook) {
  if (hook)
    trace_ = std::make_unique<TraceHook>(std::move(hook));
  else
    trace_.reset();
}

static_assert(static_cast<std::size_t>(detail::OpKind::post) < detail::LoopCounters::kKinds);

LoopStats Loop::stats() const {
  LoopStats st;
  for (std::size_t k = 0; k <= static_cast<std::size_t>(detail::OpKind::post); ++k) {
    const std::uint64_t sub = counters_.submitted[k], done = counters_.completed[k];
    st.submitted += sub;
    st.completed += done;
    if (sub || done) st.ops.push_back({detail::op_name(static_cast<detail::OpKind>(k)), sub, done});
  }
  const BackendStats b = backend_->stats();
  st.kernel_enters = b.kernel_enters;
  st.cq_overflows = b.cq_overflows;
  st.cq_dropped = b.cq_dropped;
  st.drains = counters_.drains;
  st.drained = counters_.drained;
  st.max_per_drain = counters_.max_per_drain;
  st.timers_armed = counters_.timers_armed;
  st.live_ops = live_count_;
  return st;
}

// Queues what is due at `now` (at most kFireBudget), awaited timers (and
// deadlines) and callback timers (after / at) merged in one order:
// deadline, then arming order (both take their order from timer_seq_).
// Nothing is called here: every expiry is delivered by the drain, so what
// a callback queues comes after the round's timers, whatever was queued
// before them.
std::size_t Loop::fire_timers(TimePoint now) {
  std::size_t n = 0;
  const std::int64_t t = now.time_since_epoch().count();
  while (n < kFireBudget) {
    detail::OpBase* op = timers_.top();
    const detail::TimerSlab::Entry* e = tslab_ ? tslab_->top() : nullptr;
    if (op && op->deadline > now) op = nullptr;
    if (e && e->deadline > t) e = nullptr;
    if (!op && !e) break;
    bool node_first = e != nullptr;
    if (op && e) {
      const std::int64_t od = op->deadline.time_since_epoch().count();
      // same deadline: the earlier arming (32-bit orders compared wrapped)
      node_first =
          e->deadline < od ||
          (e->deadline == od && static_cast<std::int32_t>(static_cast<std::uint32_t>(
                                    (e->key >> 32) - static_cast<std::uint32_t>(op->seq))) < 0);
    }
    ++n;
    if (node_first) {
      tslab_->fire_top();
    } else {
      timers_.pop();
      ready_.push(*op, 0);
    }
  }
  return n;
}

void Loop::note_thread() noexcept {
  if (fixed_slack_) {
    timer_slack_ = *fixed_slack_;
    return;
  }
  // The kernel gives real-time threads no slack; prctl's int wraps a
  // slack over 2^31 ns (more than the 1 s cap) to a negative value.
  const int policy = ::sched_getscheduler(0) & ~SCHED_RESET_ON_FORK;
  const int slack = ::prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  if (policy == SCHED_FIFO || policy == SCHED_RR || policy == SCHED_DEADLINE || slack == -1)
    timer_slack_ = Duration::zero();
  else if (slack < 0)
    timer_slack_ = std::chrono::seconds(1);
  else
    timer_slack_ = std::min<Duration>(Duration(slack), std::chrono::seconds(1));
}

std::size_t Loop::run_once() {
  std::optional<Duration> timeout;
  inline_left_ = kInlineBudget;
  take_inbox();
  // Closes made on other threads: before the backend tries an op on a
  // reused number, and again before anything is delivered.
  if (close_link_->pending.load(std::memory_order_relaxed)) [[unlikely]]
    close_link_->apply();
  const detail::OpBase* top = timers_.top();
  TimePoint next = top ? top->deadline : TimePoint::max();
  if (tslab_) next = std::min(next, tslab_->next_deadline());
  const bool t = next != TimePoint::max() || (top != nullptr);
  TimePoint now{};
  if (t) now = clock_->now();
  const bool queued = !ready_.empty();
  if (queued) {
    timeout = Duration::zero();
  } else if (t) {
    timeout = std::max(Duration::zero(), saturating_sub(next, now));
    if (uring_backend_ && *timeout > Duration::zero())
      *timeout = *timeout > Duration::max() - timer_slack_ ? Duration::max()
                                                            : *timeout + timer_slack_;
  } else if ((uring_backend_ ? uring_backend_->in_flight() : backend_->in_flight()) == 0 &&
             holds_ == 0 && external_ == 0) {
    timeout = Duration::zero();  // nothing can arrive: never block forever
  }
  std::size_t n;
  std::size_t direct = 0;
  if (uring_backend_ && !queued && !walking_) {
    // One pass: plain completions resume their coroutines from the CQE
    // walk itself (nothing was queued before them, so the order of
    // delivery is the one drain_callbacks would have given).
    // What drain_callbacks does for a plain coroutine completion (no
    // continuation, no callback), straight from the CQE walk.
    auto deliver = [this](detail::OpBase& op) noexcept {
      op.state = detail::OpState::delivered;
      --live_count_;
      ++counters_.completed[static_cast<std::size_t>(op.kind)];
      if (trace_) [[unlikely]] {
        trace(TraceEvent::op_completed, op);
        trace(TraceEvent::task_resumed, op);
      }
      std::coroutine_handle<>::from_address(op.ctx).resume();
    };
    struct Walk {
      bool& on;
      explicit Walk(bool& b) noexcept : on(b) { on = true; }
      ~Walk() { on = false; }
    } walk{walking_};
    const auto walked = uring_backend_->poll_direct(timeout, deliver);
    n = walked.taken;
    direct = walked.taken - walked.queued;
  } else {
    n = backend_->poll(timeout);
  }
  n += take_inbox();
  if (close_link_->pending.load(std::memory_order_relaxed)) [[unlikely]]
    close_link_->apply();
  struct EndRound {
    std::uint64_t& rounds;
    ~EndRound() { ++rounds; }  // the round's clock reading is stale from here
  } end_round{rounds_};
  // Only a wait that may have lasted needs a fresh reading of the clock.
  if (t) {
    round_now_ = timeout && *timeout == Duration::zero() ? now : clock_->now();
    stamp_round_ = rounds_;
    n += fire_timers(round_now_);
  }
  const std::size_t drained = ready_.empty() ? 0 : drain_callbacks();
  if (direct) [[likely]] {
    if (!drained) ++counters_.drains;
    counters_.drained += direct;
    if (direct + drained > counters_.max_per_drain) counters_.max_per_drain = direct + drained;
  }
  return n + direct + drained;
}

void Loop::trace_timer(const detail::TimerNode& n) const {
  TraceRecord r;
  r.event = TraceEvent::op_submitted;
  r.op = "timer";
  r.fd = -1;
  r.result = 0;
  r.id = &n;
  (*trace_)(r);
}

void Loop::run() {
  adopt_thread();
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
    if ((live_count_ == 0 || ((recv_ || dgram_ || weak_sources_) && only_idle_ops())) &&
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
    if (n == 0 && !h.done() && ready_.empty() && timers_.empty() &&
        (!tslab_ || tslab_->armed() == 0) && backend_->in_flight() == 0 && holds_ == 0 &&
        external_ == 0)
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
