#pragma once
/// \file
/// Descriptions of the file and directory operations: openat, fsync,
/// fallocate, ftruncate, statx, unlinkat, renameat, mkdirat. On io_uring
/// each is a native op; on the epoll engine each runs on the engine's file
/// workers (Wait::offload: a regular file is always "ready", and a path has
/// no fd to wait on). See lev/detail/describe.hpp and docs/files.md.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>

#include "lev/detail/ops/basic.hpp"
#include "lev/detail/results.hpp"
#include "lev/op_types.hpp"

namespace lev::detail {

/// IORING_OP_FTRUNCATE (kernel 6.9): liburing 2.3 names neither the opcode
/// nor a prep helper, so the SQE is filled by hand; used only when the
/// ring's probe lists it (BackendFeatures::native_ftruncate).
inline constexpr int kUringOpFtruncate = 55;

/// A path argument: borrowed, NUL-terminated, valid until the op is
/// delivered (the File API keeps its copy in the awaiting task's frame).
struct PathArgs {
  const char* path;
  unsigned mode;  // openat: creation mode; mkdirat: the directory's
  bool blocking = false;  // openat: O_NONBLOCK goes once the file is open
};

/// A new fd (close-on-exec); `fd` is the directory (AT_FDCWD), `flags` the
/// open flags.
///
/// The open itself never waits, on any engine: it runs with O_NONBLOCK, as
/// io_uring's own first try does, and unless the caller asked for
/// O_NONBLOCK the flag is taken off the new file (ResultOf<int>). So a FIFO
/// opens at once for reading with no writer (and a read before one comes
/// sees end of file), and for writing with no reader it fails with ENXIO,
/// rather than holding an epoll file worker (or an io-wq thread) for as
/// long as it takes: a deadline or teardown never waits for a FIFO's peer.
/// A file under a lease being broken fails with EWOULDBLOCK likewise.
struct OpenatOp : OpTraits {
  static constexpr OpKind kind = OpKind::openat;
  static constexpr const char* name = "openat";
  using Result = int;
  using Args = PathArgs;
  static constexpr bool yields_fd = true;
  static void setup(OpBase& op, PathArgs& a, const char* path, int flags, unsigned mode) noexcept {
    a.path = path;
    a.mode = mode;
    a.blocking = !(flags & O_NONBLOCK);
    op.flags = flags | O_CLOEXEC | O_NONBLOCK;
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    const auto& a = *static_cast<PathArgs*>(op.args);
    io_uring_prep_openat(sqe, op.fd, a.path, op.flags, a.mode);
  }
  static constexpr Wait wait = Wait::offload;
  static long attempt(OpBase& op) noexcept {
    const auto& a = *static_cast<PathArgs*>(op.args);
    return ::openat(op.fd, a.path, op.flags, a.mode);
  }
};

/// A new fd as a plain int: released (closed) by release_undelivered when
/// nobody takes it. An openat's fd loses the O_NONBLOCK the open ran with
/// unless the caller asked for it (one fcntl; the flags F_SETFL sets are
/// those the caller gave open).
template <>
struct ResultOf<int> {
  static Result<int> make(OpBase& op) {
    if (op.res < 0) return op_error(op);
    const int fd = op.res;
    if (op.kind == OpKind::openat && static_cast<const PathArgs*>(op.args)->blocking) {
      if (::fcntl(fd, F_SETFL, op.flags & (O_APPEND | O_DIRECT | O_NOATIME)) != 0) {
        const int fl = ::fcntl(fd, F_GETFL);
        if (fl >= 0) ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
      }
    }
    op.res = 0;  // handed over: nothing left to release
    op.kind = OpKind::nop;
    return fd;
  }
};

/// Success once the file's data (and metadata, unless `flags` holds
/// IORING_FSYNC_DATASYNC: fdatasync) is on stable storage.
struct FsyncOp : OpTraits {
  static constexpr OpKind kind = OpKind::fsync;
  static constexpr const char* name = "fsync";
  using Result = void;
  static void setup(OpBase& op, bool data_only) noexcept {
    op.flags = data_only ? IORING_FSYNC_DATASYNC : 0;
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_fsync(sqe, op.fd, static_cast<unsigned>(op.flags));
  }
  static constexpr Wait wait = Wait::offload;
  static long attempt(OpBase& op) noexcept {
    return op.flags ? ::fdatasync(op.fd) : ::fsync(op.fd);
  }
};

/// fallocate(2): `flags` the mode, `offset` where, `total` how many bytes.
struct FallocateOp : OpTraits {
  static constexpr OpKind kind = OpKind::fallocate;
  static constexpr const char* name = "fallocate";
  using Result = void;
  static void setup(OpBase& op, int mode, std::uint64_t offset, std::uint64_t len) noexcept {
    op.flags = mode;
    op.offset = offset;
    op.total = len;
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_fallocate(sqe, op.fd, op.flags, static_cast<off_t>(op.offset),
                            static_cast<off_t>(op.total));
  }
  static constexpr Wait wait = Wait::offload;
  static long attempt(OpBase& op) noexcept {
    return ::fallocate(op.fd, op.flags, static_cast<off_t>(op.offset),
                       static_cast<off_t>(op.total));
  }
};

/// ftruncate(2) to `offset` bytes.
struct FtruncateOp : OpTraits {
  static constexpr OpKind kind = OpKind::ftruncate;
  static constexpr const char* name = "ftruncate";
  using Result = void;
  static void setup(OpBase& op, std::uint64_t len) noexcept { op.offset = len; }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_rw(kUringOpFtruncate, sqe, op.fd, nullptr, 0, op.offset);
  }
  static constexpr Wait wait = Wait::offload;
  static long attempt(OpBase& op) noexcept {
    return ::ftruncate(op.fd, static_cast<off_t>(op.offset));
  }
};

/// statx's record: its path ("" with AT_EMPTY_PATH: the fd itself) and the
/// kernel's answer.
struct StatxArgs {
  const char* path;
  struct statx out;
};

/// A FileStat of `path` relative to `fd` (AT_FDCWD), or of the fd itself.
struct StatxOp : OpTraits {
  static constexpr OpKind kind = OpKind::statx;
  static constexpr const char* name = "statx";
  using Result = FileStat;
  using Args = StatxArgs;
  static void setup(OpBase& op, StatxArgs& a, const char* path, int flags) noexcept {
    a.path = path;
    op.flags = flags;
  }
  static constexpr unsigned kMask = STATX_BASIC_STATS;
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    auto& a = *static_cast<StatxArgs*>(op.args);
    io_uring_prep_statx(sqe, op.fd, a.path, op.flags, kMask, &a.out);
  }
  static constexpr Wait wait = Wait::offload;
  static long attempt(OpBase& op) noexcept {
    auto& a = *static_cast<StatxArgs*>(op.args);
    return ::statx(op.fd, a.path, op.flags, kMask, &a.out);
  }
};

template <>
struct ResultOf<FileStat> {
  static Result<FileStat> make(OpBase& op) {
    if (op.res < 0) return op_error(op);
    const struct statx& s = static_cast<const StatxArgs*>(op.args)->out;
    FileStat f;
    f.size = s.stx_size;
    f.mode = s.stx_mode;
    f.inode = s.stx_ino;
    f.device = makedev(s.stx_dev_major, s.stx_dev_minor);
    f.links = s.stx_nlink;
    f.blocks = s.stx_blocks;
    f.modified = std::chrono::system_clock::time_point{
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(s.stx_mtime.tv_sec) +
            std::chrono::nanoseconds(s.stx_mtime.tv_nsec))};
    return f;
  }
};

/// unlinkat(2): `flags` 0 or AT_REMOVEDIR.
struct UnlinkatOp : OpTraits {
  static constexpr OpKind kind = OpKind::unlinkat;
  static constexpr const char* name = "unlinkat";
  using Result = void;
  using Args = PathArgs;
  static void setup(OpBase& op, PathArgs& a, const char* path, int flags) noexcept {
    a.path = path;
    op.flags = flags;
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    io_uring_prep_unlinkat(sqe, op.fd, static_cast<PathArgs*>(op.args)->path, op.flags);
  }
  static constexpr Wait wait = Wait::offload;
  static long attempt(OpBase& op) noexcept {
    return ::unlinkat(op.fd, static_cast<PathArgs*>(op.args)->path, op.flags);
  }
};

/// mkdirat(2) with the mode in the PathArgs.
struct MkdiratOp : OpTraits {
  static constexpr OpKind kind = OpKind::mkdirat;
  static constexpr const char* name = "mkdirat";
  using Result = void;
  using Args = PathArgs;
  static void setup(OpBase&, PathArgs& a, const char* path, unsigned mode) noexcept {
    a.path = path;
    a.mode = mode;
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    const auto& a = *static_cast<PathArgs*>(op.args);
    io_uring_prep_mkdirat(sqe, op.fd, a.path, a.mode);
  }
  static constexpr Wait wait = Wait::offload;
  static long attempt(OpBase& op) noexcept {
    const auto& a = *static_cast<PathArgs*>(op.args);
    return ::mkdirat(op.fd, a.path, a.mode);
  }
};

struct RenameArgs {
  const char* from;
  const char* to;
};

/// renameat2(2) within the same directory fd (AT_FDCWD); `flags` as
/// renameat2's (RENAME_NOREPLACE, ...).
struct RenameatOp : OpTraits {
  static constexpr OpKind kind = OpKind::renameat;
  static constexpr const char* name = "renameat";
  using Result = void;
  using Args = RenameArgs;
  static void setup(OpBase& op, RenameArgs& a, const char* from, const char* to,
                    int flags) noexcept {
    a.from = from;
    a.to = to;
    op.flags = flags;
  }
  static void prep(io_uring_sqe* sqe, OpBase& op, std::size_t) noexcept {
    const auto& a = *static_cast<RenameArgs*>(op.args);
    io_uring_prep_renameat(sqe, op.fd, a.from, op.fd, a.to, static_cast<unsigned>(op.flags));
  }
  static constexpr Wait wait = Wait::offload;
  static long attempt(OpBase& op) noexcept {
    const auto& a = *static_cast<RenameArgs*>(op.args);
    return ::renameat2(op.fd, a.from, op.fd, a.to, static_cast<unsigned>(op.flags));
  }
};

template <> struct Describe<OpKind::openat> { using type = OpenatOp; };
template <> struct Describe<OpKind::fsync> { using type = FsyncOp; };
template <> struct Describe<OpKind::fallocate> { using type = FallocateOp; };
template <> struct Describe<OpKind::ftruncate> { using type = FtruncateOp; };
template <> struct Describe<OpKind::statx> { using type = StatxOp; };
template <> struct Describe<OpKind::unlinkat> { using type = UnlinkatOp; };
template <> struct Describe<OpKind::mkdirat> { using type = MkdiratOp; };
template <> struct Describe<OpKind::renameat> { using type = RenameatOp; };

}  // namespace lev::detail
