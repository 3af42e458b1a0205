#pragma once
/// \file
/// Files and directories on the loop: `lev::File` owns its fd; every
/// operation is a loop operation (io_uring: native ops; epoll: the engine's
/// file workers, LoopOptions::file_workers of them; fake: scripted).
///
///     auto f = co_await lev::File::open(loop, "/tmp/x", O_RDWR | O_CREAT, 0644);
///     if (!f) co_return f.error();            // "openat(/etc/x): No such file or directory"
///     co_await f->write_all_at(data, 0);
///     co_await f->fsync();
///     auto st = co_await f->stat();            // st->size
///
/// The contract for cancel and deadlines (docs/files.md): a file op that
/// has not started yet ends with errc::operation_canceled (timed_out);
/// one the kernel (io_uring) or a worker (epoll) is already running on a
/// regular file cannot be interrupted and completes with its result. The
/// buffer stays borrowed until the awaiter resumes, whatever happened. A
/// cancelled write may already have written some or all of its bytes: the
/// result says what was written when it is not an error; `transferred`
/// counts what write_all_at wrote before a cancel or an error.

#include <fcntl.h>
#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "lev/buffer.hpp"
#include "lev/detail/ops/file.hpp"
#include "lev/detail/ops/vectored.hpp"
#include "lev/error.hpp"
#include "lev/fd.hpp"
#include "lev/loop.hpp"
#include "lev/task.hpp"

namespace lev {

/// An open file owned by this object (closed when it is dropped, or by
/// close()). Operations borrow the Loop given at open; one loop thread.
class File {
 public:
  /// An empty File (no fd, no loop): assign an opened one to use it.
  File() = default;
  /// Adopts `fd` (owned from now on).
  File(Loop& loop, Fd fd) noexcept : loop_(&loop), fd_(std::move(fd)) {}
  /// Takes `other`'s fd and loop; `other` is empty afterwards.
  File(File&&) noexcept = default;
  /// Closes this File's fd (if any) and takes `other`'s.
  File& operator=(File&&) noexcept = default;

  /// openat(AT_FDCWD, path, flags | O_CLOEXEC, mode). Errors name the op
  /// and the path ("openat(/etc/x): No such file or directory"). `o.timeout`
  /// bounds it (errc::timed_out; see the file's contract above).
  static Task<Result<File>> open(Loop& loop, std::string path, int flags = O_RDONLY,
                                 unsigned mode = 0644, IoOptions o = {});

  /// True while the File owns an fd.
  [[nodiscard]] bool is_open() const noexcept { return static_cast<bool>(fd_); }
  /// The fd (borrowed; -1 when empty).
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  /// The Loop its operations run on (a File that is not empty only).
  [[nodiscard]] Loop& loop() const noexcept { return *loop_; }

  /// Bytes read at `offset` (0: end of file). May be short.
  Loop::Awaiter<detail::ReadOp> read_at(MutableBuffer buf, std::uint64_t offset) {
    return loop_->read(fd_, buf, offset);
  }
  /// The same, bounded by `o.timeout` (only an op not yet running on a
  /// regular file can be stopped: see the file's contract above).
  Loop::Deadline<detail::ReadOp> read_at(MutableBuffer buf, std::uint64_t offset, IoOptions o) {
    return loop_->read(fd_, buf, o, offset);
  }
  /// Bytes written at `offset`; may be short.
  Loop::Awaiter<detail::WriteOp> write_at(ConstBuffer buf, std::uint64_t offset) {
    return loop_->write(fd_, buf, offset);
  }
  /// Every byte at `offset` (resubmitting the rest through Loop::settle),
  /// or an error whose `transferred` says how many were written.
  Loop::Awaiter<detail::WriteOp> write_all_at(ConstBuffer buf, std::uint64_t offset) {
    return loop_->write_all(fd_, buf, offset);
  }
  /// write_all_at(), bounded by `o.timeout` (`transferred`: bytes written first).
  Loop::Deadline<detail::WriteOp> write_all_at(ConstBuffer buf, std::uint64_t offset,
                                               IoOptions o) {
    return loop_->write_all(fd_, buf, o, offset);
  }
  /// Scatter at `offset` (preadv): bytes read into the iovecs, in order
  /// (may be short). The iovecs and their buffers stay valid until the
  /// awaiter resumes (for writev_at too).
  Loop::Awaiter<detail::ReadvOp> readv_at(std::span<const iovec> iov, std::uint64_t offset) {
    return loop_->make<detail::ReadvOp>(fd_, iov, offset);
  }
  /// Gather at `offset` (pwritev): bytes written from the iovecs (may be short).
  Loop::Awaiter<detail::WritevOp> writev_at(std::span<const iovec> iov, std::uint64_t offset) {
    return loop_->make<detail::WritevOp>(fd_, iov, offset, false);
  }
  /// Scatter at `offset`, bounded by `o.timeout`.
  Loop::Deadline<detail::ReadvOp> readv_at(std::span<const iovec> iov, std::uint64_t offset,
                                           IoOptions o) {
    return loop_->make_until<detail::ReadvOp>(o.timeout, fd_, iov, offset);
  }
  /// Gather at `offset`, bounded by `o.timeout`.
  Loop::Deadline<detail::WritevOp> writev_at(std::span<const iovec> iov, std::uint64_t offset,
                                             IoOptions o) {
    return loop_->make_until<detail::WritevOp>(o.timeout, fd_, iov, offset, false);
  }
  /// fsync(2): data and metadata reach the device.
  Loop::Awaiter<detail::FsyncOp> fsync() { return loop_->make<detail::FsyncOp>(fd_, false); }
  /// fsync(), bounded by `o.timeout` (errc::timed_out when it has not
  /// started by then; one already running completes: see above).
  Loop::Deadline<detail::FsyncOp> fsync(IoOptions o) {
    return loop_->make_until<detail::FsyncOp>(o.timeout, fd_, false);
  }
  /// fdatasync(2): the data, and the metadata needed to read it back.
  Loop::Awaiter<detail::FsyncOp> fdatasync() { return loop_->make<detail::FsyncOp>(fd_, true); }
  /// fdatasync(), bounded by `o.timeout`.
  Loop::Deadline<detail::FsyncOp> fdatasync(IoOptions o) {
    return loop_->make_until<detail::FsyncOp>(o.timeout, fd_, true);
  }
  /// fallocate(2); mode 0 allocates (and extends the size).
  Loop::Awaiter<detail::FallocateOp> fallocate(std::uint64_t offset, std::uint64_t len,
                                               int mode = 0) {
    return loop_->make<detail::FallocateOp>(fd_, mode, offset, len);
  }
  /// fallocate(), bounded by `o.timeout`.
  Loop::Deadline<detail::FallocateOp> fallocate(std::uint64_t offset, std::uint64_t len, int mode,
                                                IoOptions o) {
    return loop_->make_until<detail::FallocateOp>(o.timeout, fd_, mode, offset, len);
  }
  /// ftruncate(2) to `len` bytes: IORING_OP_FTRUNCATE where the ring's
  /// probe has it (features().ftruncate_op; epoll: a file worker), else the
  /// loop's offload pool. `o.timeout` bounds it as it does the other file
  /// ops (errc::timed_out when it has not started by then; see above). On
  /// the offload pool a cancel cannot reach the call, and the deadline is
  /// looked at when a pool thread takes it: one taken after its deadline
  /// ends timed_out without truncating (after waiting for that thread).
  Task<Result<void>> truncate(std::uint64_t len, IoOptions o = {});
  /// statx of the open file: size, mode, mtime, ...
  Loop::Awaiter<detail::StatxOp> stat() {
    return loop_->make<detail::StatxOp>(fd_, "", AT_EMPTY_PATH);
  }
  /// stat(), bounded by `o.timeout`.
  Loop::Deadline<detail::StatxOp> stat(IoOptions o) {
    return loop_->make_until<detail::StatxOp>(o.timeout, fd_, "", AT_EMPTY_PATH);
  }
  /// Closes the file (never cancelled); the File is empty afterwards.
  Loop::Awaiter<detail::CloseOp> close() { return loop_->close(fd_); }

 private:
  Loop* loop_ = nullptr;
  Fd fd_;
};

// Each takes `{.timeout}` as its last argument: errc::timed_out when the
// operation has not started by then (see the file's contract above).

/// unlink(path) (`dir`: rmdir). Errors name "unlinkat" and the path.
Task<Result<void>> unlink(Loop& loop, std::string path, bool dir = false, IoOptions o = {});
/// rename(from, to). Errors name "renameat" and both paths.
Task<Result<void>> rename(Loop& loop, std::string from, std::string to, IoOptions o = {});
/// mkdir(path, mode). Errors name "mkdirat" and the path.
Task<Result<void>> mkdir(Loop& loop, std::string path, unsigned mode = 0755, IoOptions o = {});
/// statx(path) (following symlinks). Errors name "statx" and the path.
Task<Result<FileStat>> stat(Loop& loop, std::string path, IoOptions o = {});

}  // namespace lev
