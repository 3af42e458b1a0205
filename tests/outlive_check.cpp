// Runs a test that is not a doctest suite (a shell script, a replay tool)
// and fails it when a process it started outlives it, as tests/main.cpp
// fails a test case:
//   outlive_check command [args...]
// It is a child subreaper (tests/children.hpp): a process started from a
// subshell and orphaned is still found. Each one left running a second
// after the command exited is named on stderr and killed; the exit status
// is then 1 (or the command's own, when that failed). Otherwise the
// command's status (128 + signal when killed); 127 when it cannot be run.
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include "children.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: outlive_check command [args...]\n");
    return 2;
  }
  if (!lev::test::become_subreaper()) {
    std::perror("outlive_check: PR_SET_CHILD_SUBREAPER");
    return 127;
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("outlive_check: fork");
    return 127;
  }
  if (pid == 0) {
    ::execvp(argv[1], argv + 1);
    std::fprintf(stderr, "outlive_check: %s: %s\n", argv[1], std::strerror(errno));
    ::_exit(127);
  }
  // Orphans that exit meanwhile are reaped as they come, as init would.
  int status = 0;
  for (;;) {
    int st = 0;
    const pid_t got = ::waitpid(-1, &st, 0);
    if (got == pid) {
      status = st;
      break;
    }
    if (got < 0 && errno != EINTR) {
      std::perror("outlive_check: waitpid");
      return 127;
    }
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  const auto leaked = lev::test::reap_leftovers({}, std::chrono::seconds(1));
  for (const std::string& p : leaked)
    std::fprintf(stderr, "outlive_check: process %s outlived %s (killed)\n", p.c_str(), argv[1]);
  return leaked.empty() || code != 0 ? code : 1;
}
