// The test harness itself (tests/main.cpp, tests/outlive_check.cpp): a test
// that leaves a process running fails its run, and the process is killed.
// tests/harness_fixture.cpp holds the misbehaving cases this runs.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <string>
#include <vector>

namespace {

// The directory of this test's executable (the fixture and outlive_check
// are built beside it).
std::string build_dir() {
  char path[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  REQUIRE(n > 0);
  std::string exe(path, static_cast<std::size_t>(n));
  return exe.substr(0, exe.rfind('/'));
}

struct Ran {
  int code = -1;  // the exit status, 128 + signal when killed
  std::string out, err;
};

// Runs argv to its end (at most 30 s, then SIGKILL), collecting its output.
Ran run(std::vector<std::string> args) {
  int out[2], err[2];
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  Ran r;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open = 2;
  while (open > 0 && std::chrono::steady_clock::now() < deadline) {
    if (::poll(fds, 2, 100) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      } else {
        fds[i].fd = -1;
        --open;
      }
    }
  }
  if (open > 0) ::kill(pid, SIGKILL);  // hung: fail below rather than wait for ever
  ::close(out[0]);
  ::close(err[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// The pid a fixture case printed ("pid N").
pid_t printed_pid(const std::string& out) {
  const std::size_t at = out.find("pid ");
  REQUIRE(at != std::string::npos);
  return static_cast<pid_t>(std::stol(out.substr(at + 4)));
}

bool gone(pid_t pid) { return ::kill(pid, 0) == -1 && errno == ESRCH; }

Ran fixture(const char* test_case) {
  return run({build_dir() + "/harness_fixture", std::string("-tc=") + test_case});
}

}  // namespace

TEST_SUITE("harness") {
  // Regression: the harness checked descriptors only, so a test that left
  // a server running passed (tests/tutorial_smoke.sh left two per run).
  TEST_CASE(
      "a test case that leaves its child running fails the run, which names it and kills it") {
    const Ran r = fixture("fixture: leaves its child running");
    CHECK(r.code == 1);
    CHECK(r.err.find("process leak: fixture: leaves its child running: process ") !=
          std::string::npos);
    CHECK(gone(printed_pid(r.out)));
  }

  TEST_CASE("a grandchild whose parent exited is caught too: the run is its subreaper") {
    const Ran r = fixture("fixture: orphans a grandchild");
    CHECK(r.code == 1);
    CHECK(r.err.find("process leak: fixture: orphans a grandchild: process ") != std::string::npos);
    CHECK(gone(printed_pid(r.out)));
  }

  TEST_CASE("a test case that waits for its children passes") {
    const Ran r = fixture("fixture: waits for its child");
    CHECK(r.code == 0);
    CHECK(r.err.find("leak") == std::string::npos);
  }

  TEST_CASE("outlive_check fails a command that leaves a process behind, names it and kills it") {
    // The shell's background job is orphaned when the shell exits, as the
    // servers of tests/tutorial_smoke.sh were.
    const Ran r = run({build_dir() + "/outlive_check", "/bin/sh", "-c",
                       "sleep 30 >/dev/null 2>&1 & echo \"pid $!\""});
    CHECK(r.code == 1);
    CHECK(r.err.find("outlived /bin/sh (killed)") != std::string::npos);
    CHECK(r.err.find("sleep 30") != std::string::npos);
    CHECK(gone(printed_pid(r.out)));
  }

  TEST_CASE("outlive_check passes on the command's own status when nothing is left") {
    CHECK(run({build_dir() + "/outlive_check", "/bin/sh", "-c", "sleep 0.1 & wait"}).code == 0);
    CHECK(run({build_dir() + "/outlive_check", "/bin/sh", "-c", "exit 3"}).code == 3);
    // A background job that exits on its own, after the shell: not a leak.
    CHECK(run({build_dir() + "/outlive_check", "/bin/sh", "-c", "sleep 0.2 &"}).code == 0);
  }
}
