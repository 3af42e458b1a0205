#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Fork: spawn a child process with pipes, await its exit by pidfd, kill it.
///
///     auto child = lev::Child::spawn(loop, {.argv = {"/bin/echo", "hi"}}).value();
///     lev::net::Stream out{loop, std::move(child.stdout_fd())};
///     auto line = co_await out.read_message();          // "hi"
///     auto status = co_await child.wait();               // exited with code 0
///
/// A Child that is destroyed before it was reaped is killed (SIGKILL) and
/// reaped on the spot: no zombie is left behind.
///
/// The child starts with an empty signal mask and SIGPIPE at its default
/// action, whatever lev changed in this process (a Signal or a Runtime
/// blocks the signals it watches; the Loop ignores SIGPIPE); other
/// dispositions are inherited as exec leaves them. Signals go through the
/// pidfd, never by pid number: if pidfd_open fails after the spawn, the
/// child is killed by pid and reaped only while SIGCHLD is at its default
/// (the kernel then keeps the pid until we reap it); with SIGCHLD ignored
/// it may be gone and its pid reused, so nothing is sent and the error
/// says the child was left alone.

#include <sys/types.h>

#include <string>
#include <vector>

#include "lev/clock.hpp"
#include "lev/error.hpp"
#include "lev/fd.hpp"
#include "lev/task.hpp"
#include "lev/watchers.hpp"

namespace lev {

class Loop;

/// What one of a child's standard streams is connected to.
enum class Stdio {
  inherit,  ///< the parent's own stream
  pipe,     ///< a pipe whose other end the Child holds (stdin_fd() and so on)
  null,     ///< /dev/null
};

/// What Child::spawn runs, and how.
struct SpawnOptions {
  std::vector<std::string> argv;   ///< argv[0] is the program (PATH is searched)
  std::vector<std::string> env{};  ///< "K=V" entries; empty = inherit the parent's
  std::string cwd{};               ///< empty = the parent's
  Stdio in = Stdio::inherit;       ///< the child's stdin
  Stdio out = Stdio::pipe;         ///< the child's stdout
  Stdio err = Stdio::inherit;      ///< the child's stderr
};

/// A child process started by spawn(), tied to a loop. Move-only; use it
/// on its loop's thread.
class Child {
 public:
  /// Errors: an empty argv (invalid_argument), a program that cannot be
  /// executed (the exec errno, e.g. ENOENT), pipe/pidfd failures.
  static Result<Child> spawn(Loop& loop, SpawnOptions options);

  /// No process (reaped() is true).
  Child() = default;
  /// Takes over `o`'s process and pipes; `o` holds none after.
  Child(Child&& o) noexcept;
  /// Kills and reaps this one's process if needed, then takes over `o`'s.
  Child& operator=(Child&& o) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  /// Kills (SIGKILL) and reaps a process not yet reaped; closes the pipes.
  ~Child();

  /// The process id (-1 when none).
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// The parent's ends of the pipes (empty when not Stdio::pipe). Take them
  /// (std::move) into a Stream, or close stdin to send EOF.
  Fd& stdin_fd() noexcept { return in_; }
  /// The parent's end of the child's stdout pipe (see stdin_fd).
  Fd& stdout_fd() noexcept { return out_; }
  /// The parent's end of the child's stderr pipe (see stdin_fd).
  Fd& stderr_fd() noexcept { return err_; }

  /// Waits for the exit (pidfd readiness on the loop) and reaps the child.
  Task<Result<ExitStatus>> wait();
  /// Waits up to `timeout`; past it sends `kill_signal` and waits for that.
  Task<Result<ExitStatus>> wait_for(Duration timeout, int kill_signal = 9);
  /// Sends a signal through the pidfd (never to a recycled pid).
  Result<void> kill(int signal = 15);
  /// The exit has been collected (or there never was a process).
  [[nodiscard]] bool reaped() const noexcept { return reaped_; }

 private:
  Result<ExitStatus> reap(bool block);
  Loop* loop_ = nullptr;
  pid_t pid_ = -1;
  Fd pidfd_;
  Fd in_, out_, err_;
  bool reaped_ = true;
};

}  // namespace lev
