#pragma once
// The processes a test started, found after it ended: the test harness
// (tests/main.cpp) and outlive_check (tests/outlive_check.cpp) make their
// process a child subreaper (PR_SET_CHILD_SUBREAPER), so that a process a
// test started stays its descendant even when its parent exits (a server
// started from a subshell, a daemon's double fork), then look for children
// left over once the test is done.
#include <dirent.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace lev::test {

/// Makes orphaned descendants of this process its children (instead of
/// init's). False when the kernel refused.
inline bool become_subreaper() { return ::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0; }

/// This process's children, running or exited and not yet reaped (every
/// thread's: /proc/self/task/<tid>/children), sorted.
inline std::vector<pid_t> child_pids() {
  std::vector<pid_t> out;
  DIR* tasks = ::opendir("/proc/self/task");
  if (!tasks) return out;
  while (dirent* t = ::readdir(tasks)) {
    if (t->d_name[0] == '.') continue;
    std::ifstream in(std::string("/proc/self/task/") + t->d_name + "/children");
    for (pid_t pid = 0; in >> pid;) out.push_back(pid);
  }
  ::closedir(tasks);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

/// The field after the command name in /proc/PID/stat: 'R', 'S', 'Z'...;
/// 0 when the process is gone.
inline char process_state(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() ? 0 : stat[close + 2];
}

/// "1234 (sleep 30)": the pid and its command line (its name when the
/// command line is empty).
inline std::string describe_process(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid);
  std::ifstream in(dir + "/cmdline");
  std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!cmd.empty() && cmd.back() == '\0') cmd.pop_back();
  std::replace(cmd.begin(), cmd.end(), '\0', ' ');
  if (cmd.empty()) {
    std::ifstream comm(dir + "/comm");
    std::getline(comm, cmd);
  }
  return std::to_string(pid) + " (" + cmd + ")";
}

/// The children that are not in `before` (sorted) and still run after
/// `grace`: each is described, then killed (SIGKILL) and reaped. Children
/// that exited are reaped and not reported: an orphan's parent reaps it,
/// as init would have (whether lev reaps its own is process_test's check).
inline std::vector<std::string> reap_leftovers(const std::vector<pid_t>& before,
                                               std::chrono::milliseconds grace) {
  auto leftovers = [&before] {
    std::vector<pid_t> now = child_pids(), left;
    std::set_difference(now.begin(), now.end(), before.begin(), before.end(),
                        std::back_inserter(left));
    return left;
  };
  const auto deadline = std::chrono::steady_clock::now() + grace;
  auto running = [](const std::vector<pid_t>& pids) {
    return std::any_of(pids.begin(), pids.end(), [](pid_t p) { return process_state(p) != 'Z'; });
  };
  std::vector<pid_t> left = leftovers();
  while (running(left) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    left = leftovers();
  }
  std::vector<std::string> leaked;
  for (pid_t pid : left) {
    if (process_state(pid) != 'Z') {
      leaked.push_back(describe_process(pid));
      ::kill(pid, SIGKILL);
    }
    ::waitpid(pid, nullptr, 0);
  }
  return leaked;
}

}  // namespace lev::test
