#include "proactor/uring/uring_backend.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>

#include "core/inbox.hpp"
#include "lev/detail/buffer_pool.hpp"
#include "lev/detail/uring_prep.hpp"
#include "lev/loop.hpp"

namespace lev {

namespace {

// user_data values that are not ops (op addresses are 8-aligned): 1 for
// the wakeup poll, 2 for a MSG_RING wake arriving from another ring,
// inbox | 3 for a MSG_RING this ring sent (the target loop's inbox, whose
// eventfd is written should the message fail; the message holds a
// reference to it), 4 for requests whose completion carries nothing, op |
// 5 for a splice (tracked: see UringBackend::closing_input).
constexpr std::uint64_t kWakeTag = 1;
constexpr std::uint64_t kMsgInTag = 2;
constexpr std::uint64_t kMsgOutTag = 3;
// A request whose own completion carries nothing for us (cancels, linked
// timeouts): never 0, so that reap tells ops from tags with one test.
constexpr std::uint64_t kIgnoreTag = 4;
constexpr std::uint64_t kSpliceTag = 5;

// The user_data `op` is submitted with (and cancelled by).
std::uint64_t user_data_of(const detail::OpBase& op) noexcept {
  const auto ud = reinterpret_cast<std::uintptr_t>(&op);
  return op.kind == detail::OpKind::splice ? ud | kSpliceTag : ud;
}

[[noreturn]] void setup_failed(int err) {
  std::string why;
  switch (err) {
    case ENOSYS:
      why = "the kernel has no io_uring (ENOSYS)";
      break;
    case EPERM:
      why =
          "io_uring is not permitted (EPERM): disabled by sysctl kernel.io_uring_disabled "
          "or blocked by a seccomp filter";
      break;
    case ENOMEM:
      why = "out of memory or over RLIMIT_MEMLOCK (ENOMEM)";
      break;
    case EMFILE:
    case ENFILE:
      why = "no file descriptor left for the ring";
      break;
    default:
      why = std::strerror(err);
  }
  throw std::system_error(err, std::system_category(), "lev: io_uring_setup failed: " + why);
}

// The running kernel is at least major.minor (features no opcode probe
// tells apart: multishot recv, 6.0; provided-buffer rings, 5.19).
bool kernel_at_least(int want_major, int want_minor) {
  utsname u{};
  if (::uname(&u) != 0) return false;
  int major = 0, minor = 0;
  if (std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
  return major > want_major || (major == want_major && minor >= want_minor);
}

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && *v != '0';
}

// The calling thread's number, never given to another thread of the
// process (a ring's registered index and its SINGLE_ISSUER binding belong
// to one kernel task; std::thread::id values are reused after a join).
std::uint64_t thread_serial() noexcept {
  static std::atomic<std::uint64_t> next{0};
  // initial-exec: one load per look (checked once per loop round)
  thread_local std::uint64_t mine [[gnu::tls_model("initial-exec")]] = 0;
  if (mine == 0) [[unlikely]]
    mine = next.fetch_add(1, std::memory_order_relaxed) + 1;
  return mine;
}

// IORING_REGISTER_PBUF_STATUS (6.8): a provided-buffer ring's head, the
// next entry the kernel takes. Newer than the liburing headers here.
constexpr unsigned kRegisterPbufStatus = 26;
struct BufStatus {
  std::uint32_t buf_group;
  std::uint32_t head;
  std::uint32_t resv[8];
};

int ring_register(int ring_fd, unsigned opcode, void* arg, unsigned n) noexcept {
  const long r = ::syscall(__NR_io_uring_register, ring_fd, opcode, arg, n);
  return r < 0 ? -errno : static_cast<int>(r);
}

// Asks the kernel, on `ring`, to cancel with `flags` (keyed off `fd` with
// IORING_ASYNC_CANCEL_FD) and waits: a count or ENOENT means the flags are
// understood, EINVAL that they are not.
bool cancel_understood(io_uring& ring, unsigned flags, int fd) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  if (!sqe) return false;
  if (flags & IORING_ASYNC_CANCEL_FD)
    io_uring_prep_cancel_fd(sqe, fd, flags & ~IORING_ASYNC_CANCEL_FD);
  else
    io_uring_prep_cancel64(sqe, 0, static_cast<int>(flags));
  io_uring_sqe_set_data64(sqe, kIgnoreTag);
  io_uring_cqe* cqe = nullptr;
  if (io_uring_submit_and_wait(&ring, 1) < 0 || io_uring_wait_cqe(&ring, &cqe) < 0) return false;
  const bool ok = cqe->res >= 0 || cqe->res == -ENOENT;
  io_uring_cqe_seen(&ring, cqe);
  return ok;
}

// What this kernel's io_uring understands beyond its setup flags, probed
// once per process on a small ring of its own (a loop's own ring starts
// disabled: nothing can be submitted on it before a thread runs it).
struct KernelProbe {
  bool cancel_any = false;  // IORING_ASYNC_CANCEL_ANY (5.19)
  bool cancel_fd = false;   // IORING_ASYNC_CANCEL_FD | ALL (5.19)
  bool ring_fds = false;    // IORING_REGISTER_RING_FDS (5.18)
};

const KernelProbe& kernel_probe() {
  static const KernelProbe probe = [] {
    KernelProbe p;
    io_uring ring{};
    if (io_uring_queue_init(4, &ring, 0) != 0) return p;
    p.cancel_any = cancel_understood(ring, IORING_ASYNC_CANCEL_ANY, -1);
    p.cancel_fd =
        cancel_understood(ring, IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL, ring.ring_fd);
    io_uring_rsrc_update up{};
    up.offset = ~0u;
    up.data = static_cast<std::uint64_t>(ring.ring_fd);
    if (ring_register(ring.ring_fd, IORING_REGISTER_RING_FDS, &up, 1) == 1) {
      p.ring_fds = true;
      up.data = 0;
      (void)ring_register(ring.ring_fd, IORING_UNREGISTER_RING_FDS, &up, 1);
    }
    io_uring_queue_exit(&ring);
    return p;
  }();
  return probe;
}

}  // namespace

// The SINGLE_ISSUER rings bound to one thread. The thread's exit hook
// (below) has each cancel what it submitted; a ring that moves or goes
// away first takes itself off the list (under the lock, so that the hook
// never runs on a ring being replaced or destroyed).
struct IssuerHooks {
  std::mutex mu;
  std::vector<UringBackend*> bound;
};

namespace {

// The calling thread's hooks, run when it exits (thread-local storage is
// destroyed while the thread can still enter its rings).
struct IssuerExit {
  std::shared_ptr<IssuerHooks> hooks = std::make_shared<IssuerHooks>();
  IssuerExit() = default;
  IssuerExit(const IssuerExit&) = delete;
  IssuerExit& operator=(const IssuerExit&) = delete;
  ~IssuerExit() {
    std::lock_guard lock(hooks->mu);
    for (UringBackend* b : hooks->bound) b->issuer_exiting();
    hooks->bound.clear();
  }
};

std::shared_ptr<IssuerHooks> this_thread_hooks() {
  thread_local IssuerExit exit;
  return exit.hooks;
}

// An SQE that carries an op (counted in flight), as opposed to a tag.
bool carries_op(std::uint64_t user_data) noexcept {
  const std::uint64_t tag = user_data & 7;
  return tag == 0 || tag == kSpliceTag;
}

}  // namespace

// The counts are in range: Loop's constructor checked them.
UringBackend::UringBackend(const LoopOptions& o)
    : batch_(static_cast<unsigned>(o.submit_batch_size)),
      queue_size_(static_cast<unsigned>(o.queue_size)),
      cqe_entries_(static_cast<unsigned>(o.cqe_entries)) {
  unsigned base = 0;
  if (o.cqe_entries) base |= IORING_SETUP_CQSIZE;
  // Preferred first; each later entry is what an older kernel accepts. The
  // ring starts disabled (R_DISABLED, 5.10): the thread that first runs the
  // loop enables it, and SINGLE_ISSUER binds that thread, not this one.
  unsigned tries[4] = {base, base, base, base};
  int n = 0;
  if (o.sqpoll) {
    tries[n++] = base | IORING_SETUP_SQPOLL | IORING_SETUP_R_DISABLED;
  } else if (o.single_issuer) {
    tries[n++] =
        base | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
    tries[n++] = base | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_R_DISABLED;
  }
  tries[n++] = base | IORING_SETUP_R_DISABLED;
  tries[n++] = base;
  int r = -EINVAL;
  for (int i = 0; i < n; ++i) {
    io_uring_params p{};
    p.flags = tries[i];
    p.cq_entries = cqe_entries_;
    if (p.flags & IORING_SETUP_SQPOLL) p.sq_thread_idle = 1000;
    r = io_uring_queue_init_params(queue_size_, &ring_, &p);
    setup_flags_ = p.flags;
    if (r != -EINVAL) break;
  }
  if (r < 0) setup_failed(-r);
  creator_ = thread_serial();
  enabled_ = !(setup_flags_ & IORING_SETUP_R_DISABLED);
  if (enabled_) issuer_ = thread_serial();  // a kernel before 5.10: no binding
  const KernelProbe& kernel = kernel_probe();
  reg_ok_ = kernel.ring_fds;  // one fewer fdget per enter, on the thread that registered
  own_enter_ = !(setup_flags_ & IORING_SETUP_SQPOLL) && (ring_.features & IORING_FEAT_EXT_ARG) &&
               !env_flag("LEV_URING_LIBURING_ENTER");
  // LEV_URING_NO_CANCEL_ANY=1 forces the fallback registry (tests use it to
  // cover what kernels before 5.19 get).
  cancel_any_ = !env_flag("LEV_URING_NO_CANCEL_ANY") && kernel.cancel_any;
  cancel_fd_ = kernel.cancel_fd;
  // LEV_URING_NO_BUF_RING=1: recv(fd) takes plain recvs (tests cover the
  // path of kernels before 5.19 and of backends without buffer selection).
  // LEV_URING_NO_MULTISHOT_RECV=1: one-shot recvs that still take the
  // kernel's buffers.
  buf_ring_ok_ = !env_flag("LEV_URING_NO_BUF_RING") && kernel_at_least(5, 19);
  multishot_recv_ =
      buf_ring_ok_ && !env_flag("LEV_URING_NO_MULTISHOT_RECV") && kernel_at_least(6, 0);
  // LEV_URING_NO_MSG_RING=1 wakes other loops by eventfd only.
  const bool msg_ring_allowed = !env_flag("LEV_URING_NO_MSG_RING");
  if (io_uring_probe* probe = io_uring_get_probe_ring(&ring_)) {
    msg_ring_ = msg_ring_allowed && io_uring_opcode_supported(probe, IORING_OP_MSG_RING);
    ftruncate_op_ = io_uring_opcode_supported(probe, detail::kUringOpFtruncate);
    if (o.zero_copy_threshold > 0 && io_uring_opcode_supported(probe, IORING_OP_SEND_ZC))
      zc_threshold_ = o.zero_copy_threshold;
    io_uring_free_probe(probe);
  }
}

detail::UringFastPath UringBackend::fast_path() noexcept {
  if (batch_ || !cancel_any_) return {};             // those need the backend's own submit
  if (ring_.flags & IORING_SETUP_SQE128) return {};  // UringFastPath::get_sqe assumes 64-byte SQEs
  return {&ring_.sq, &in_flight_, zc_threshold_};
}

// One thread at a time runs a loop (lev/loop.hpp), but not always the same
// one: a loop built in main and run in a std::thread, or handed from one
// thread to the next between runs. Called before the ring is entered from
// a thread other than the last one:
// - a ring still disabled is enabled here (SINGLE_ISSUER binds this thread);
// - a ring SINGLE_ISSUER bound to another thread is replaced (replace_ring);
// - the ring fd is registered by the first thread only, and entered by its
//   index only there. Registering again on each new thread would leave a
//   reference to the ring in every earlier thread's table (only that
//   thread can drop it; the kernel does when it exits).
void UringBackend::here() {
  if (runner_ != thread_serial()) [[unlikely]]
    adopt_thread();
}

void UringBackend::adopt_thread() {
  const std::uint64_t me = thread_serial();
  if (!enabled_ && (setup_flags_ & IORING_SETUP_SINGLE_ISSUER) && me != creator_) {
    // Built on one thread and first run on another (built in main, run in
    // a std::thread): such a loop is often destroyed back where it was
    // built, with requests of the runner's still in the kernel, and a
    // SINGLE_ISSUER ring could not be entered there to cancel and reap
    // them. So it gets a ring any thread may enter (COOP_TASKRUN instead).
    setup_flags_ = (setup_flags_ & ~unsigned{IORING_SETUP_SINGLE_ISSUER |
                                             IORING_SETUP_DEFER_TASKRUN}) |
                   IORING_SETUP_COOP_TASKRUN;
    replace_ring();
    enabled_ = true;
    issuer_ = me;
  } else if (!enabled_) {
    const int r = ring_register(ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
    if (r < 0) throw std::system_error(-r, std::system_category(), "lev: io_uring enable");
    enabled_ = true;
    issuer_ = me;
    bind_issuer();
  } else if ((setup_flags_ & IORING_SETUP_SINGLE_ISSUER) && issuer_ != me) {
    replace_ring();
  }
  runner_ = me;
  if (reg_ok_ && reg_index_ < 0) register_ring_fd();
  use_reg_ = reg_index_ >= 0 && reg_thread_ == me;
}

void UringBackend::register_ring_fd() noexcept {
  io_uring_rsrc_update up{};
  up.offset = ~0u;  // any free slot
  up.data = static_cast<std::uint64_t>(ring_.ring_fd);
  if (ring_register(ring_.ring_fd, IORING_REGISTER_RING_FDS, &up, 1) != 1) return;  // table full
  reg_index_ = static_cast<int>(up.offset);
  reg_thread_ = thread_serial();
}

// SINGLE_ISSUER ties a ring to the task that enabled it for good: another
// thread may not submit to it nor reap what it owes (DEFER_TASKRUN). So a
// loop that moves on gets a new ring, made as the first was and bound to
// this thread. Possible only when the old ring owes nothing: no request of
// ours in the kernel (SQEs filled but not yet submitted move over) and no
// provided-buffer ring registered with it (the kernel alone knows which of
// its buffers it has taken). The ring's fd number is kept (MSG_RING wakes
// from other loops name it).
//
// What the old thread left in flight may still be on its way: a thread
// that exits has its io-wq torn down, and what was blocked there (a
// splice) completes through the kernel's fallback work a moment later. So
// the owed completions are awaited briefly (read from memory: this thread
// may not enter that ring) before the move is refused.
void UringBackend::replace_ring() {
  io_uring_sq& sq = ring_.sq;
  const unsigned head = *sq.khead;
  const unsigned tail = sq.sqe_tail;
  // Completions already posted are read from memory, no syscall. A thread
  // that exited had its exit hook cancel what it submitted (see
  // issuer_exiting): those are all there.
  const std::size_t owed = reap_owed(1000);
  // The receive buffers move when the last thread's exit hook said which
  // the kernel took (read under its lock: that thread may be exiting).
  std::int64_t heads[kBufGroups];
  {
    std::unique_lock<std::mutex> lock;
    if (hooks_) lock = std::unique_lock(hooks_->mu);
    for (std::size_t g = 0; g < kBufGroups; ++g) heads[g] = exit_buf_head_[g];
  }
  bool buffers = false;
  for (std::size_t g = 0; g < kBufGroups; ++g)
    buffers = buffers || (buf_rings_[g].ring && heads[g] < 0);
  if (owed > 0 || buffers) {
    const std::string why =
        owed > 0 ? std::to_string(owed) +
                       " operation(s) it submitted there are still in flight (the kernel "
                       "completes them only for that thread); let them finish first, or let "
                       "that thread exit (they are cancelled then)"
                 : "its receive buffers are registered with that ring (recv(fd) or "
                   "DatagramSocket::receive was used)";
    throw std::logic_error(
        "lev::Loop: this io_uring loop runs with single_issuer, which binds it to the "
        "thread that last ran it, and cannot move to this thread: " +
        why + ". Build it with single_issuer = false to run it on several threads in turn");
  }
  unbind_issuer();  // the old thread's exit hook must not reach the ring from here on
  io_uring fresh{};
  io_uring_params p{};
  p.flags = setup_flags_ & ~unsigned{IORING_SETUP_R_DISABLED};  // enabled by (and bound to) us
  p.cq_entries = cqe_entries_;
  int r = io_uring_queue_init_params(queue_size_, &fresh, &p);
  if (r < 0) throw std::system_error(-r, std::system_category(), "lev: io_uring_setup");
  // What was filled and not submitted goes over in order (links kept); the
  // wakeup poll is armed afresh below.
  for (unsigned i = head; i != tail; ++i) {
    const io_uring_sqe& old = sq.sqes[i & sq.ring_mask];
    if (old.user_data == kWakeTag) continue;
    *io_uring_get_sqe(&fresh) = old;  // fits: the rings are the same size
  }
  const int number = ring_.ring_fd;
  const int spare = fresh.ring_fd;
  if (::dup3(spare, number, O_CLOEXEC) < 0) {
    const int err = errno;
    io_uring_queue_exit(&fresh);
    throw std::system_error(err, std::system_category(), "lev: dup3 of the new ring");
  }
  io_uring old = ring_;
  old.ring_fd = old.enter_ring_fd = spare;  // its number now names the new ring
  fresh.ring_fd = fresh.enter_ring_fd = number;
  ring_ = fresh;
  io_uring_queue_exit(&old);  // unmaps the old ring, closes the spare number
  issuer_ = thread_serial();
  reg_index_ = -1;  // the old registration named the old ring
  reg_thread_ = 0;
  // The buffers the old ring held untaken go to a new buffer ring of the
  // new one (what its requests took came back in their completions).
  for (std::size_t g = 0; g < kBufGroups; ++g) {
    BufRing& r = buf_rings_[g];
    if (!r.ring) continue;
    detail::BufferPool& pool = *r.pool;
    pool.reclaim_ring(static_cast<std::uint16_t>(heads[g]));
    exit_buf_head_[g] = -1;
    ::munmap(r.ring, r.bytes);
    r = BufRing{};
    if (!register_buf_ring(pool))
      throw std::system_error(ENOMEM, std::system_category(),
                              "lev: the receive buffers could not be registered with the loop's "
                              "new io_uring ring");
  }
  bind_issuer();
  if (wake_fd_ >= 0 && !closing_) arm_wakeup();
}

void UringBackend::bind_issuer() {
  if (!(setup_flags_ & IORING_SETUP_SINGLE_ISSUER)) return;
  std::shared_ptr<IssuerHooks> hooks = this_thread_hooks();
  std::lock_guard lock(hooks->mu);
  hooks->bound.push_back(this);
  hooks_ = std::move(hooks);
}

void UringBackend::unbind_issuer() noexcept {
  if (!hooks_) return;
  {
    std::lock_guard lock(hooks_->mu);  // waits for an exit hook running on us
    auto& v = hooks_->bound;
    for (std::size_t i = 0; i < v.size(); ++i)
      if (v[i] == this) {
        v[i] = v.back();
        v.pop_back();
        break;
      }
  }
  hooks_.reset();
}

// On the issuer thread, as it exits. A synchronous cancel (6.0+; a
// SINGLE_ISSUER ring is 6.0+) takes no SQE: the SQ is left to whichever
// thread runs the loop next. The cancelled requests finish through this
// thread's deferred task work (DEFER_TASKRUN), which an enter with
// nothing to submit runs, posting their CQEs; nothing is consumed.
void UringBackend::issuer_exiting() noexcept {
  io_uring_sync_cancel_reg reg{};
  reg.fd = -1;
  reg.flags = IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL;
  reg.timeout.tv_sec = 1;  // a request that does not end by then stays owed
  (void)ring_register(ring_.ring_fd, IORING_REGISTER_SYNC_CANCEL, &reg, 1);
  (void)::syscall(__NR_io_uring_enter, ring_.ring_fd, 0, 0, IORING_ENTER_GETEVENTS, nullptr, 0);
  // Which buffers the kernel took, for the ring the loop moves to next
  // (replace_ring): the head of each buffer ring (6.8+; unknown before).
  for (std::size_t g = 0; g < kBufGroups; ++g) {
    if (!buf_rings_[g].ring) continue;
    BufStatus st{};
    st.buf_group = static_cast<std::uint32_t>(g);
    if (ring_register(ring_.ring_fd, kRegisterPbufStatus, &st, 1) == 0)
      exit_buf_head_[g] = st.head & 0xffff;
  }
}

bool UringBackend::bound_elsewhere() const noexcept {
  return enabled_ && (setup_flags_ & IORING_SETUP_SINGLE_ISSUER) && issuer_ != thread_serial();
}

std::size_t UringBackend::unsubmitted_ops() const noexcept {
  const io_uring_sq& sq = ring_.sq;
  std::size_t n = 0;
  for (unsigned i = *sq.khead; i != sq.sqe_tail; ++i)
    if (carries_op(sq.sqes[i & sq.ring_mask].user_data)) ++n;
  return n;
}

std::size_t UringBackend::reap_owed(int limit_ms) noexcept {
  reap();
  auto owed = [this] {
    const std::size_t queued = unsubmitted_ops();
    return in_flight_ > queued ? in_flight_ - queued : 0;
  };
  std::size_t left = owed();
  for (int waited_ms = 0; left > 0 && waited_ms < limit_ms; ++waited_ms) {
    ::usleep(1000);
    reap();
    left = owed();
  }
  return left;
}

void UringBackend::cancel_unsubmitted() noexcept {
  io_uring_sq& sq = ring_.sq;
  const unsigned head = *sq.khead;
  for (unsigned i = head; i != sq.sqe_tail; ++i) {
    std::uint64_t data = sq.sqes[i & sq.ring_mask].user_data;
    if (!carries_op(data)) continue;
    auto* op =
        reinterpret_cast<detail::OpBase*>(static_cast<std::uintptr_t>(data & ~std::uint64_t{7}));
    if ((data & 7) == kSpliceTag) untrack_splice(*op);
    if (!cancel_any_) untrack(*op);
    --in_flight_;
    queue_->push(*op, -ECANCELED);
  }
  sq.sqe_head = sq.sqe_tail = head;  // nothing of it will be submitted
}

void UringBackend::cancel_fd(int fd) noexcept {
  if (!cancel_fd_ || fd < 0 || !enabled_ || runner_ != thread_serial()) return;
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (!sqe && io_uring_submit(&ring_) >= 0) sqe = io_uring_get_sqe(&ring_);
  if (!sqe) return;
  io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, kIgnoreTag);
  ++stats_.kernel_enters;
  if (io_uring_submit(&ring_) >= 0) unflushed_ = 0;
}

void UringBackend::track(detail::OpBase& op) noexcept {
  op.link_prev = nullptr;
  op.link_next = tracked_;
  if (tracked_) tracked_->link_prev = &op;
  tracked_ = &op;
}

void UringBackend::untrack(detail::OpBase& op) noexcept {
  if (op.link_prev)
    op.link_prev->link_next = op.link_next;
  else
    tracked_ = op.link_next;
  if (op.link_next) op.link_next->link_prev = op.link_prev;
}

void UringBackend::set_wakeup_fd(int fd) {
  wake_fd_ = fd;
  arm_wakeup();
}

BackendFeatures UringBackend::features() const noexcept {
  BackendFeatures f;
  f.single_issuer = (setup_flags_ & IORING_SETUP_SINGLE_ISSUER) != 0;
  f.coop_taskrun = (setup_flags_ & IORING_SETUP_COOP_TASKRUN) != 0;
  f.sqpoll = (setup_flags_ & IORING_SETUP_SQPOLL) != 0;
  f.registered_ring_fd = reg_ok_;
  f.cancel_any = cancel_any_;
  f.cancel_fd = cancel_fd_;
  f.msg_ring = msg_ring_;
  f.multishot_poll = wake_fd_ >= 0 && wake_multishot_;
  f.linked_timeouts = true;
  f.zero_copy_send = zc_threshold_ != static_cast<std::size_t>(-1);
  f.multishot_accept = cancel_any_;   // both arrived in 5.19; an EINVAL still falls back
  f.provided_buffers = buf_ring_ok_;  // registered by the first recv(fd)
  f.multishot_recv = multishot_recv_;
  f.ftruncate_op = ftruncate_op_;
  return f;
}

bool UringBackend::provide_buffers(detail::BufferPool& pool) {
  const std::uint16_t group = pool.group();
  if (!buf_ring_ok_ || group >= kBufGroups || buf_rings_[group].ring) return false;
  here();  // registering with a SINGLE_ISSUER ring is its issuer's to do
  return register_buf_ring(pool);
}

bool UringBackend::register_buf_ring(detail::BufferPool& pool) {
  const std::uint16_t group = pool.group();
  unsigned entries = 1;
  while (entries < pool.count()) entries <<= 1;
  const std::size_t bytes = entries * sizeof(io_uring_buf);
  void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return false;
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uintptr_t>(mem);
  reg.ring_entries = entries;
  reg.bgid = group;
  if (io_uring_register_buf_ring(&ring_, &reg, 0) != 0) {  // filtered, or out of memory
    ::munmap(mem, bytes);
    if (group == 0) buf_ring_ok_ = multishot_recv_ = false;
    return false;
  }
  BufRing& r = buf_rings_[group];
  r.ring = static_cast<io_uring_buf_ring*>(mem);
  r.bytes = bytes;
  r.pool = &pool;
  pool.attach_ring(r.ring, entries);
  return true;
}

void UringBackend::withdraw_buffers(detail::BufferPool& pool) noexcept {
  const std::uint16_t group = pool.group();
  if (group < kBufGroups && buf_rings_[group].pool == &pool) withdraw_group(group);
}

void UringBackend::withdraw_group(std::size_t group) noexcept {
  BufRing& r = buf_rings_[group];
  if (!r.ring) return;
  if (r.pool) r.pool->detach_ring();
  (void)io_uring_unregister_buf_ring(&ring_, static_cast<int>(group));
  ::munmap(r.ring, r.bytes);
  r = BufRing{};
}

void UringBackend::arm_wakeup() {
  io_uring_sqe* sqe = get_sqe();
  if (wake_multishot_)
    io_uring_prep_poll_multishot(sqe, wake_fd_, POLLIN);
  else
    io_uring_prep_poll_add(sqe, wake_fd_, POLLIN);
  io_uring_sqe_set_data64(sqe, kWakeTag);
}

bool UringBackend::send_wake(int target_ring, detail::Inbox& target) noexcept {
  if (!msg_ring_ || closing_ || reaping_ || runner_ != thread_serial()) return false;
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (!sqe) {
    if (io_uring_submit(&ring_) < 0 || !(sqe = io_uring_get_sqe(&ring_))) return false;
  }
  io_uring_prep_msg_ring(sqe, target_ring, 0, kMsgInTag, 0);
  io_uring_sqe_set_data64(sqe, reinterpret_cast<std::uintptr_t>(&target) | kMsgOutTag);
  target.add_ref();  // released when this message's completion is reaped
  ++in_flight_;      // so that this ring's teardown reaps it
  unflushed_ = 0;
  if (io_uring_submit(&ring_) >= 0) return true;  // now: the other loop may be asleep
  // Not submitted: take the SQE back.
  --ring_.sq.sqe_tail;
  --in_flight_;
  target.release();
  return false;
}

void UringBackend::cancel_all() {
  closing_ = true;
  if (bound_elsewhere()) {
    // Teardown on a thread the ring refuses (SINGLE_ISSUER: the kernel
    // lets only its issuer submit or run the completions it owes). If the
    // issuer has exited, its exit hook cancelled what it submitted and the
    // CQEs are in memory: reaped here, without entering. What was never
    // submitted ends cancelled. From then on nothing enters the ring.
    // With the issuer still alive and requests of its still pending, the
    // loop moves as before (replace_ring refuses, saying why). Set first:
    // a multishot's step reaped here may ask for a cancel, which must not
    // reach for the ring either.
    foreign_teardown_ = true;
    if (reap_owed(1000) == 0) {
      cancel_unsubmitted();
      return;
    }
    foreign_teardown_ = false;
  }
  if (cancel_any_) {
    if (in_flight_ == 0) return;
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, kIgnoreTag);
    return;
  }
  for (detail::OpBase* op = tracked_; op; op = op->link_next) cancel(*op);
}

UringBackend::~UringBackend() {
  unbind_issuer();
  for (std::size_t g = 0; g < kBufGroups; ++g) withdraw_group(g);
  // The registration is in its thread's table: only that thread can drop
  // it (elsewhere the index may name another ring of that thread's).
  if (reg_index_ >= 0 && reg_thread_ == thread_serial()) {
    io_uring_rsrc_update up{};
    up.offset = static_cast<unsigned>(reg_index_);
    (void)ring_register(ring_.ring_fd, IORING_UNREGISTER_RING_FDS, &up, 1);
  }
  io_uring_queue_exit(&ring_);
}

io_uring_sqe* UringBackend::get_sqe_slow() {
  io_uring_sqe* sqe = nullptr;
  while (!sqe) {  // a full submission queue is a normal path: flush, retry
    flush();
    sqe = io_uring_get_sqe(&ring_);
    if (!sqe && (ring_.flags & IORING_SETUP_SQPOLL)) io_uring_sqring_wait(&ring_);
  }
  return sqe;
}

void UringBackend::flush() {
  here();
  ++stats_.kernel_enters;
  int r = io_uring_submit(&ring_);
  if (r == -EBUSY || r == -EAGAIN) {  // completions must be reaped first
    reap();
    r = io_uring_submit(&ring_);
  }
  if (r < 0 && r != -EBUSY && r != -EAGAIN && r != -EINTR)
    throw std::system_error(-r, std::system_category(), "lev: io_uring_submit");
  unflushed_ = 0;
}

void UringBackend::submit(detail::OpBase& op) {
  if (foreign_teardown_) [[unlikely]] {  // see cancel_all: the ring is not entered again
    queue_->push(op, -ECANCELED);
    return;
  }
  const bool splice = op.kind == detail::OpKind::splice;
  if (splice) [[unlikely]]
    splices_.reserve(splices_.size() + 1);  // may throw: nothing is filled yet
  if (op.linked_timeout && io_uring_sq_space_left(&ring_) < 2) flush();  // the pair goes together
  io_uring_sqe* sqe = get_sqe();
  detail::prep_sqe(sqe, op, zc_threshold_);
  io_uring_sqe_set_data(sqe, &op);
  if (splice) [[unlikely]] {
    io_uring_sqe_set_data64(sqe, user_data_of(op));
    splices_.push_back(&op);  // reserved above
  }
  if (op.linked_timeout) {
    sqe->flags |= IOSQE_IO_LINK;
    io_uring_sqe* t = get_sqe();
    static_assert(sizeof(__kernel_timespec) == 2 * sizeof(std::int64_t));
    io_uring_prep_link_timeout(t, reinterpret_cast<__kernel_timespec*>(&op.lt_sec), 0);
    io_uring_sqe_set_data64(t, kIgnoreTag);
  }
  ++in_flight_;
  if (!cancel_any_) track(op);
  if (batch_ && ++unflushed_ >= batch_) flush();
}

void UringBackend::cancel(detail::OpBase& op) {
  if (foreign_teardown_) [[unlikely]]
    return;  // nothing of ours is in the kernel
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (!sqe) {
    if (reaping_) {  // flushing now may reap inside the walk of the CQ ring
      deferred_cancels_.push_back(&op);
      return;
    }
    sqe = get_sqe_slow();
  }
  io_uring_prep_cancel64(sqe, user_data_of(op), 0);
  io_uring_sqe_set_data64(sqe, kIgnoreTag);
}

void UringBackend::untrack_splice(detail::OpBase& op) noexcept {
  for (std::size_t i = 0; i < splices_.size(); ++i)
    if (splices_[i] == &op) {
      splices_[i] = splices_.back();
      splices_.pop_back();
      return;
    }
}

bool UringBackend::splices_from(int fd) const noexcept {
  for (const detail::OpBase* op : splices_)
    if (op->fd == fd) return true;
  return false;
}

void UringBackend::closing_input(int fd) noexcept {
  if (splices_.empty()) [[likely]]
    return;
  try {
    // A cancel may flush, and a flush reap (which edits splices_): the
    // splices on `fd` are picked first.
    std::vector<detail::OpBase*> ops;
    for (detail::OpBase* op : splices_)
      if (op->fd == fd) ops.push_back(op);
    if (ops.empty()) return;
    for (detail::OpBase* op : ops)
      if (op->state == detail::OpState::submitted) cancel(*op);
    // From inside a walk of the CQ ring (a multishot's step) the cancels
    // wait in deferred_cancels_: nothing can be submitted or waited for.
    if (reaping_) return;
    flush();  // the cancels reach the kernel before the fd is closed
    // Then their completions: a splice io-wq has not started ends at once,
    // one blocked in a worker as soon as the worker sees the cancel.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (splices_from(fd)) {
      const auto left = until - std::chrono::steady_clock::now();
      if (left <= Duration::zero()) break;
      poll(std::chrono::duration_cast<Duration>(left));
    }
  } catch (const std::exception&) {
    // The ring failed: the close goes ahead; what was submitted stands.
  }
}

// Walks the CQ ring once (this thread is its only consumer), records each
// result on its op and hands the chain to the loop's queue in one splice.
// Nothing here submits: a multishot's MoreFn may ask for a cancel, which
// waits in deferred_cancels_ when the SQ is full (a flush could reap
// inside this walk); a refused zero-copy send is queued as a step for
// Loop::settle to resend (honouring a recorded cancel, with its linked
// timeout again).
std::size_t UringBackend::reap() noexcept {
  std::size_t total = 0;
  for (;;) {
    io_uring_cq& cq = ring_.cq;
    unsigned head = *cq.khead;
    const unsigned tail = io_uring_smp_load_acquire(cq.ktail);
    const unsigned mask = cq.ring_mask;
    detail::OpBase* first = nullptr;
    detail::OpBase** link = &first;
    detail::OpBase* last = nullptr;
    std::size_t n = 0;
    std::size_t tags_done = 0;  // MSG_RING wakes this ring sent (counted in flight)
    bool rearm = false;
    reaping_ = true;
    for (; head != tail; ++head) {
      const io_uring_cqe& cqe = cq.cqes[head & mask];
      std::uint64_t data = cqe.user_data;
      if ((data & 7) != 0) [[unlikely]] {
        const std::uint64_t tag = data & 7;
        if (tag != kSpliceTag) {
          // Not an op. The wakeup poll re-arms once it has ended; a wake this
          // ring sent that failed falls back to the target's eventfd.
          if (cqe.user_data == kWakeTag && !(cqe.flags & IORING_CQE_F_MORE)) {
            if (cqe.res == -EINVAL) wake_multishot_ = false;  // no multishot poll here
            rearm = true;
          } else if (tag == kMsgOutTag) {
            auto* target = reinterpret_cast<detail::Inbox*>(cqe.user_data & ~std::uint64_t{7});
            if (cqe.res < 0) {
              msg_ring_ = false;
              target->wake_by_eventfd();
            }
            target->release();
            ++tags_done;
          }
          continue;
        }
        data &= ~std::uint64_t{7};  // a splice (an op): no longer in flight
        untrack_splice(*reinterpret_cast<detail::OpBase*>(static_cast<std::uintptr_t>(data)));
      }
      auto* op = reinterpret_cast<detail::OpBase*>(static_cast<std::uintptr_t>(data));
      const std::uint32_t flags = cqe.flags;
      if ((flags & IORING_CQE_F_MORE) && op->more) [[unlikely]] {
        op->more(*op, cqe.res, flags);  // a multishot result; the op stays in flight
        continue;
      }
      int res = cqe.res;
      std::uint32_t cflags = flags;
      if (op->zc == 1) [[unlikely]] {
        // Zero-copy send: the result comes first (F_MORE), then the
        // notification that the buffer is free; the op completes on that.
        if (flags & IORING_CQE_F_MORE) {
          op->res = res;
          continue;
        }
        // The notification carries no result; without one (F_NOTIF clear)
        // the send failed before anything was pinned.
        if (flags & IORING_CQE_F_NOTIF) res = op->res;
        cflags = 0;
        if (res == -EOPNOTSUPP) {  // this socket cannot (AF_UNIX): a step, resent plain
          op->zc = 2;
          op->flow |= detail::kFlowRetry;
        }
      }
      op->res = res;
      op->cqe_flags = cflags;
      op->state = detail::OpState::completed;
      *link = op;
      link = &op->next;
      last = op;
      ++n;
    }
    reaping_ = false;
    *link = nullptr;
    io_uring_smp_store_release(cq.khead, head);
    if (!cancel_any_)
      for (detail::OpBase* op = first; op; op = op->next) untrack(*op);
    in_flight_ -= n + tags_done;
    queue_->append(first, last);
    total += n;
    if (!deferred_cancels_.empty()) [[unlikely]] {
      std::vector<detail::OpBase*> ops;
      ops.swap(deferred_cancels_);
      for (detail::OpBase* op : ops)
        if (op->state == detail::OpState::submitted) {  // not completed meanwhile
          try {
            cancel(*op);
          } catch (const std::exception&) {
            // The op completes on its own; Loop::settle honours the request.
          }
        }
    }
    if (rearm && !closing_) arm_wakeup();
    // Completions the kernel could not post (CQ full) wait in its overflow
    // list; flush them into the ring and go round again.
    if (!(IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_CQ_OVERFLOW)) break;
    ++stats_.cq_overflows;
    ++stats_.kernel_enters;
    io_uring_get_events(&ring_);
  }
  return total;
}

// One io_uring_enter per loop round, ours: publish the SQEs filled since
// the last round and wait for a completion (at most `timeout`, passed as
// an extended argument; none: for ever; zero: not at all). liburing's
// submit_and_wait_timeout does the same and then peeks the CQ for a first
// completion, which reap() walks anyway. Only without SQPOLL (there the
// kernel thread consumes the SQ and may need a wakeup) and with EXT_ARG.
int UringBackend::enter(std::optional<Duration> timeout) noexcept {
  io_uring_sq& sq = ring_.sq;
  const unsigned tail = sq.sqe_tail;
  if (sq.sqe_head != tail) {
    sq.sqe_head = tail;
    io_uring_smp_store_release(sq.ktail, tail);
  }
  const unsigned to_submit = tail - *sq.khead;
  unsigned flags = IORING_ENTER_GETEVENTS;  // also runs deferred task work
  int fd = ring_.ring_fd;
  if (use_reg_) {
    flags |= IORING_ENTER_REGISTERED_RING;
    fd = reg_index_;
  }
  if (timeout && *timeout <= Duration::zero())
    return io_uring_enter(static_cast<unsigned>(fd), to_submit, 0, flags, nullptr);
  if (!timeout) return io_uring_enter(static_cast<unsigned>(fd), to_submit, 1, flags, nullptr);
  const auto ns = timeout->count();
  __kernel_timespec ts{ns / 1000000000, ns % 1000000000};
  io_uring_getevents_arg arg{};
  arg.sigmask_sz = _NSIG / 8;
  arg.ts = reinterpret_cast<std::uint64_t>(&ts);
  return io_uring_enter2(static_cast<unsigned>(fd), to_submit, 1, flags | IORING_ENTER_EXT_ARG,
                         reinterpret_cast<sigset_t*>(&arg), sizeof(arg));
}

BackendStats UringBackend::stats() const noexcept {
  BackendStats st = stats_;
  st.cq_dropped = ring_.cq.koverflow ? IO_URING_READ_ONCE(*ring_.cq.koverflow) : 0;
  return st;
}

// Submits what is filled and waits for a completion (see enter()).
int UringBackend::wait(std::optional<Duration> timeout) {
  if (runner_ != thread_serial()) [[unlikely]] {
    adopt_thread();
    // A move to a new ring reaps what the last thread left (replace_ring):
    // that is delivered before anything is waited for.
    if (!queue_->empty()) timeout = Duration::zero();
  }
  ++stats_.kernel_enters;
  int r;
  if (own_enter_) [[likely]] {
    r = enter(timeout);
  } else if (timeout && *timeout <= Duration::zero()) {
    r = io_uring_submit_and_get_events(&ring_);
  } else if (!timeout) {
    r = io_uring_submit_and_wait(&ring_, 1);
  } else {
    auto ns = timeout->count();
    __kernel_timespec ts{ns / 1000000000, ns % 1000000000};
    io_uring_cqe* cqe = nullptr;
    r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  }
  unflushed_ = 0;
  if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN)
    throw std::system_error(-r, std::system_category(), "lev: io_uring_enter");
  return r;
}

std::size_t UringBackend::poll(std::optional<Duration> timeout) {
  if (foreign_teardown_) [[unlikely]] {  // see cancel_all
    cancel_unsubmitted();                // filled by the loop's inline path meanwhile
    return reap();
  }
  wait(timeout);
  return reap();
}

detail::OpBase* UringBackend::unusual_cqe(std::uint64_t data, int& res,
                                          std::uint32_t& flags) noexcept {
  if ((data & 7) != 0) {
    const std::uint64_t tag = data & 7;
    if (tag != kSpliceTag) {
      if (data == kWakeTag && !(flags & IORING_CQE_F_MORE)) {
        if (res == -EINVAL) wake_multishot_ = false;
        if (!closing_) arm_wakeup();  // at once: nothing here is half done
      } else if (tag == kMsgOutTag) {
        auto* target = reinterpret_cast<detail::Inbox*>(data & ~std::uint64_t{7});
        if (res < 0) {
          msg_ring_ = false;
          target->wake_by_eventfd();
        }
        target->release();
        --in_flight_;
      }
      return nullptr;
    }
    data &= ~std::uint64_t{7};  // a splice: see reap()
    untrack_splice(*reinterpret_cast<detail::OpBase*>(static_cast<std::uintptr_t>(data)));
  }
  auto* op = reinterpret_cast<detail::OpBase*>(static_cast<std::uintptr_t>(data));
  if (op->zc == 1) {  // see reap()
    if (flags & IORING_CQE_F_MORE) {
      op->res = res;
      return nullptr;
    }
    if (flags & IORING_CQE_F_NOTIF) res = op->res;
    flags = 0;
    if (res == -EOPNOTSUPP) {
      op->zc = 2;
      op->flow |= detail::kFlowRetry;
    }
  } else if ((flags & IORING_CQE_F_MORE) && op->more) {
    op->more(*op, res, flags);  // a multishot result; the op stays in flight
    return nullptr;
  }
  return op;
}

bool UringBackend::after_walk() noexcept {
  if (!deferred_cancels_.empty()) [[unlikely]] {
    std::vector<detail::OpBase*> ops;
    ops.swap(deferred_cancels_);
    for (detail::OpBase* op : ops)
      if (op->state == detail::OpState::submitted) {
        try {
          cancel(*op);
        } catch (const std::exception&) {
          // The op completes on its own; Loop::settle honours the request.
        }
      }
  }
  if (!(IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_CQ_OVERFLOW)) return false;
  ++stats_.cq_overflows;
  ++stats_.kernel_enters;
  io_uring_get_events(&ring_);
  return true;
}

}  // namespace lev
