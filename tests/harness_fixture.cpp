// Test cases that misbehave on purpose, for tests/harness_test.cpp: it runs
// this program (not a suite of its own) one case at a time and checks that
// the harness every suite links (tests/main.cpp) fails the run. Each case
// prints the pid of the process it leaves behind, as "pid N".
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

namespace {

// A process that would outlive its test: stdout and stderr closed (whoever
// reads the run's output sees its end when the run exits), gone after 20 s
// even if nobody kills it.
[[noreturn]] void linger() {
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  ::dup2(null, 1);
  ::dup2(null, 2);
  ::alarm(20);
  for (;;) ::pause();
}

}  // namespace

TEST_CASE("fixture: leaves its child running") {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) linger();
  std::printf("pid %d\n", static_cast<int>(pid));
  std::fflush(stdout);
}

TEST_CASE("fixture: orphans a grandchild") {
  int p[2];
  REQUIRE(::pipe(p) == 0);
  const pid_t mid = ::fork();
  REQUIRE(mid >= 0);
  if (mid == 0) {  // the daemon's double fork: the middle process exits at once
    const pid_t grandchild = ::fork();
    if (grandchild == 0) {
      ::close(p[0]);
      ::close(p[1]);
      linger();
    }
    (void)!::write(p[1], &grandchild, sizeof grandchild);
    ::_exit(0);
  }
  ::close(p[1]);
  pid_t grandchild = -1;
  REQUIRE(::read(p[0], &grandchild, sizeof grandchild) == sizeof grandchild);
  ::close(p[0]);
  REQUIRE(::waitpid(mid, nullptr, 0) == mid);
  std::printf("pid %d\n", static_cast<int>(grandchild));
  std::fflush(stdout);
}

TEST_CASE("fixture: waits for its child") {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) ::_exit(0);
  REQUIRE(::waitpid(pid, nullptr, 0) == pid);
  std::printf("pid %d\n", static_cast<int>(pid));
  std::fflush(stdout);
}
