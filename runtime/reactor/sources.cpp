// Event sources on loop ops: Watcher (poll ops re-armed after each
// callback: level-triggered), Signal (one signalfd per loop), Waker
// (eventfd), PidWatch (pidfd). Their records live in heap state objects;
// the ops inside them are ordinary loop ops, delivered from the queue.
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <list>
#include <stdexcept>
#include <string>
#include <system_error>

#include "core/fd_hooks.hpp"
#include "lev/log.hpp"
#include "lev/loop.hpp"
#include "lev/watchers.hpp"
#include "reactor/watched_fds.hpp"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace lev {

using detail::OpBase;
using detail::OpKind;
using detail::OpState;

namespace {
bool live(const OpBase& op) {
  return op.state == OpState::submitted || op.state == OpState::completed;
}
bool fd_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }
void close_fd(int fd) noexcept {
  lev::detail::fd_closing(fd);
  ::close(fd);
}
Error errno_error(int err, const char* op, int fd) {
  return Error{std::error_code(err, std::system_category()), op, fd, 0};
}
}  // namespace

std::string ExitStatus::describe() const {
  if (exited) return "exited with code " + std::to_string(code);
  return "killed by signal " + std::to_string(signal) + " (" + ::strsignal(signal) + ")";
}

// ---------------------------------------------------------------- Source

namespace detail {

void Source::attach(Loop& l) noexcept {
  loop = &l;
  if (!keeps_alive) ++l.weak_sources_;
  src_prev = nullptr;
  src_next = l.sources_;
  if (l.sources_) l.sources_->src_prev = this;
  l.sources_ = this;
}

void Source::set_keeps_alive(bool on) noexcept {
  if (on == keeps_alive) return;
  keeps_alive = on;
  if (loop) on ? --loop->weak_sources_ : ++loop->weak_sources_;
}

void Source::detach() noexcept {
  if (!loop) return;
  if (!keeps_alive) --loop->weak_sources_;
  if (src_prev)
    src_prev->src_next = src_next;
  else
    loop->sources_ = src_next;
  if (src_next) src_next->src_prev = src_prev;
  src_prev = src_next = nullptr;
  loop = nullptr;
}

// --------------------------------------------------------------- Watcher

struct WatcherState final : Source {
  int fd = -1;
  OpBase rop, wop;
  WatchOptions opts;
  Watcher* owner = nullptr;
  bool enabled = true;
  bool cancelled = false;
  bool orphaned = false;  // the handle died inside a callback
  int in_callback = 0;

  void prepare(OpBase& op, unsigned mask) {
    op.kind = OpKind::poll;
    op.fd = fd;
    op.flags = static_cast<int>(mask);
    op.ctx = this;
    op.deliver = &on_ready;
  }
  void arm() {
    if (!loop || cancelled || !enabled) return;
    if (opts.want_read && opts.read && !live(rop)) loop->start(rop);
    if (opts.want_write && opts.write && !live(wop)) loop->start(wop);
  }
  void settle() {  // after a callback or a cancellation completion
    if (orphaned && in_callback == 0 && !live(rop) && !live(wop)) {
      delete this;
      return;
    }
    arm();
  }
  void stop_op(OpBase& op) {
    if (loop && live(op)) loop->cancel(op);
  }
  void unregister() {
    if (loop && loop->watched_fds_) loop->watched_fds_->erase(fd);
  }
  std::size_t live_ops() const noexcept override {
    return std::size_t{live(rop)} + std::size_t{live(wop)};
  }
  static void on_ready(OpBase& op) {
    auto* self = static_cast<WatcherState*>(op.ctx);
    const bool reading = &op == &self->rop;
    ++self->in_callback;
    struct Done {
      WatcherState* s;
      ~Done() {
        --s->in_callback;
        s->settle();
      }
    } done{self};
    if (op.res == -ECANCELED) return;
    // A readiness that was already reaped (or queued) when the interest
    // went off is stale: disable() / want_*(false) mean no callback.
    if (!self->enabled || !(reading ? self->opts.want_read : self->opts.want_write)) return;
    if (op.res < 0 || (op.res & POLLNVAL)) {
      // Never spin on a broken fd: that interest is off until re-enabled.
      (reading ? self->opts.want_read : self->opts.want_write) = false;
      Error e = errno_error(op.res < 0 ? -op.res : EBADF, "watch", self->fd);
      if (self->opts.error && !self->orphaned) self->opts.error(*self->owner, e);
      return;
    }
    auto& cb = reading ? self->opts.read : self->opts.write;
    if (cb && !self->orphaned && !self->cancelled) cb(*self->owner);
  }
};

}  // namespace detail

Watcher::Watcher(detail::WatcherState* s) noexcept : state_(s) {
  if (state_) state_->owner = this;
}
Watcher::Watcher(Watcher&& o) noexcept : state_(std::exchange(o.state_, nullptr)) {
  if (state_) state_->owner = this;
}
Watcher& Watcher::operator=(Watcher&& o) noexcept {
  if (this != &o) {
    cancel();
    state_ = std::exchange(o.state_, nullptr);
    if (state_) state_->owner = this;
  }
  return *this;
}
Watcher::~Watcher() { cancel(); }

int Watcher::fd() const noexcept { return state_ ? state_->fd : -1; }
bool Watcher::active() const noexcept {
  return state_ && !state_->cancelled && state_->enabled && state_->loop;
}

Result<void> Watcher::want_read(bool on) {
  if (!state_ || !state_->loop) return errno_error(ECANCELED, "watch", fd());
  if (on && !fd_open(state_->fd)) return errno_error(EBADF, "watch", state_->fd);
  state_->opts.want_read = on;
  if (!on) state_->stop_op(state_->rop);
  if (!state_->in_callback) state_->arm();
  return {};
}
Result<void> Watcher::want_write(bool on) {
  if (!state_ || !state_->loop) return errno_error(ECANCELED, "watch", fd());
  if (on && !fd_open(state_->fd)) return errno_error(EBADF, "watch", state_->fd);
  state_->opts.want_write = on;
  if (!on) state_->stop_op(state_->wop);
  if (!state_->in_callback) state_->arm();
  return {};
}
void Watcher::on_read(std::function<void(Watcher&)> cb) {
  if (!state_) return;
  state_->opts.read = std::move(cb);
  if (!state_->opts.read) state_->stop_op(state_->rop);
  if (!state_->in_callback) state_->arm();
}
void Watcher::on_write(std::function<void(Watcher&)> cb) {
  if (!state_) return;
  state_->opts.write = std::move(cb);
  if (!state_->opts.write) state_->stop_op(state_->wop);
  if (!state_->in_callback) state_->arm();
}
void Watcher::on_error(std::function<void(Watcher&, const Error&)> cb) {
  if (state_) state_->opts.error = std::move(cb);
}
void Watcher::keep_alive(bool on) noexcept {
  if (state_) state_->set_keeps_alive(on);
}
bool Watcher::keeps_alive() const noexcept { return state_ && state_->keeps_alive; }
void Watcher::disable() {
  if (!state_) return;
  state_->enabled = false;
  state_->stop_op(state_->rop);
  state_->stop_op(state_->wop);
}
Result<void> Watcher::enable() {
  if (!state_ || !state_->loop) return errno_error(ECANCELED, "watch", fd());
  if (!fd_open(state_->fd)) return errno_error(EBADF, "watch", state_->fd);
  state_->enabled = true;
  if (!state_->in_callback) state_->arm();
  return {};
}
void Watcher::cancel() {
  detail::WatcherState* s = std::exchange(state_, nullptr);
  if (!s) return;
  s->cancelled = true;
  s->unregister();
  if (s->in_callback) {  // inside its own callback: finish after it returns
    s->orphaned = true;
    s->stop_op(s->rop);
    s->stop_op(s->wop);
    return;
  }
  if (s->loop) {
    if (live(s->rop)) s->loop->abandon(s->rop);
    if (live(s->wop)) s->loop->abandon(s->wop);
  }
  s->detach();
  delete s;
}

Watcher Loop::watch(FdRef fd, WatchOptions options) {
  if (!fd_open(fd.fd))
    throw std::invalid_argument("lev::Loop::watch: fd " + std::to_string(fd.fd) + " is not open");
  if (!watched_fds_) watched_fds_ = std::make_unique<detail::FdSet>();
  if (!watched_fds_->insert(fd.fd).second)
    throw std::invalid_argument("lev::Loop::watch: fd " + std::to_string(fd.fd) +
                                " already has a watcher on this loop");
  auto* s = new detail::WatcherState;
  s->fd = fd.fd;
  s->opts = std::move(options);
  s->prepare(s->rop, POLLIN | POLLRDHUP);
  s->prepare(s->wop, POLLOUT);
  s->keeps_alive = s->opts.keep_alive;
  s->attach(*this);
  Watcher w(s);
  s->arm();
  return w;
}

// ---------------------------------------------------------------- Signal

namespace detail {

struct SignalEntry {
  std::shared_ptr<SignalHub> hub;
  int signo = 0;
  std::function<void(int)> cb;
  std::uint64_t seq = 0;  // creation order: a delivery reaches entries older than it
  bool dead = false;
  bool keep_alive = true;
};

struct SignalHub final : Source {
  int sfd = -1;
  sigset_t mask{};
  bool was_blocked[NSIG] = {};
  int watchers[NSIG] = {};
  std::list<SignalEntry> entries;
  OpBase op;
  signalfd_siginfo infos[8];
  bool dispatching = false;
  std::uint64_t next_seq = 0;
  std::weak_ptr<SignalHub> self;

  SignalHub() {
    sigemptyset(&mask);
    op.kind = OpKind::read;
    op.ctx = this;
    op.deliver = &on_read;
  }
  ~SignalHub() override {
    if (sfd >= 0) close_fd(sfd);
    for (int s = 1; s < NSIG; ++s)
      if (watchers[s] > 0 && !was_blocked[s]) unblock(s);
  }
  // Unblocks `signo` for this thread. A delivery still pending arrived
  // while the signal was watched: it is consumed here (it belonged to the
  // watch), never left to run its default action once unblocked.
  static void unblock(int signo) {
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    const timespec now{0, 0};
    for (int i = 0; i < 64 && ::sigtimedwait(&one, nullptr, &now) == signo; ++i) {
    }
    pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
  }
  void add(int signo) {
    if (watchers[signo]++ == 0) {
      sigset_t one, old;
      sigemptyset(&one);
      sigaddset(&one, signo);
      pthread_sigmask(SIG_BLOCK, &one, &old);
      was_blocked[signo] = sigismember(&old, signo) == 1;
      sigaddset(&mask, signo);
      int fd = ::signalfd(sfd, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
      if (fd < 0) throw std::system_error(errno, std::system_category(), "lev: signalfd");
      sfd = fd;
    }
    arm();
  }
  void remove(int signo) {
    if (--watchers[signo] == 0) {
      sigdelset(&mask, signo);
      if (sfd >= 0) ::signalfd(sfd, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
      if (!was_blocked[signo]) unblock(signo);
    }
    bool any = false;
    for (int s = 1; s < NSIG && !any; ++s) any = watchers[s] > 0;
    if (!any && loop && live(op)) loop->cancel(op);
  }
  void arm() {
    if (!loop || live(op) || sfd < 0) return;
    bool any = false;
    for (int s = 1; s < NSIG && !any; ++s) any = watchers[s] > 0;
    if (!any) return;
    op.fd = sfd;
    detail::setup_io(op, infos, sizeof(infos), static_cast<std::uint64_t>(-1), 0);
    loop->start(op);
  }
  void sweep() {
    entries.remove_if([](const SignalEntry& e) { return e.dead; });
  }
  std::size_t live_ops() const noexcept override { return live(op) ? 1 : 0; }
  // The hub's one read keeps the loop alive while any live Signal does.
  void update_keep_alive() noexcept {
    bool any = false;
    for (const SignalEntry& e : entries) any = any || (!e.dead && e.keep_alive);
    set_keeps_alive(any);
  }
  static void on_read(OpBase& op) {
    auto* hub = static_cast<SignalHub*>(op.ctx);
    auto keep = hub->self.lock();  // a callback may drop the last Signal
    if (op.res > 0) {
      hub->dispatching = true;
      const auto n = static_cast<std::size_t>(op.res) / sizeof(signalfd_siginfo);
      // Entries made by a callback of this dispatch start with the next one.
      const std::uint64_t newest = hub->next_seq;
      for (std::size_t i = 0; i < n; ++i) {
        const int signo = static_cast<int>(hub->infos[i].ssi_signo);
        for (auto& e : hub->entries)
          if (!e.dead && e.seq < newest && e.signo == signo && e.cb) e.cb(signo);
      }
      hub->dispatching = false;
      hub->sweep();
    }
    hub->arm();
  }
};

}  // namespace detail

Signal& Signal::operator=(Signal&& o) noexcept {
  if (this != &o) {
    cancel();
    entry_ = std::exchange(o.entry_, nullptr);
  }
  return *this;
}

void Signal::cancel() noexcept {
  detail::SignalEntry* e = std::exchange(entry_, nullptr);
  if (!e) return;
  std::shared_ptr<detail::SignalHub> hub = e->hub;
  e->dead = true;  // its callback (maybe running now) goes with the sweep after the dispatch
  hub->remove(e->signo);
  if (!hub->dispatching) hub->sweep();
  hub->update_keep_alive();
}

void Signal::keep_alive(bool on) noexcept {
  if (!entry_) return;
  entry_->keep_alive = on;
  entry_->hub->update_keep_alive();
}
bool Signal::keeps_alive() const noexcept { return entry_ && entry_->keep_alive; }

Signal Loop::signal(int signo, std::function<void(int)> cb) {
  if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP)
    throw std::invalid_argument("lev::Loop::signal: signal " + std::to_string(signo) +
                                " cannot be watched");
  if (!signals_) {
    signals_ = std::make_shared<detail::SignalHub>();
    signals_->self = signals_;
    signals_->attach(*this);
  }
  signals_->entries.push_back({signals_, signo, std::move(cb), signals_->next_seq++, false});
  detail::SignalEntry* e = &signals_->entries.back();
  signals_->add(signo);
  signals_->update_keep_alive();
  return Signal(e);
}

// ----------------------------------------------------------------- Waker

namespace detail {

struct EventFd {
  explicit EventFd(int f) noexcept : fd(f) {}
  EventFd(const EventFd&) = delete;
  EventFd& operator=(const EventFd&) = delete;
  ~EventFd() { close_fd(fd); }
  int fd;
};

struct WakerState final : Source {
  std::shared_ptr<EventFd> efd;
  std::function<void()> cb;
  OpBase op;
  std::uint64_t count = 0;
  std::weak_ptr<WakerState> self;  // held while the callback runs: it may drop the Waker

  std::size_t live_ops() const noexcept override { return live(op) ? 1 : 0; }

  void arm() {
    if (!loop) return;
    op.fd = efd->fd;
    detail::setup_io(op, &count, sizeof(count), static_cast<std::uint64_t>(-1), 0);
    loop->start(op);
  }
  static void on_read(OpBase& op) {
    auto* self = static_cast<WakerState*>(op.ctx);
    if (!self->loop) return;  // the Waker is going away
    const std::shared_ptr<WakerState> keep = self->self.lock();
    if (op.res < 0) {
      // No wake was taken: read again. EAGAIN (a backend that reports it
      // rather than waiting), EINTR, ECANCELED (the engine let the read go:
      // Waker::cancel never delivers one) pass; anything else would only
      // repeat, so it is said, once, rather than spun on or kept silent.
      const int err = -op.res;
      if (err == EAGAIN || err == EINTR || err == ECANCELED) {
        self->arm();
        return;
      }
      log_message(LogLevel::error, "waker: " + errno_error(err, "read", op.fd).message() +
                                       "; its callback is not called again");
      return;
    }
    self->arm();  // re-armed first: a wake() from the callback counts
    if (self->cb) self->cb();
  }
};

}  // namespace detail

Waker& Waker::operator=(Waker&& o) noexcept {
  if (this != &o) {
    cancel();
    state_ = std::move(o.state_);
  }
  return *this;
}

void Waker::wake() const noexcept {
  if (!state_) return;
  std::uint64_t one = 1;
  (void)!::write(state_->efd->fd, &one, sizeof(one));
}

std::function<void()> Waker::remote() const {
  std::shared_ptr<detail::EventFd> efd = state_ ? state_->efd : nullptr;
  return [efd] {
    if (!efd) return;
    std::uint64_t one = 1;
    (void)!::write(efd->fd, &one, sizeof(one));
  };
}

void Waker::keep_alive(bool on) noexcept {
  if (state_) state_->set_keeps_alive(on);
}
bool Waker::keeps_alive() const noexcept { return state_ && state_->keeps_alive; }

void Waker::cancel() noexcept {
  if (!state_) return;
  if (state_->loop && live(state_->op)) state_->loop->abandon(state_->op);
  state_->detach();
  state_.reset();
}

Waker Loop::waker(std::function<void()> cb) {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::system_category(), "lev: eventfd");
  auto s = std::make_shared<detail::WakerState>();
  s->self = s;
  s->efd = std::make_shared<detail::EventFd>(fd);
  s->cb = std::move(cb);
  s->op.kind = OpKind::read;
  s->op.ctx = s.get();
  s->op.deliver = &detail::WakerState::on_read;
  s->attach(*this);
  s->arm();
  return Waker(std::move(s));
}

// -------------------------------------------------------------- PidWatch

namespace detail {

struct PidState final : Source {
  pid_t pid = 0;
  int pidfd = -1;
  OpBase op;
  std::function<void(pid_t, Result<ExitStatus>)> cb;
  bool done = false;
  bool in_callback = false;
  bool orphaned = false;  // the handle was dropped inside the callback

  ~PidState() override {
    if (pidfd >= 0) close_fd(pidfd);
  }
  std::size_t live_ops() const noexcept override { return live(op) ? 1 : 0; }
  // The exit status, by waitid on the pidfd (which reaps the child); an
  // error when it cannot be had (ECHILD: not our child, or reaped already).
  Result<ExitStatus> collect() const {
    siginfo_t info{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info,
                 WEXITED | WNOHANG) != 0)
      return errno_error(errno, "waitid", pidfd);
    if (info.si_pid == 0) return errno_error(EAGAIN, "waitid", pidfd);
    ExitStatus st;
    st.exited = info.si_code == CLD_EXITED;
    (st.exited ? st.code : st.signal) = info.si_status;
    return st;
  }
  static void on_ready(OpBase& op) {
    auto* self = static_cast<PidState*>(op.ctx);
    self->done = true;
    if (op.res == -ECANCELED) return;  // the watch was dropped
    Result<ExitStatus> st = op.res < 0 ? Result<ExitStatus>(errno_error(-op.res, "pid", self->pidfd))
                                       : self->collect();
    close_fd(self->pidfd);
    self->pidfd = -1;
    if (!self->cb) return;
    self->in_callback = true;
    self->cb(self->pid, std::move(st));
    self->in_callback = false;
    if (self->orphaned) delete self;  // dropped inside: its callback has returned now
  }
};

}  // namespace detail

PidWatch& PidWatch::operator=(PidWatch&& o) noexcept {
  if (this != &o) {
    cancel();
    state_ = std::exchange(o.state_, nullptr);
  }
  return *this;
}

bool PidWatch::active() const noexcept { return state_ && !state_->done && state_->loop; }

void PidWatch::keep_alive(bool on) noexcept {
  if (state_) state_->set_keeps_alive(on);
}
bool PidWatch::keeps_alive() const noexcept { return state_ && state_->keeps_alive; }

void PidWatch::cancel() noexcept {
  detail::PidState* s = std::exchange(state_, nullptr);
  if (!s) return;
  if (s->loop && live(s->op)) s->loop->abandon(s->op);
  s->detach();
  if (s->in_callback) {
    s->orphaned = true;  // on_ready deletes it once the callback returns
    return;
  }
  delete s;
}

PidWatch Loop::pid(pid_t pid, std::function<void(pid_t, Result<ExitStatus>)> cb) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0)
    throw std::system_error(errno, std::system_category(),
                            "lev::Loop::pid: pidfd_open(" + std::to_string(pid) + ")");
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  auto* s = new detail::PidState;
  s->pid = pid;
  s->pidfd = fd;
  s->cb = std::move(cb);
  s->op.kind = OpKind::poll;
  s->op.fd = fd;
  s->op.flags = POLLIN;
  s->op.ctx = s;
  s->op.deliver = &detail::PidState::on_ready;
  s->attach(*this);
  start(s->op);
  return PidWatch(s);
}

}  // namespace lev
