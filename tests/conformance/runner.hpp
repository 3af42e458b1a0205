#pragma once
// Runs the conformance rows in child processes (fork), a few at a time: a
// crash, a sanitizer report or a hang (5 s) fails the row it happened in,
// not the suite. The rows of one form on one engine share a process (one fork and
// one LeakSanitizer check for all of them); whatever such a group cannot
// pin on one row (a crash, a hang, a leak, a UBSan report) runs again one
// row per process, where it can.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "conformance/matrix.hpp"

extern "C" int __lsan_do_recoverable_leak_check() __attribute__((weak));

namespace lev::conformance {

/// The fatal-signal handlers in place before doctest installed its own
/// (a sanitizer's, or the default): a row's process puts them back, so a
/// crash there is reported by the sanitizer, not by doctest.
class SavedHandlers {
 public:
  SavedHandlers() {
    for (std::size_t i = 0; i < kCount; ++i) ::sigaction(kSignals[i], nullptr, &saved_[i]);
  }
  void restore() const {
    for (std::size_t i = 0; i < kCount; ++i) ::sigaction(kSignals[i], &saved_[i], nullptr);
  }

 private:
  static constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
  static constexpr std::size_t kCount = sizeof(kSignals) / sizeof(kSignals[0]);
  struct sigaction saved_[kCount];
};
inline const SavedHandlers g_saved_handlers;  // made before main(), so before doctest's

/// Whether LeakSanitizer finds a leak now (false without it).
inline bool leaks_now() {
  return __lsan_do_recoverable_leak_check && __lsan_do_recoverable_leak_check() != 0;
}

/// Runs rows (`run(i)` runs row i) in child processes, `jobs` at a time.
class Runner {
 public:
  using RunRow = std::function<RowResult(std::size_t)>;
  struct Outcome {
    RowResult result;
    double ms = 0;  // how long it took (a grouped row: since the previous one)
  };

  Runner(RunRow run, std::size_t jobs) : run_(std::move(run)), jobs_(jobs) {}

  /// Runs every group (rows of one group share a process), then returns
  /// each row's outcome by row index (`rows` rows in all).
  std::vector<Outcome> run(const std::vector<std::vector<std::size_t>>& groups, std::size_t rows) {
    out_.assign(rows, {});
    for (const auto& g : groups) queue_.push_back({g, g.size() == 1});
    while (!queue_.empty() || !running_.empty()) {
      while (running_.size() < jobs_ && !queue_.empty()) {
        running_.push_back(start(queue_.front()));
        queue_.pop_front();
      }
      std::vector<pollfd> fds;
      for (const Child& c : running_) {
        fds.push_back({c.verdict_fd, POLLIN, 0});
        fds.push_back({c.report_fd, POLLIN, 0});
      }
      ::poll(fds.data(), fds.size(), 50);
      for (std::size_t k = 0; k < running_.size();) {
        Child& c = running_[k];
        const bool verdicts_open = drain(c.verdict_fd, c.verdicts);
        const bool report_open = drain(c.report_fd, c.report);
        take_verdicts(c);
        const auto limit =
            c.job.rows.size() == 1 ? std::chrono::seconds(10) : std::chrono::seconds(40);
        const bool late = SteadyClock::now() - c.started > limit;
        if (late) ::kill(c.pid, SIGKILL);
        if (late || (!verdicts_open && !report_open)) {
          finish(c, late);
          running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(k));
        } else {
          ++k;
        }
      }
    }
    return out_;
  }

 private:
  using SteadyClock = std::chrono::steady_clock;
  struct Job {
    std::vector<std::size_t> rows;
    bool alone;  // one row: its own leak check, and its crash is its own
  };
  struct Child {
    Job job;
    pid_t pid;
    int verdict_fd;  // "<k> <verdict>\n" per row, "L\n" for a leak
    int report_fd;   // stdout and stderr: sanitizer reports
    std::string verdicts, report;
    std::vector<bool> got;
    bool leak = false;
    SteadyClock::time_point started, last;
  };

  /// "P", "S <why>", "F <why>" (on one line).
  static std::string encode(const RowResult& r) {
    std::string s = r.kind == RowResult::pass ? "P" : r.kind == RowResult::skip ? "S " : "F ";
    s += r.why;
    std::replace(s.begin(), s.end(), '\n', ' ');
    return s;
  }
  static RowResult decode(const std::string& s) {
    if (s.empty()) return {RowResult::fail, "no verdict"};
    if (s[0] == 'P') return {RowResult::pass, ""};
    return {s[0] == 'S' ? RowResult::skip : RowResult::fail, s.size() > 2 ? s.substr(2) : ""};
  }

  Child start(const Job& job) {
    int v[2], e[2];
    if (::pipe2(v, O_CLOEXEC) != 0 || ::pipe2(e, O_CLOEXEC) != 0)
      throw std::runtime_error("conformance: pipe2");
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("conformance: fork");
    if (pid == 0) {
      g_saved_handlers.restore();
      ::close(v[0]);
      ::close(e[0]);
      ::dup2(e[1], 1);
      ::dup2(e[1], 2);
      ::close(e[1]);
      for (std::size_t k = 0; k < job.rows.size(); ++k) {
        RowResult r;
        try {
          r = run_(job.rows[k]);
        } catch (const std::exception& ex) {
          r = {RowResult::fail, std::string("threw: ") + ex.what()};
        }
        // (A row that failed anyway is not checked: the check is the slow part.)
        if (job.alone && r.kind == RowResult::pass && leaks_now()) {
          r.kind = RowResult::fail;
          r.why += std::string(r.why.empty() ? "" : "; ") + "LeakSanitizer: a leak (above)";
        }
        const std::string line = std::to_string(k) + " " + encode(r) + "\n";
        (void)!::write(v[1], line.data(), line.size());
      }
      if (!job.alone && leaks_now()) (void)!::write(v[1], "L\n", 2);
      ::_exit(0);
    }
    ::close(v[1]);
    ::close(e[1]);
    ::fcntl(v[0], F_SETFL, O_NONBLOCK);
    ::fcntl(e[0], F_SETFL, O_NONBLOCK);
    const auto now = SteadyClock::now();
    return {job, pid, v[0], e[0], {}, {}, std::vector<bool>(job.rows.size()), false, now, now};
  }

  /// Reads what is there (a nonblocking pipe); false at end of file.
  static bool drain(int fd, std::string& out) {
    for (;;) {
      char buf[4096];
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n > 0) {
        if (out.size() < 256 * 1024) out.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      return n < 0 && (errno == EINTR || errno == EAGAIN);
    }
  }

  void take_verdicts(Child& c) {
    for (std::size_t nl; (nl = c.verdicts.find('\n')) != std::string::npos;) {
      const std::string line = c.verdicts.substr(0, nl);
      c.verdicts.erase(0, nl + 1);
      if (line == "L") {
        c.leak = true;
        continue;
      }
      const std::size_t sp = line.find(' ');
      const std::size_t k = std::stoul(line.substr(0, sp));
      const auto now = SteadyClock::now();
      out_[c.job.rows[k]] = {decode(sp == std::string::npos ? "" : line.substr(sp + 1)),
                             std::chrono::duration<double, std::milli>(now - c.last).count()};
      c.last = now;
      c.got[k] = true;
    }
  }

  /// The first lines of a sanitizer report (or of whatever the child said).
  static std::string report_head(const std::string& report) {
    std::string out;
    std::size_t lines = 0, pos = 0;
    while (pos < report.size() && lines < 8) {
      const std::size_t end = report.find('\n', pos);
      const std::string line = report.substr(pos, end == std::string::npos ? end : end - pos);
      pos = end == std::string::npos ? report.size() : end + 1;
      if (line.find_first_not_of(" =-") == std::string::npos) continue;
      out += (out.empty() ? "" : " / ") + line;
      ++lines;
    }
    return out;
  }

  void finish(Child& c, bool killed) {
    int status = 0;
    ::waitpid(c.pid, &status, 0);
    ::close(c.verdict_fd);
    ::close(c.report_fd);
    const bool died = killed || WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status));
    const bool ubsan = c.report.find("runtime error") != std::string::npos;
    if (!c.job.alone) {
      // What a group cannot pin on one row runs again, one row per process:
      // the rows it did not finish after a crash or a hang, every row after
      // a leak or a UBSan report.
      for (std::size_t k = 0; k < c.job.rows.size(); ++k)
        if (!c.got[k] || c.leak || ubsan) queue_.push_front({{c.job.rows[k]}, true});
      return;
    }
    Outcome& o = out_[c.job.rows[0]];
    o.ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - c.started).count();
    if (killed) {
      o.result = {RowResult::fail, "hung: killed after 5 s; " + report_head(c.report)};
    } else if (died || !c.got[0]) {
      o.result = {RowResult::fail,
                  "crashed (" +
                      (WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                           : "exit " + std::to_string(WEXITSTATUS(status))) +
                      "): " + report_head(c.report)};
    } else if (ubsan && o.result.kind == RowResult::pass) {
      o.result = {RowResult::fail, "UBSan: " + report_head(c.report)};
    } else if (c.report.find("LeakSanitizer") != std::string::npos) {
      o.result.why += ": " + report_head(c.report.substr(c.report.find("LeakSanitizer")));
    }
  }

  RunRow run_;
  std::size_t jobs_;
  std::deque<Job> queue_;
  std::vector<Child> running_;
  std::vector<Outcome> out_;
};

}  // namespace lev::conformance
