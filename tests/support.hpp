#pragma once
// Helpers shared by the test suites: engines to parametrise over, fd
// counting, loopback sockets, a scratch directory (TempDir, temp_dir.hpp).
#include <arpa/inet.h>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "lev/lev.hpp"
#include "temp_dir.hpp"

namespace lev::test {

/// An engine the shared suites run on.
struct Engine {
  const char* name;
  Model model;
  const char* backend;
};

/// Why this process cannot make an io_uring loop (seccomp, ENOSYS,
/// kernel.io_uring_disabled...), or empty when it can. Probed once, by
/// making one; the first time it is unavailable this says so on stderr.
inline const std::string& uring_unavailable() {
  static const std::string why = [] {
    std::string reason;
    try {
      Loop probe{Model::proactor, {.backend = "uring"}};
    } catch (const std::exception& e) {
      reason = e.what();
      std::fprintf(stderr, "lev tests: io_uring is unavailable (%s): its cases are skipped\n",
                   reason.c_str());
    }
    return reason;
  }();
  return why;
}
inline bool has_uring() { return uring_unavailable().empty(); }

/// The decorator of a test case that needs io_uring, for
/// `TEST_CASE("..." * needs_uring())`: doctest counts it as skipped (and
/// does not run it) when io_uring is unavailable.
inline doctest::skip needs_uring() { return doctest::skip(!has_uring()); }

/// Real engines: every I/O test runs once per entry (doctest SUBCASE).
/// Without io_uring, proactor/uring is left out (uring_unavailable() says
/// why on stderr) and the others still run.
inline std::vector<Engine> real_engines() {
  std::vector<Engine> all;
  if (has_uring()) all.push_back({"proactor/uring", Model::proactor, "uring"});
  all.push_back({"reactor/epoll", Model::reactor, "epoll"});
  all.push_back({"proactor/epoll", Model::proactor, "epoll"});
  return all;
}

/// The proactor's backend for a test that wants "the default proactor":
/// uring, or epoll when io_uring is unavailable.
inline LoopOptions proactor_options(LoopOptions o = {}) {
  o.backend = has_uring() ? "uring" : "epoll";
  return o;
}

inline LoopOptions options_for(const Engine& e) {
  LoopOptions o;
  o.backend = e.backend;
  return o;
}

/// Runs `fn(loop)` once per real engine, each as a doctest SUBCASE.
template <class Fn>
void for_each_engine(Fn fn) {
  for (const Engine& e : real_engines()) {
    SUBCASE(e.name) {
      Loop loop{e.model, options_for(e)};
      fn(loop);
    }
  }
}

/// A proactor loop on a fake backend (virtual clock), with the backend at hand.
struct FakeLoop {
  std::shared_ptr<FakeBackend> fake = std::make_shared<FakeBackend>();
  Loop loop{Model::proactor, {.backend = fake}};
};

/// Open descriptors of this process, from /proc/self/fd.
inline std::size_t open_fd_count() {
  std::size_t n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) throw std::runtime_error("cannot open /proc/self/fd");
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the DIR's own fd
}

inline std::pair<Fd, Fd> socket_pair(int type = SOCK_STREAM) {
  int sv[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0)
    throw std::runtime_error("socketpair");
  return {Fd{sv[0]}, Fd{sv[1]}};
}

inline std::pair<Fd, Fd> pipe_pair() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
  return {Fd{p[0]}, Fd{p[1]}};
}

/// A listening TCP socket on 127.0.0.1 (or ::1) with a kernel-chosen port.
inline std::pair<Fd, SocketAddress> tcp_listener(bool v6 = false) {
  Fd s{::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (!s) throw std::runtime_error("socket");
  int one = 1;
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  auto addr = *SocketAddress::ip(v6 ? "::1" : "127.0.0.1", 0);
  if (::bind(s.get(), addr.data(), addr.size()) != 0) throw std::runtime_error("bind");
  if (::listen(s.get(), 64) != 0) throw std::runtime_error("listen");
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  return {std::move(s), SocketAddress{reinterpret_cast<sockaddr*>(&ss), len}};
}

inline Fd tcp_socket(int family = AF_INET) {
  Fd s{::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)};
  if (!s) throw std::runtime_error("socket");
  return s;
}

inline std::string to_string(std::span<const std::byte> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

}  // namespace lev::test

// ---- seccomp: make a syscall fail with an errno, in this (child) process --
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

namespace lev::test {

/// While alive, a process orphaned here goes to init, as outside the
/// tests: the harness (tests/main.cpp) makes the run a child subreaper, so
/// that a process a test leaves behind comes back to it. For a test that
/// needs a process that is not its child.
class NotSubreaper {
 public:
  NotSubreaper() {
    ::prctl(PR_GET_CHILD_SUBREAPER, &was_);
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  }
  ~NotSubreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, was_); }
  NotSubreaper(const NotSubreaper&) = delete;
  NotSubreaper& operator=(const NotSubreaper&) = delete;

 private:
  int was_ = 0;
};

/// Installs a seccomp filter that makes syscall `nr` fail with `err`.
/// Irreversible: call it only in a forked child.
inline bool deny_syscall(long nr, int err) {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<unsigned>(nr), 0, 1),
      BPF_STMT(BPF_RET | BPF_K,
               SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

}  // namespace lev::test

namespace lev::test {

/// Forks; the child runs `fn` with its stderr going to a pipe and exits.
/// Returns everything the child wrote to stderr.
inline std::string run_in_child(const std::function<void()>& fn) {
  int p[2];
  if (::pipe(p) != 0) throw std::runtime_error("pipe");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    ::close(p[0]);
    ::dup2(p[1], 2);
    fn();
    std::fflush(stderr);
    ::_exit(0);
  }
  ::close(p[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(p[0]);
  ::waitpid(pid, nullptr, 0);
  return out;
}

}  // namespace lev::test
