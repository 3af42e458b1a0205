// lev::File and the directory operations: thin tasks over the file
// family's descriptions (lev/detail/ops/file.hpp) that keep their path in
// the task's frame until the op is delivered.
#include "lev/file.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <optional>
#include <system_error>

namespace lev {

// With no timeout (o.timeout empty) a Deadline awaiter is the plain one.
Task<Result<File>> File::open(Loop& loop, std::string path, int flags, unsigned mode, IoOptions o) {
  auto r =
      co_await loop.make_until<detail::OpenatOp>(o.timeout, AT_FDCWD, path.c_str(), flags, mode);
  if (!r) co_return r.error().with_path(path);
  co_return File(loop, Fd{*r});
}

Task<Result<void>> File::truncate(std::uint64_t len, IoOptions o) {
  if (loop_->features().ftruncate_op)
    co_return co_await loop_->make_until<detail::FtruncateOp>(o.timeout, fd_, len);
  // The offload pool: a call not taken by a pool thread by its deadline
  // (measured from here, on the steady clock: the pool does not read the
  // loop's clock) does not run.
  const int fd = fd_.get();
  std::optional<TimePoint> until;
  if (o.timeout) until = saturating_add(std::chrono::steady_clock::now(), *o.timeout);
  const int err = co_await loop_->offload([fd, len, until] {
    if (until && std::chrono::steady_clock::now() >= *until) return ETIMEDOUT;
    return ::ftruncate(fd, static_cast<off_t>(len)) == 0 ? 0 : errno;
  });
  if (err) co_return Error::from_errno(err, "ftruncate", fd);
  co_return Result<void>{};
}

Task<Result<void>> unlink(Loop& loop, std::string path, bool dir, IoOptions o) {
  auto r = co_await loop.make_until<detail::UnlinkatOp>(o.timeout, AT_FDCWD, path.c_str(),
                                                        dir ? AT_REMOVEDIR : 0);
  if (!r) co_return r.error().with_path(path);
  co_return r;
}

Task<Result<void>> rename(Loop& loop, std::string from, std::string to, IoOptions o) {
  auto r = co_await loop.make_until<detail::RenameatOp>(o.timeout, AT_FDCWD, from.c_str(),
                                                        to.c_str(), 0);
  if (!r) co_return r.error().with_path(from + " -> " + to);
  co_return r;
}

Task<Result<void>> mkdir(Loop& loop, std::string path, unsigned mode, IoOptions o) {
  auto r = co_await loop.make_until<detail::MkdiratOp>(o.timeout, AT_FDCWD, path.c_str(), mode);
  if (!r) co_return r.error().with_path(path);
  co_return r;
}

Task<Result<FileStat>> stat(Loop& loop, std::string path, IoOptions o) {
  auto r = co_await loop.make_until<detail::StatxOp>(o.timeout, AT_FDCWD, path.c_str(), 0);
  if (!r) co_return r.error().with_path(path);
  co_return r;
}

namespace detail {

bool writev_intermediate(const OpBase& op) noexcept {
  return op.res > 0 && op.done + static_cast<std::size_t>(op.res) < op.total;
}

// writev_all after a partial write: skip what went, start the rest. Called
// by Loop::settle with no cancel recorded and the op already unregistered.
void writev_continue(OpBase& op) noexcept {
  auto& a = *static_cast<WritevArgs*>(op.args);
  auto moved = static_cast<std::size_t>(op.res);
  op.done += moved;
  if (op.offset != static_cast<std::uint64_t>(-1)) op.offset += moved;
  auto* v = static_cast<iovec*>(op.buf);
  std::uint32_t n = op.len;
  while (n > 0 && moved >= v->iov_len) {
    moved -= v->iov_len;
    ++v;
    --n;
  }
  if (n > 0) {
    v->iov_base = static_cast<char*>(v->iov_base) + moved;
    v->iov_len -= moved;
  }
  op.buf = v;
  op.len = n;
  // Could not go on: delivered with why (and `done`), as Loop::settle
  // delivers a send_all whose resubmission failed.
  try {
    a.loop->start(op);
  } catch (const std::system_error& e) {
    a.loop->start_failed(op, e.code().value() > 0 ? -e.code().value() : -EIO);
  } catch (...) {
    a.loop->start_failed(op, -EIO);
  }
}

}  // namespace detail
}  // namespace lev
