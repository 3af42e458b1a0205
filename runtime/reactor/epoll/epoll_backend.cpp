// The epoll engine. Each op is tried once when the loop polls; on EAGAIN
// it parks on its fd until an edge-triggered epoll event says the fd may be
// ready, then it is tried again. Completions go to the loop's queue only.
#include "reactor/epoll/epoll_backend.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <new>
#include <system_error>

#include "core/fd_hooks.hpp"
#include "lev/detail/buffer_pool.hpp"
#include "lev/detail/ops/all.hpp"

namespace lev {

using detail::OpBase;
using detail::OpKind;

namespace {

// Whether `op` waits as a writer (for a poll op: by its mask).
bool is_writer(const OpBase& op) {
  const detail::KindEntry& e = detail::kind_entry(op.kind);
  switch (e.wait) {
    case detail::Wait::write:
      return true;
    case detail::Wait::mask:
      return !(op.flags & (POLLIN | POLLPRI | POLLRDHUP));
    case detail::Wait::offload:
      return e.writes;
    default:
      return false;
  }
}

int splice_out(const OpBase& op) noexcept {
  return static_cast<const detail::SpliceArgs*>(op.args)->fd_out;
}

// Whether `op` would act on `fd`: its own, or the output of a splice.
bool uses_fd(const OpBase& op, int fd) noexcept {
  return op.fd == fd || (op.kind == OpKind::splice && splice_out(op) == fd);
}

// The errno a failed start of an op reports.
int error_of(const std::system_error& e) noexcept {
  const std::error_code c = e.code();
  const bool errno_value =
      c.category() == std::system_category() || c.category() == std::generic_category();
  return errno_value && c.value() > 0 ? c.value() : EIO;
}

// Runs an op's nonblocking syscall until it is not interrupted: true when
// it finished (op.res: the result, or -errno), false when it said EAGAIN.
template <class Call>
bool run_syscall(OpBase& op, Call call) noexcept {
  for (;;) {
    const long r = call(op);
    if (r >= 0) [[likely]] {
      op.res = static_cast<int>(std::min<long>(r, INT_MAX));
      return true;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    op.res = -errno;
    return true;
  }
}

}  // namespace

EpollBackend::EpollBackend(unsigned file_workers)
    : epfd_(::epoll_create1(EPOLL_CLOEXEC)), workers_(std::make_unique<FileWorkers>(file_workers)) {
  if (epfd_ < 0) throw std::system_error(errno, std::system_category(), "lev: epoll_create1");
}

EpollBackend::~EpollBackend() {
  ::close(epfd_);  // workers_ joins its threads next (the loop waited for their ops)
}

// The first use of an fd (or of a table slot): grows the table, puts the
// fd in O_NONBLOCK mode, marks it for closes on any thread. Out of line:
// the hot path (state()) is a bounds check and a flag.
EpollBackend::FdState& EpollBackend::first_use(int fd) {
  auto i = static_cast<std::size_t>(fd);
  if (i >= fds_.size()) fds_.resize(std::max(i + 1, fds_.size() * 2));
  FdState& st = fds_[i];
  if (!st.nonblocking) {
    int fl = ::fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    st.nonblocking = true;
    if (marks_) marks_->mark(fd);  // once per fd: a close on any thread reaches closing()
  }
  return st;
}

void EpollBackend::submit(OpBase& op) {
  op.backend_data = kNew;
  fresh_other_ += op.kind != OpKind::recv && op.fd >= 0;
  if (fresh_n_ < fresh_.size()) [[likely]]
    fresh_[fresh_n_] = &op;
  else
    grow_fresh(op);
  ++fresh_n_;
  ++held_;
}

EpollBackend::Now EpollBackend::try_send(OpBase& op) noexcept {
  const auto i = static_cast<std::size_t>(op.fd);  // -1: past the table
  if (fresh_other_ != 0 || i >= fds_.size()) return Now::declined;
  FdState& st = fds_[i];
  // A first use (O_NONBLOCK not yet set), a continuation (send_all): the
  // ordinary path. After the sends parked first: in their order.
  if (!st.nonblocking || op.flow || st.writers) [[unlikely]]
    return Now::declined;
  if (st.writable) {  // SendOp's attempt, without the table's dispatch
    if (run_syscall(op, &detail::SendOp::attempt)) return Now::done;
    st.writable = false;
  }
  ++held_;
  park(op, op.fd, true, kWriters);
  return Now::held;
}

int detail::reactor_try_send(EpollBackend& engine, OpBase& op) noexcept {
  return static_cast<int>(engine.try_send(op));
}

void EpollBackend::grow_fresh(OpBase& op) {
  fresh_.push_back(&op);  // fresh_n_ == size(): appends in place
}

void EpollBackend::finish(OpBase& op, int res) {
  --held_;
  ++finished_;
  op.backend_data = 0;
  queue_->push(op, res,
               (op.kind == OpKind::recv || op.kind == OpKind::recvmsg) && op.select && res > 0
                   ? op.cqe_flags
                   : 0);
}

// Runs the op's syscall (its description's attempt) unless its fd is
// known not to be ready; false when it must wait for the next edge.
bool EpollBackend::attempt(OpBase& op, FdState& st) {
  const detail::KindEntry& e = detail::kind_entry(op.kind);
  return attempt(op, st, e, is_writer(op));
}

bool EpollBackend::attempt(OpBase& op, FdState& st, const detail::KindEntry& e, bool writer) {
  if ((e.wait == detail::Wait::read || e.wait == detail::Wait::write) &&
      !(writer ? st.writable : st.readable))
    return false;  // known not ready: wait for the next edge
  if (!run_syscall(op, e.attempt)) {
    (writer ? st.writable : st.readable) = false;
    return false;
  }
  if (e.yields_fd && op.res >= 0) forget_fd(op.res, false);  // a fresh fd: no stale state
  return true;
}

// A splice moves bytes from op.fd to its fd_out: it needs the input
// readable and the output writable, and an EAGAIN may come from either
// (both are in O_NONBLOCK mode and SPLICE_F_NONBLOCK is set: it never
// blocks the loop). poll(2) says which side to wait for.
EpollBackend::Side EpollBackend::attempt_splice(OpBase& op) {
  const int in = op.fd, out = splice_out(op);
  // Both states exist: made when the splice was first tried (start()).
  if (!fds_[static_cast<std::size_t>(in)].readable) return Side::input;
  if (!fds_[static_cast<std::size_t>(out)].writable) return Side::output;
  const detail::KindEntry& e = detail::kind_entry(op.kind);
  for (int tries = 0;; ++tries) {
    if (run_syscall(op, e.attempt)) return Side::done;
    pollfd p[2] = {{in, POLLIN | POLLRDHUP, 0}, {out, POLLOUT, 0}};
    if (::poll(p, 2, 0) < 0) p[0].revents = p[1].revents = 0;
    const bool out_ready = p[1].revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL);
    const bool in_ready = p[0].revents & (POLLIN | POLLRDHUP | POLLERR | POLLHUP | POLLNVAL);
    if (!out_ready) {
      fds_[static_cast<std::size_t>(out)].writable = false;
      return Side::output;
    }
    if (!in_ready || tries > 0) {  // both looked ready twice: wait for the input
      fds_[static_cast<std::size_t>(in)].readable = false;
      return Side::input;
    }
  }
}

// Parks `op` on `fd`'s readers or writers, registering the fd with epoll
// on first use; an fd epoll refuses ends the op with the error.
void EpollBackend::park(OpBase& op, int fd, bool writer, Where where) {
  FdState& st = fds_[static_cast<std::size_t>(fd)];
  if (!st.registered) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.fd = fd;
    if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      if (errno != EEXIST) {
        finish(op, -errno);  // EBADF, or EPERM for a file epoll cannot watch
        return;
      }
    }
    st.registered = true;
  }
  OpBase*& head = writer ? st.writers : st.readers;
  op.backend_data = where;
  op.link_next = nullptr;
  op.link_prev = nullptr;
  if (!head) {
    head = &op;
    return;
  }
  OpBase* tail = head;
  while (tail->link_next) tail = tail->link_next;
  tail->link_next = &op;
  op.link_prev = tail;
}

void EpollBackend::park_splice(OpBase& op, Side side) {
  if (side == Side::output) {
    park(op, splice_out(op), true, kSpliceOut);
    return;
  }
  // On its input: remembered, so that a close of its output finds it.
  try {
    splices_.push_back(&op);
  } catch (const std::bad_alloc&) {
    finish(op, -ENOMEM);
    return;
  }
  park(op, op.fd, false, kReaders);
  if (op.backend_data != kReaders) splices_.pop_back();  // refused by epoll: finished
}

void EpollBackend::unpark(OpBase& op) noexcept {
  const std::uintptr_t where = op.backend_data & 0xf;
  const int fd = where == kSpliceOut ? splice_out(op) : op.fd;
  FdState& st = fds_[static_cast<std::size_t>(fd)];
  OpBase*& head = where == kReaders ? st.readers : st.writers;
  if (op.link_prev)
    op.link_prev->link_next = op.link_next;
  else
    head = op.link_next;
  if (op.link_next) op.link_next->link_prev = op.link_prev;
  op.link_prev = op.link_next = nullptr;
  if (op.kind == OpKind::splice && where == kReaders)
    splices_.erase(std::find(splices_.begin(), splices_.end(), &op));
}

// Retries the parked ops of one of `fd`'s lists in order until one would
// block. A splice that now waits for its other side (another fd: splice
// refuses in == out) moves there.
std::size_t EpollBackend::retry(int fd, bool writers) {
  std::size_t n = 0;
  for (;;) {
    FdState& st = fds_[static_cast<std::size_t>(fd)];
    OpBase* op = writers ? st.writers : st.readers;
    if (!op) break;
    if (op->kind == OpKind::splice) {
      const Side side = attempt_splice(*op);
      if (side != Side::done && (side == Side::output) == writers) break;  // still this side
      unpark(*op);
      if (side == Side::done) {
        finish(*op, op->res);
        ++n;
      } else {
        park_splice(*op, side);
      }
      continue;
    }
    if (!attempt(*op, st)) break;
    unpark(*op);
    finish(*op, op->res);
    ++n;
  }
  return n;
}

void EpollBackend::forget_fd(int fd, bool deregister) {
  if (fd < 0 || static_cast<std::size_t>(fd) >= fds_.size()) return;
  FdState& st = fds_[static_cast<std::size_t>(fd)];
  // Ops still waiting on an fd that is being closed can never be woken.
  while (OpBase* op = st.readers) {
    unpark(*op);
    finish(*op, -ECANCELED);
  }
  while (OpBase* op = st.writers) {
    unpark(*op);
    finish(*op, -ECANCELED);
  }
  if (st.registered && deregister) ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  st = FdState{};
}

void EpollBackend::closing(int fd, bool here) noexcept {
  if (fd < 0) return;
  // Submitted and not yet tried: tried later, they would act on whatever
  // file takes the number next. (A close op is left alone: it is the close.)
  for (std::size_t i = 0; here && i < fresh_n_;) {
    OpBase* op = fresh_[i];
    if (op->kind != OpKind::close && uses_fd(*op, fd)) {
      erase_fresh(i);
      finish(*op, -ECANCELED);
    } else {
      ++i;
    }
  }
  // Splices waiting for their input would write to the closed output.
  for (std::size_t i = 0; i < splices_.size();) {
    OpBase* op = splices_[i];
    if (splice_out(*op) == fd) {
      unpark(*op);  // takes it out of splices_
      finish(*op, -ECANCELED);
    } else {
      ++i;
    }
  }
  forget_fd(fd, false);
  if (here) workers_->closing(fd);
}

bool EpollBackend::unpollable(int fd, FdState& st) {
  if (!st.typed) {
    struct stat sb {};
    st.unpollable = ::fstat(fd, &sb) == 0 &&
                    (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode) || S_ISBLK(sb.st_mode));
    st.typed = true;
  }
  return st.unpollable;
}

// Throws (std::system_error, std::bad_alloc) only with `op` not queued.
void EpollBackend::offload(OpBase& op) {
  if (!workers_watched_) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = -3;  // results of the file workers: collected after every wait
    if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, workers_->open_done_fd(), &ev) != 0)
      throw std::system_error(errno, std::system_category(), "lev: epoll_ctl(file workers)");
    workers_watched_ = true;
  }
  op.backend_data = kWorker;
  workers_->push(op);
}

std::size_t EpollBackend::take_worker_results() {
  if (!workers_watched_) return 0;
  workers_->take_done(taken_);
  for (OpBase* op : taken_) {
    if (op->res >= 0 && detail::kind_entry(op->kind).yields_fd) forget_fd(op->res, false);
    finish(*op, op->res);
  }
  return taken_.size();
}

void EpollBackend::cancel(OpBase& op) {
  switch (op.backend_data & 0xf) {
    case kWorker:
      if (!workers_->cancel(op)) return;  // running: its result comes, and wins
      break;
    case kNew: {
      const auto end = fresh_.begin() + static_cast<std::ptrdiff_t>(fresh_n_);
      const auto at = std::find(fresh_.begin(), end, &op);
      if (at == end) return;  // not queued here (cannot happen: held ops are)
      erase_fresh(static_cast<std::size_t>(at - fresh_.begin()));
      break;
    }
    case kReaders:
    case kWriters:
    case kSpliceOut:
      unpark(op);
      break;
    default:
      return;  // not held: already finished
  }
  finish(op, -ECANCELED);
}

void EpollBackend::set_wakeup_fd(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;  // an edge per write; the loop reads the fd
  ev.data.fd = -2;                // ignored by poll(): it only wakes the wait
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0)
    throw std::system_error(errno, std::system_category(), "lev: epoll_ctl(wakeup eventfd)");
}

void EpollBackend::cancel_all() {
  while (fresh_n_ > 0) cancel(*fresh_[0]);
  // Those not started; running ones finish on their own.
  for (OpBase* op : workers_->take_queued()) finish(*op, -ECANCELED);
  for (auto& st : fds_) {
    while (OpBase* op = st.readers) cancel(*op);
    while (OpBase* op = st.writers) cancel(*op);
  }
}

void EpollBackend::start(OpBase& op) {
  const detail::KindEntry& e = detail::kind_entry(op.kind);
  // The common case first: a socket op waiting for one side (recv, send,
  // accept, connect, sendmsg...), on an fd the engine has seen.
  const auto i = static_cast<std::size_t>(op.fd);  // -1: past the table
  if ((e.wait == detail::Wait::read || e.wait == detail::Wait::write) && !e.may_be_file &&
      op.kind != OpKind::splice && i < fds_.size() && fds_[i].nonblocking) [[likely]] {
    FdState& st = fds_[i];
    const bool writer = e.wait == detail::Wait::write;
    if (attempt(op, st, e, writer))
      finish(op, op.res);
    else
      park(op, op.fd, writer, writer ? kWriters : kReaders);
    return;
  }
  if (e.wait == detail::Wait::offload) {
    offload(op);
    return;
  }
  if (op.fd < 0 || op.kind == OpKind::nop) {
    finish(op, op.kind == OpKind::nop ? 0 : -EBADF);  // what the kernel says of fd -1
    return;
  }
  FdState& st = state(op.fd);
  if (e.may_be_file && unpollable(op.fd, st)) [[unlikely]] {
    offload(op);
    return;
  }
  if (op.kind == OpKind::splice) [[unlikely]] {
    start_splice(op);
    return;
  }
  const bool writer = is_writer(op);
  if (attempt(op, st, e, writer))
    finish(op, op.res);
  else
    park(op, op.fd, writer, writer ? kWriters : kReaders);
}

void EpollBackend::start_splice(OpBase& op) {
  const int out = splice_out(op);
  if (out < 0) {
    finish(op, -EBADF);
    return;
  }
  state(out);  // both in O_NONBLOCK mode, both states made (attempt_splice)
  state(op.fd);
  const Side side = attempt_splice(op);
  if (side == Side::done)
    finish(op, op.res);
  else
    park_splice(op, side);
}

std::size_t EpollBackend::poll(std::optional<Duration> timeout) {
  std::size_t n = finished_;  // cancellations pushed since the last round
  finished_ = 0;
  if (fresh_n_ > 0) {
    // The batch leaves fresh_ first: an op submitted or a close made while
    // it runs concerns ops after it, not these (started in submit order).
    std::vector<OpBase*> batch;
    batch.swap(fresh_);
    const std::size_t count = fresh_n_;
    fresh_n_ = 0;
    fresh_other_ = 0;
    for (std::size_t i = 0; i < count; ++i) {
      OpBase* op = batch[i];
      if (op->backend_data != kNew) continue;  // cancelled meanwhile
      // An op that cannot be started (no file worker, no memory) fails
      // alone, saying why; the rest of the batch goes on.
      try {
        start(*op);
      } catch (const std::system_error& e) {
        finish(*op, -error_of(e));
      } catch (const std::bad_alloc&) {
        finish(*op, -ENOMEM);
      } catch (const std::exception&) {
        finish(*op, -EIO);
      }
    }
    if (fresh_n_ == 0) fresh_.swap(batch);  // keep the capacity
  } else {
    fresh_other_ = 0;  // ops counted and then cancelled or closed before a try
  }
  n += take_worker_results();
  n += finished_;
  finished_ = 0;
  int ms = -1;
  if (n > 0 || (timeout && *timeout <= Duration::zero()))
    ms = 0;
  else if (timeout) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(*timeout).count();
    ms = static_cast<int>(std::min<long long>((us + 999) / 1000, INT_MAX));
  }
  epoll_event events[128];
  ++stats_.kernel_enters;
  int got = ::epoll_wait(epfd_, events, 128, ms);
  for (int i = 0; i < got; ++i) {
    const int fd = events[i].data.fd;
    if (fd < 0 || static_cast<std::size_t>(fd) >= fds_.size()) continue;
    FdState& st = fds_[static_cast<std::size_t>(fd)];
    const std::uint32_t ev = events[i].events;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI)) st.readable = true;
    if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) st.writable = true;
    n += retry(fd, false);
    n += retry(fd, true);
  }
  n += take_worker_results();
  n += finished_;
  finished_ = 0;
  return n;
}

}  // namespace lev
