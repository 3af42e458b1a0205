#pragma once
/// \file
/// What describing an operation means. Each operation is one small struct
/// (a *description*) in its family's header under lev/detail/ops/: its
/// name, its arguments, how it fills an io_uring SQE, how the epoll engine
/// runs it, and its result type. The Loop's three forms (awaitable, with a
/// deadline, with a callback) are generated from it (Loop::make,
/// Loop::make_until, Loop::launch_op), the engines dispatch through the
/// table built from every description (detail/ops/all.hpp).
///
/// A description D provides:
///   static constexpr OpKind kind;       its enumerator (detail/op.hpp)
///   static constexpr const char* name;  for errors ("read", "openat")
///   using Result;                       what the awaiter gives (ResultOf<Result>)
///   using Args;                         its own arguments (NoArgs: none)
///   static void setup(OpBase&, [Args&,] arguments...) noexcept;
///   static void prep(io_uring_sqe*, OpBase&, std::size_t zc_threshold) noexcept;
///   static constexpr Wait wait;         how the epoll engine runs it
///   static long attempt(OpBase&) noexcept;   the syscall: >= 0, or -1 and errno
/// and may override OpTraits' defaults (yields_fd, moved).
///
/// An awaiter moves before it is awaited (into a task, a with_timeout, a
/// stop_on): anything setup made point into the Args record must follow
/// it. op.args does by itself; a field of OpBase that points into Args is
/// re-pointed by the description's `moved` hook; a pointer an Args record
/// keeps into itself by that record's copy constructor (MessageArgs).

#include <liburing.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "lev/detail/op.hpp"

namespace lev::detail {

/// How the epoll engine runs an op.
enum class Wait : std::uint8_t {
  none,     // attempted once, nothing to wait for (nop, close, shutdown)
  read,     // attempted when its fd may be readable; on EAGAIN it parks as a reader
  write,    // the same, as a writer
  mask,     // poll: attempted at once; a reader or a writer by its poll mask
  offload,  // blocking work (a regular file, a path): the engine's file workers,
            // or readiness like `read`/`write` when the fd can be polled (a pipe)
};

/// Test hook: an epoll engine's file worker calls it with each op just
/// before running it (a test makes a worker slow with it, as a slow disk
/// would). Null in normal use.
extern std::atomic<void (*)(const OpBase&)> before_file_work;

/// The record of an op that needs nothing beyond OpBase's I/O fields.
struct NoArgs {};

/// Defaults a description inherits.
struct OpTraits {
  using Args = NoArgs;
  /// The result (>= 0) is a new fd the engine must not confuse with a
  /// closed one of the same number (accept, openat).
  static constexpr bool yields_fd = false;
  /// For Wait::offload: the op is a write (parks as a writer when polled).
  static constexpr bool writes = false;
  /// For Wait::read / Wait::write: the fd may be a regular file, which the
  /// epoll engine hands to its file workers (read, write, readv, writev).
  static constexpr bool may_be_file = false;
  /// On io_uring, `{.timeout}` is a linked timeout (one more SQE, no loop
  /// timer). False: a loop timer cancels the op instead (splice: the
  /// kernel never fires a timeout linked to a request io-wq runs blocking).
  static constexpr bool links_timeout = true;
  /// The awaiter holding the op moved (before it was awaited); `args` is
  /// the Args record's new place, which op.args already points at.
  /// Re-points whatever else of `op` pointed into the old record.
  template <class A>
  static void moved(OpBase& op, A& args) noexcept {
    (void)op;
    (void)args;
  }
};

/// Maps a kind to its description; specialised next to each description.
template <OpKind K>
struct Describe;

/// Fills `sqe` for an op of kind `K` (zc_threshold: see UringFastPath).
template <OpKind K>
inline void prep_kind(io_uring_sqe* sqe, OpBase& op, std::size_t zc_threshold) noexcept {
  Describe<K>::type::prep(sqe, op, zc_threshold);
}

}  // namespace lev::detail
