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
#include <system_error>

#include "core/fd_hooks.hpp"
#include "lev/detail/buffer_pool.hpp"
#include "lev/detail/ops/all.hpp"

namespace lev {

using detail::OpBase;
using detail::OpKind;

namespace {

// The epoll engines living on this thread (a Loop belongs to one thread).
thread_local std::vector<EpollBackend*> t_engines;

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

}  // namespace

EpollBackend::EpollBackend(unsigned file_workers)
    : epfd_(::epoll_create1(EPOLL_CLOEXEC)), file_worker_count_(file_workers) {
  if (epfd_ < 0) throw std::system_error(errno, std::system_category(), "lev: epoll_create1");
  t_engines.push_back(this);
}

EpollBackend::~EpollBackend() {
  workers_.reset();  // joins the workers (the loop waited for their ops)
  t_engines.erase(std::find(t_engines.begin(), t_engines.end(), this));
  ::close(epfd_);
}

void EpollBackend::closing(int fd) noexcept { forget_fd(fd, false); }

namespace detail {
void epoll_fd_closing(int fd) noexcept {
  for (EpollBackend* e : t_engines) e->closing(fd);
}
}  // namespace detail

EpollBackend::FdState& EpollBackend::state(int fd) {
  auto i = static_cast<std::size_t>(fd);
  if (i >= fds_.size()) fds_.resize(std::max(i + 1, fds_.size() * 2));
  FdState& st = fds_[i];
  if (!st.nonblocking) {
    int fl = ::fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    st.nonblocking = true;
  }
  return st;
}

void EpollBackend::submit(OpBase& op) {
  op.backend_data = kNew;
  fresh_.push_back(&op);
  ++held_;
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
  const bool writer = is_writer(op);
  if ((e.wait == detail::Wait::read || e.wait == detail::Wait::write) &&
      !(writer ? st.writable : st.readable))
    return false;  // known not ready: wait for the next edge
  for (;;) {
    const long r = e.attempt(op);
    if (r >= 0) {
      op.res = static_cast<int>(std::min<long>(r, INT_MAX));
      if (e.yields_fd) forget_fd(op.res, false);  // a fresh fd: no stale state
      return true;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      (writer ? st.writable : st.readable) = false;
      return false;
    }
    op.res = -errno;
    return true;
  }
}

void EpollBackend::park(OpBase& op, FdState& st) {
  if (!st.registered) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.fd = op.fd;
    if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, op.fd, &ev) != 0) {
      if (errno != EEXIST) {
        finish(op, -errno);  // EBADF, or EPERM for a file epoll cannot watch
        return;
      }
    }
    st.registered = true;
  }
  OpBase*& head = is_writer(op) ? st.writers : st.readers;
  op.backend_data = is_writer(op) ? kWriters : kReaders;
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

void EpollBackend::unpark(OpBase& op) noexcept {
  FdState& st = fds_[static_cast<std::size_t>(op.fd)];
  OpBase*& head = (op.backend_data & 0xf) == kWriters ? st.writers : st.readers;
  if (op.link_prev)
    op.link_prev->link_next = op.link_next;
  else
    head = op.link_next;
  if (op.link_next) op.link_next->link_prev = op.link_prev;
  op.link_prev = op.link_next = nullptr;
}

// Retries the parked ops of one list in order until one would block.
std::size_t EpollBackend::retry(OpBase*& list, FdState& st) {
  std::size_t n = 0;
  while (OpBase* op = list) {
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

bool EpollBackend::offloaded(const OpBase& op) {
  const detail::KindEntry& e = detail::kind_entry(op.kind);
  if (e.wait == detail::Wait::offload) return true;
  if (!e.may_be_file || op.fd < 0) return false;
  FdState& st = state(op.fd);
  if (!st.typed) {
    struct stat sb {};
    st.unpollable = ::fstat(op.fd, &sb) == 0 &&
                    (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode) || S_ISBLK(sb.st_mode));
    st.typed = true;
  }
  return st.unpollable;
}

void EpollBackend::offload(OpBase& op) {
  if (!workers_) {
    workers_ = std::make_unique<FileWorkers>(file_worker_count_);
  }
  const bool first = workers_->done_fd() < 0;
  op.backend_data = kWorker;
  workers_->push(op);
  if (first) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = -3;  // results of the file workers: collected after every wait
    if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, workers_->done_fd(), &ev) != 0)
      throw std::system_error(errno, std::system_category(), "lev: epoll_ctl(file workers)");
  }
}

std::size_t EpollBackend::take_worker_results() {
  if (!workers_) return 0;
  std::size_t n = 0;
  for (OpBase* op : workers_->take_done()) {
    if (op->res >= 0 && detail::kind_entry(op->kind).yields_fd) forget_fd(op->res, false);
    finish(*op, op->res);
    ++n;
  }
  return n;
}

void EpollBackend::cancel(OpBase& op) {
  switch (op.backend_data & 0xf) {
    case kWorker:
      if (!workers_->cancel(op)) return;  // running: its result comes, and wins
      break;
    case kNew:
      fresh_.erase(std::find(fresh_.begin(), fresh_.end(), &op));
      break;
    case kReaders:
    case kWriters:
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
  for (OpBase* op : std::vector<OpBase*>(fresh_)) cancel(*op);
  if (workers_)  // those not started; running ones finish on their own
    for (OpBase* op : workers_->take_queued()) finish(*op, -ECANCELED);
  for (auto& st : fds_) {
    while (OpBase* op = st.readers) cancel(*op);
    while (OpBase* op = st.writers) cancel(*op);
  }
}

std::size_t EpollBackend::poll(std::optional<Duration> timeout) {
  std::size_t n = finished_;  // cancellations pushed since the last round
  finished_ = 0;
  if (!fresh_.empty()) {
    std::vector<OpBase*> batch;
    batch.swap(fresh_);
    for (OpBase* op : batch) {
      if (op->backend_data != kNew) continue;  // cancelled meanwhile
      if (offloaded(*op)) {
        offload(*op);
        continue;
      }
      if (op->kind == OpKind::nop || op->fd < 0) {
        finish(*op, op->kind == OpKind::nop ? 0 : -EBADF);  // what the kernel says of fd -1
        continue;
      }
      FdState& st = state(op->fd);
      if (attempt(*op, st))
        finish(*op, op->res);
      else
        park(*op, st);
    }
    batch.clear();
    if (fresh_.empty()) fresh_.swap(batch);  // keep the capacity
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
    n += retry(st.readers, st);
    n += retry(st.writers, st);
  }
  n += take_worker_results();
  n += finished_;
  finished_ = 0;
  return n;
}

}  // namespace lev
