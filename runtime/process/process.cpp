// Fork: posix_spawn (exec errors come back to the parent), a pidfd for the
// exit, waitid(P_PIDFD) to reap.
#include "lev/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <utility>

#include "lev/loop.hpp"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

extern char** environ;

namespace lev {

namespace {

Error sys_error(const char* op, int err) {
  return Error{std::error_code(err, std::system_category()), op, -1, 0};
}

struct Actions {
  posix_spawn_file_actions_t fa;
  Actions() { posix_spawn_file_actions_init(&fa); }
  ~Actions() { posix_spawn_file_actions_destroy(&fa); }
};

// The child starts as an exec'd program expects, whatever lev did to this
// process: no blocked signal (Signal and Runtime block the ones they
// watch) and SIGPIPE at its default action (the Loop ignores it).
struct Attributes {
  posix_spawnattr_t attr;
  Attributes() {
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  }
  ~Attributes() { posix_spawnattr_destroy(&attr); }
  Attributes(const Attributes&) = delete;
  Attributes& operator=(const Attributes&) = delete;
};

// True while an unreaped child's pid cannot be reused: SIGCHLD is neither
// ignored nor SA_NOCLDWAIT, so the kernel keeps the pid (a zombie at worst)
// until someone waits for it.
bool children_wait_to_be_reaped() {
  struct sigaction sa {};
  if (::sigaction(SIGCHLD, nullptr, &sa) != 0) return false;
  return sa.sa_handler != SIG_IGN && (sa.sa_flags & SA_NOCLDWAIT) == 0;
}

// Sets up one standard stream; `parent` gets our end of a pipe.
Result<void> plumb(Actions& a, Stdio how, int target, Fd& parent, std::vector<Fd>& keep) {
  if (how == Stdio::inherit) return {};
  if (how == Stdio::null) {
    posix_spawn_file_actions_addopen(&a.fa, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY,
                                     0);
    return {};
  }
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return sys_error("spawn: pipe", errno);
  const bool child_reads = target == 0;
  Fd child_end{child_reads ? p[0] : p[1]};
  parent.reset(child_reads ? p[1] : p[0]);
  posix_spawn_file_actions_adddup2(&a.fa, child_end.get(), target);  // dup2 clears CLOEXEC
  keep.push_back(std::move(child_end));  // closed in the parent after the spawn
  return {};
}

ExitStatus from_siginfo(const siginfo_t& info) {
  ExitStatus st;
  st.exited = info.si_code == CLD_EXITED;
  (st.exited ? st.code : st.signal) = info.si_status;
  return st;
}

}  // namespace

Result<Child> Child::spawn(Loop& loop, SpawnOptions o) {
  if (o.argv.empty())
    return Error{std::make_error_code(std::errc::invalid_argument), "spawn: empty argv", -1, 0};
  Child c;
  Actions actions;
  std::vector<Fd> child_ends;
  if (auto r = plumb(actions, o.in, 0, c.in_, child_ends); !r) return r.error();
  if (auto r = plumb(actions, o.out, 1, c.out_, child_ends); !r) return r.error();
  if (auto r = plumb(actions, o.err, 2, c.err_, child_ends); !r) return r.error();
  if (!o.cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions.fa, o.cwd.c_str());

  std::vector<char*> argv, envp;
  for (auto& a : o.argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : o.env) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = -1;
  Attributes attributes;
  int rc = ::posix_spawnp(&pid, argv[0], &actions.fa, &attributes.attr, argv.data(),
                          o.env.empty() ? environ : envp.data());
  if (rc != 0) return Error{std::error_code(rc, std::system_category()), "spawn", -1, 0};
  child_ends.clear();  // the child has its copies
  c.loop_ = &loop;
  c.pid_ = pid;
  c.reaped_ = false;
  int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pfd < 0) {
    const int err = errno;
    c.reaped_ = true;  // nothing for ~Child to do: it has no pidfd
    if (!children_wait_to_be_reaped())  // the number may name another process by now
      return sys_error("spawn: pidfd_open (SIGCHLD is ignored: the child was left alone)", err);
    ::kill(pid, SIGKILL);  // still ours: the pid stays reserved until waitpid
    ::waitpid(pid, nullptr, 0);
    return sys_error("spawn: pidfd_open", err);
  }
  ::fcntl(pfd, F_SETFD, FD_CLOEXEC);
  c.pidfd_.reset(pfd);
  return c;
}

Child::Child(Child&& o) noexcept
    : loop_(o.loop_),
      pid_(o.pid_),
      pidfd_(std::move(o.pidfd_)),
      in_(std::move(o.in_)),
      out_(std::move(o.out_)),
      err_(std::move(o.err_)),
      reaped_(std::exchange(o.reaped_, true)) {}

Child& Child::operator=(Child&& o) noexcept {
  if (this != &o) {
    this->~Child();
    new (this) Child(std::move(o));
  }
  return *this;
}

Child::~Child() {
  if (reaped_ || !pidfd_) return;
  ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  (void)reap(true);  // no zombie
}

Result<ExitStatus> Child::reap(bool block) {
  siginfo_t info{};
  int flags = WEXITED | (block ? 0 : WNOHANG);
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info, flags) != 0)
    return sys_error("wait", errno);
  if (info.si_pid == 0) return sys_error("wait", EAGAIN);  // not yet
  reaped_ = true;
  return from_siginfo(info);
}

Result<void> Child::kill(int signal) {
  if (reaped_) return sys_error("kill", ESRCH);
  if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), signal, nullptr, 0) != 0)
    return sys_error("kill", errno);
  return {};
}

Task<Result<ExitStatus>> Child::wait() {
  if (reaped_) co_return sys_error("wait", ECHILD);
  for (;;) {
    auto ready = co_await loop_->readable(pidfd_);
    if (!ready) co_return ready.error();
    auto st = reap(false);
    if (st || st.error().code != std::errc::resource_unavailable_try_again) co_return st;
  }
}

Task<Result<ExitStatus>> Child::wait_for(Duration timeout, int kill_signal) {
  if (reaped_) co_return sys_error("wait", ECHILD);
  auto ready = co_await loop_->readable(pidfd_, timeout);
  if (!ready && ready.error().is_timeout()) {
    (void)kill(kill_signal);
  } else if (!ready) {
    co_return ready.error();
  }
  co_return co_await wait();
}

}  // namespace lev
