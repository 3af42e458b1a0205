#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#include "lev/fake.hpp"

#include "lev/detail/buffer_pool.hpp"
#include "lev/detail/ops/datagram.hpp"

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
  std::size_t n = std::min<std::size_t>(data.size(), op.len);
  if (n) std::memcpy(op.buf, data.data(), n);
  settle(op, static_cast<int>(n));
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

}  // namespace lev
