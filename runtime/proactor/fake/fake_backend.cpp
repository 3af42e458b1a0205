// The fake backend: ops recorded, completed by the test (lev/fake.hpp).
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>

#include "lev/detail/buffer_pool.hpp"
#include "lev/detail/ops/datagram.hpp"
#include "lev/detail/ops/file.hpp"
#include "lev/detail/ops/socket.hpp"
#include "lev/detail/ops/vectored.hpp"
#include "lev/fake.hpp"
#include "lev/loop.hpp"

namespace lev {

FakeBackend::FakeBackend() : FakeBackend(Options{}) {}
FakeBackend::FakeBackend(Options options)
    : options_(options), clock_(std::make_shared<VirtualClock>()) {}

void FakeBackend::attach(CompletionQueue& queue) {
  if (queue_) throw std::logic_error("lev::FakeBackend: already attached to a loop");
  queue_ = &queue;
}

void FakeBackend::submit(detail::OpBase& op) {
  op.backend_data = kStaged;
  // A statx completed with complete(op, 0) reads a zeroed struct (all
  // fields 0), never what the awaiter's memory held (complete_stat fills it).
  if (op.kind == detail::OpKind::statx && op.args)
    static_cast<detail::StatxArgs*>(op.args)->out = {};
  pending_.push_back(&op);
  ++submits_;
  if (op.linked_timeout && options_.linked_timeouts) {
    const Duration after = std::chrono::seconds(op.lt_sec) + std::chrono::nanoseconds(op.lt_nsec);
    linked_.push_back({&op, saturating_add(clock_->now(), after)});
  }
}

TimePoint FakeBackend::linked_deadline(const detail::OpBase& op) const noexcept {
  for (const Linked& l : linked_)
    if (l.op == &op) return l.deadline;
  return TimePoint::max();
}

namespace {
// Writes `data` into a free buffer of the op's pool (as a datagram for a
// recvmsg); the CQE flags naming it, or 0 when the pool is dry.
unsigned fill_pool_buffer(detail::OpBase& op, std::string_view data, const SocketAddress* from,
                          int& res) {
  const int id = op.pool->take();
  if (id < 0) return 0;
  const auto bid = static_cast<std::uint16_t>(id);
  char* dst = op.pool->data(bid);
  if (op.kind == detail::OpKind::recvmsg) {
    res = static_cast<int>(detail::DatagramLayout::write(dst, op.pool->size(), data, from));
  } else {
    const std::size_t n = std::min<std::size_t>(data.size(), op.pool->size());
    std::memcpy(dst, data.data(), n);
    res = static_cast<int>(n);
  }
  return IORING_CQE_F_BUFFER | (static_cast<unsigned>(bid) << IORING_CQE_BUFFER_SHIFT);
}
// Copies `data` over the iovecs in order; the bytes copied.
std::size_t scatter(const iovec* iov, std::size_t count, std::string_view data) noexcept {
  std::size_t at = 0;
  for (std::size_t i = 0; i < count && at < data.size(); ++i) {
    const std::size_t k = std::min(data.size() - at, iov[i].iov_len);
    if (k) std::memcpy(iov[i].iov_base, data.data() + at, k);
    at += k;
  }
  return at;
}
bool is_pool_receive(const detail::OpBase& op) noexcept {
  return (op.kind == detail::OpKind::recv || op.kind == detail::OpKind::recvmsg) && op.select;
}
}  // namespace

bool FakeBackend::deliver_more(detail::OpBase& op, std::string_view data,
                               const SocketAddress* from) {
  if (!is_pool_receive(op) || op.select != detail::kSelectMultishot || !op.more)
    throw std::logic_error("lev::FakeBackend::deliver_more: not a multishot recv or recvmsg");
  if (std::find(pending_.begin(), pending_.end(), &op) == pending_.end())
    throw std::logic_error("lev::FakeBackend::deliver_more: the multishot is not in flight");
  if (data.empty() && op.kind == detail::OpKind::recv) {  // end of stream ends a multishot
    settle(op, 0);
    return false;
  }
  int res = 0;
  const unsigned flags = fill_pool_buffer(op, data, from, res);
  if (!flags) {
    settle(op, -ENOBUFS);
    return false;
  }
  op.more(op, res, IORING_CQE_F_MORE | flags);
  return true;
}

void FakeBackend::refuse_zero_copy(detail::OpBase& op) {
  if (op.kind != detail::OpKind::send)
    throw std::logic_error("lev::FakeBackend::refuse_zero_copy: not a send");
  op.zc = 2;
  op.flow |= detail::kFlowRetry;
  settle(op, -EOPNOTSUPP);
}

void FakeBackend::run_uncancellable(detail::OpBase& op) {
  if (std::find(pending_.begin(), pending_.end(), &op) == pending_.end())
    throw std::logic_error(std::string("lev::FakeBackend::run_uncancellable: ") +
                           detail::op_name(op.kind) + " is not in flight");
  op.backend_data = (op.backend_data & ~std::uintptr_t{kStaged}) | kFlushed | kRunning;
}

void FakeBackend::cancel(detail::OpBase& op) {
  ++cancels_;
  if ((op.backend_data & kStaged) && !(op.backend_data & kRunning)) {
    settle(op, -ECANCELED);
    return;
  }
  op.backend_data |= kCancel;
}

void FakeBackend::cancel_all() {
  for (detail::OpBase* op : std::vector<detail::OpBase*>(pending_)) cancel(*op);
}

bool FakeBackend::cancel_requested(const detail::OpBase& op) const noexcept {
  return (op.backend_data & kCancel) != 0;
}

detail::OpBase* FakeBackend::find(detail::OpKind kind, int fd) const noexcept {
  for (detail::OpBase* op : pending_)
    if (op->kind == kind && (fd < 0 || op->fd == fd)) return op;
  return nullptr;
}

void FakeBackend::settle(detail::OpBase& op, int res, unsigned cqe_flags) {
  auto it = std::find(pending_.begin(), pending_.end(), &op);
  if (it == pending_.end())
    throw std::logic_error(std::string("lev::FakeBackend: ") + detail::op_name(op.kind) +
                           " is not in flight (already completed, or never submitted)");
  pending_.erase(it);
  if (!linked_.empty())
    std::erase_if(linked_, [&](const Linked& l) { return l.op == &op; });
  op.backend_data = 0;
  queue_->push(op, res, cqe_flags);
}

void FakeBackend::complete(detail::OpBase& op, int res) { settle(op, res); }

void FakeBackend::complete_with_data(detail::OpBase& op, std::string_view data,
                                     const SocketAddress* from) {
  if (is_pool_receive(op) && (!data.empty() || op.kind == detail::OpKind::recvmsg)) {
    int res = 0;
    const unsigned flags = fill_pool_buffer(op, data, from, res);
    if (!flags) {
      settle(op, -ENOBUFS);
      return;
    }
    settle(op, res, flags);
    return;
  }
  switch (op.kind) {
    case detail::OpKind::read:
    case detail::OpKind::recv: {
      const std::size_t n = std::min<std::size_t>(data.size(), op.len);
      if (n) std::memcpy(op.buf, data.data(), n);
      settle(op, static_cast<int>(n));
      return;
    }
    case detail::OpKind::readv:  // `buf` holds the iovecs, `len` counts them
      settle(op, static_cast<int>(scatter(static_cast<const iovec*>(op.buf), op.len, data)));
      return;
    case detail::OpKind::recvmsg: {  // one datagram into the MessageArgs' iovecs
      auto& a = *static_cast<detail::MessageArgs*>(op.args);
      const std::size_t n = scatter(a.msg.msg_iov, a.msg.msg_iovlen, data);
      a.msg.msg_flags = n < data.size() ? MSG_TRUNC : 0;
      if (a.msg.msg_name) {
        const std::size_t room = a.msg.msg_namelen;
        const std::size_t len = from ? std::min<std::size_t>(from->size(), room) : 0;
        if (len) std::memcpy(a.msg.msg_name, from->data(), len);
        a.msg.msg_namelen = static_cast<socklen_t>(len);
      }
      // As recvmsg(2): the bytes copied, or the datagram's length with MSG_TRUNC.
      settle(op, static_cast<int>((op.flags & MSG_TRUNC) ? data.size() : n));
      return;
    }
    default:
      throw std::logic_error(std::string("lev::FakeBackend::complete_with_data: ") +
                             detail::op_name(op.kind) +
                             " receives no data (complete() it with a result)");
  }
}

std::size_t FakeBackend::poll(std::optional<Duration> timeout) {
  ++polls_;
  std::size_t n = 0;
  std::vector<detail::OpBase*> cancelled;
  bool flushed_any = false;
  for (detail::OpBase* op : pending_) {
    flushed_any = flushed_any || (op->backend_data & kStaged);
    if ((op->backend_data & kCancel) && !(op->backend_data & kRunning)) cancelled.push_back(op);
    op->backend_data = (op->backend_data & ~std::uintptr_t{kStaged}) | kFlushed;
  }
  for (detail::OpBase* op : cancelled) {
    settle(*op, -ECANCELED);
    ++n;
  }
  // Linked timeouts due now end their op, as IORING_OP_LINK_TIMEOUT does.
  if (!linked_.empty()) {
    const TimePoint now = clock_->now();
    std::vector<detail::OpBase*> due;
    for (const Linked& l : linked_)  // a running op: the kernel's cancel cannot reach it
      if (l.deadline <= now && !(l.op->backend_data & kRunning)) due.push_back(l.op);
    for (detail::OpBase* op : due) {
      settle(*op, -ECANCELED);
      ++n;
    }
  }
  if (n == 0 && timeout && *timeout > Duration::zero() && options_.auto_advance)
    clock_->advance(*timeout);
  if (n == 0 && !timeout && !flushed_any && !pending_.empty() && options_.detect_blocking)
    throw std::logic_error(
        "lev::FakeBackend: the loop would block forever: " + std::to_string(pending_.size()) +
        " operation(s) in flight and none completed by the test");
  return n;
}

// ---------------------------------------------------------------- FakeOp

namespace {

using detail::OpKind;

// The kinds a backend sees, by the names errors and stats use.
constexpr OpKind kLast = OpKind::timer;  // the first kind that never reaches a backend

bool writes(OpKind k) noexcept {
  return k == OpKind::write || k == OpKind::send || k == OpKind::writev || k == OpKind::sendmsg;
}

std::string append_iovecs(const iovec* v, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i)
    out.append(static_cast<const char*>(v[i].iov_base), v[i].iov_len);
  return out;
}

std::size_t iovec_room(const iovec* v, std::size_t n) noexcept {
  std::size_t room = 0;
  for (std::size_t i = 0; i < n; ++i) room += v[i].iov_len;
  return room;
}

OpKind kind_named(std::string_view name) {
  for (auto k = static_cast<unsigned>(OpKind::nop); k < static_cast<unsigned>(kLast); ++k)
    if (name == detail::op_name(static_cast<OpKind>(k))) return static_cast<OpKind>(k);
  std::string known;
  for (auto k = static_cast<unsigned>(OpKind::nop); k < static_cast<unsigned>(kLast); ++k)
    known += std::string(known.empty() ? "" : ", ") + detail::op_name(static_cast<OpKind>(k));
  std::string why = "lev::FakeBackend: no backend operation is called '" + std::string(name) + "'";
  if (name == "timer" || name == "post")
    why += " (timers and posts stay in the loop: advance() the clock instead)";
  throw std::invalid_argument(why + "; the names are: " + known);
}

}  // namespace

std::string_view FakeOp::name() const noexcept { return detail::op_name(op_->kind); }
int FakeOp::fd() const noexcept { return op_->fd; }

std::string FakeOp::data() const {
  switch (op_->kind) {
    case OpKind::write:
    case OpKind::send:
      return std::string(static_cast<const char*>(op_->buf), op_->len);
    case OpKind::writev:  // `buf` holds the iovecs, `len` counts them
      return append_iovecs(static_cast<const iovec*>(op_->buf), op_->len);
    case OpKind::sendmsg: {
      const msghdr& m = static_cast<const detail::MessageArgs*>(op_->args)->msg;
      return append_iovecs(m.msg_iov, m.msg_iovlen);
    }
    default:
      return {};
  }
}

std::size_t FakeOp::size() const noexcept {
  switch (op_->kind) {
    case OpKind::read:
    case OpKind::recv:
      if (op_->kind == OpKind::recv && op_->select) return op_->pool->size();
      return op_->len;
    case OpKind::write:
    case OpKind::send:
      return op_->len;
    case OpKind::readv:
    case OpKind::writev:
      return iovec_room(static_cast<const iovec*>(op_->buf), op_->len);
    case OpKind::recvmsg:
    case OpKind::sendmsg: {
      if (op_->kind == OpKind::recvmsg && op_->select) return op_->pool->size();
      const msghdr& m = static_cast<const detail::MessageArgs*>(op_->args)->msg;
      return iovec_room(m.msg_iov, m.msg_iovlen);
    }
    default:
      return 0;
  }
}

std::uint64_t FakeOp::offset() const noexcept {
  switch (op_->kind) {
    case OpKind::read:
    case OpKind::write:
    case OpKind::readv:
    case OpKind::writev:
      return op_->offset;
    default:
      return static_cast<std::uint64_t>(-1);
  }
}

std::string_view FakeOp::path() const noexcept {
  switch (op_->kind) {
    case OpKind::openat:
    case OpKind::unlinkat:
    case OpKind::mkdirat:
      return static_cast<const detail::PathArgs*>(op_->args)->path;
    case OpKind::statx:
      return static_cast<const detail::StatxArgs*>(op_->args)->path;
    case OpKind::renameat:
      return static_cast<const detail::RenameArgs*>(op_->args)->from;
    default:
      return {};
  }
}

SocketAddress FakeOp::peer() const {
  if (op_->kind == OpKind::connect) return static_cast<const detail::ConnectArgs*>(op_->args)->to;
  if (op_->kind == OpKind::sendmsg) {
    const msghdr& m = static_cast<const detail::MessageArgs*>(op_->args)->msg;
    if (m.msg_name) return SocketAddress(static_cast<const sockaddr*>(m.msg_name), m.msg_namelen);
  }
  return {};
}

bool FakeOp::cancel_requested() const noexcept { return fake_->cancel_requested(*op_); }
void FakeOp::complete(int res) const { fake_->complete(*op_, res); }
void FakeOp::complete() const {
  fake_->complete(*op_, writes(op_->kind) ? static_cast<int>(size()) : 0);
}
void FakeOp::fail(int err) const { fake_->fail(*op_, err); }
void FakeOp::complete_with_data(std::string_view data, const SocketAddress* from) const {
  fake_->complete_with_data(*op_, data, from);
}
bool FakeOp::deliver_more(std::string_view data, const SocketAddress* from) const {
  return fake_->deliver_more(*op_, data, from);
}

void FakeOp::refuse_zero_copy() const { fake_->refuse_zero_copy(*op_); }
TimePoint FakeOp::linked_deadline() const noexcept { return fake_->linked_deadline(*op_); }

void FakeOp::complete_accept(int fd, const SocketAddress& peer) const {
  if (op_->kind != OpKind::accept)
    throw std::logic_error("lev::FakeOp::complete_accept: " + std::string(name()) +
                           " is not an accept");
  if (auto* a = static_cast<detail::AcceptArgs*>(op_->args)) {  // null: a multishot (no address)
    const std::size_t n = std::min<std::size_t>(peer.size(), sizeof(a->peer));
    std::memcpy(&a->peer, peer.data(), n);
    a->len = static_cast<socklen_t>(n);
  }
  fake_->complete(*op_, fd);
}

void FakeOp::complete_stat(const FileStat& st) const {
  if (op_->kind != OpKind::statx)
    throw std::logic_error("lev::FakeOp::complete_stat: " + std::string(name()) +
                           " is not a statx");
  struct statx& out = static_cast<detail::StatxArgs*>(op_->args)->out;
  out = {};
  out.stx_size = st.size;
  out.stx_mode = static_cast<std::uint16_t>(st.mode);
  out.stx_ino = st.inode;
  out.stx_nlink = st.links;
  out.stx_blocks = st.blocks;
  const auto since = st.modified.time_since_epoch();
  const auto secs = std::chrono::floor<std::chrono::seconds>(since);
  out.stx_mtime.tv_sec = secs.count();
  out.stx_mtime.tv_nsec =
      static_cast<std::uint32_t>(std::chrono::nanoseconds(since - secs).count());
  fake_->complete(*op_, 0);
}

FakeOp FakeBackend::find(std::string_view name, int fd) {
  return FakeOp(this, find(kind_named(name), fd));
}

std::vector<FakeOp> FakeBackend::pending_ops() {
  std::vector<FakeOp> out;
  out.reserve(pending_.size());
  for (detail::OpBase* op : pending_) out.push_back(FakeOp(this, op));
  return out;
}

FakeOp FakeBackend::run_until(Loop& loop, std::string_view name, int fd) {
  const OpKind kind = kind_named(name);
  for (long round = 0; round < 1'000'000; ++round) {
    if (detail::OpBase* op = find(kind, fd)) return FakeOp(this, op);
    if (loop.run_once() == 0 && !find(kind, fd))
      throw std::logic_error("lev::FakeBackend::run_until: no " + std::string(name) +
                             " operation came, and the loop has nothing left to do");
  }
  throw std::logic_error("lev::FakeBackend::run_until: no " + std::string(name) +
                         " operation came in a million rounds");
}

}  // namespace lev
