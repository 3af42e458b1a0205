// Runs a command with io_uring blocked, as a container's seccomp profile or
// kernel.io_uring_disabled would block it: io_uring_setup fails with ENOSYS
// (or EPERM), everything else is allowed.
//   no_uring [--errno ENOSYS|EPERM] [--] command [args...]
// Used by CI (`meson test --wrapper`) to run every suite without io_uring:
// the io_uring cases skip, the rest must pass. Exit 2 for a usage error,
// 127 when the command cannot be run, else the command's own status.
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string_view>

namespace {

#if defined(__x86_64__)
constexpr unsigned kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr unsigned kArch = AUDIT_ARCH_AARCH64;
#else
#error "no_uring: add this architecture's AUDIT_ARCH_* value"
#endif

/// Makes io_uring_setup fail with `err` in this process and every process
/// it execs or forks. Irreversible.
bool block_io_uring_setup(int err) {
  sock_filter filter[] = {
      // A syscall from another ABI (x32, i386 on x86_64) is killed rather
      // than let through with a number this filter does not check.
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<unsigned>(__NR_io_uring_setup), 0, 1),
      BPF_STMT(BPF_RET | BPF_K,
               SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  // Lets an unprivileged process install a filter; also what a container
  // runtime sets.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

int usage() {
  std::fprintf(stderr, "usage: no_uring [--errno ENOSYS|EPERM] [--] command [args...]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int err = ENOSYS;
  int i = 1;
  while (i < argc && argv[i][0] == '-') {
    const std::string_view a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "--help" || a == "-h") {
      usage();
      return 0;
    }
    if (a != "--errno" || i + 1 >= argc) return usage();
    const std::string_view e = argv[i + 1];
    if (e == "ENOSYS")
      err = ENOSYS;
    else if (e == "EPERM")
      err = EPERM;
    else
      return usage();
    i += 2;
  }
  if (i >= argc) return usage();
  if (!block_io_uring_setup(err)) {
    std::fprintf(stderr, "no_uring: installing the seccomp filter failed: %s\n",
                 std::strerror(errno));
    return 1;
  }
  ::execvp(argv[i], argv + i);
  std::fprintf(stderr, "no_uring: cannot run %s: %s\n", argv[i], std::strerror(errno));
  return 127;
}
