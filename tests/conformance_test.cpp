// The conformance matrix (issue 20): every op kind of lev::detail::AllOps,
// in each of its forms (tests/conformance/forms.hpp), on every engine
// (io_uring and its variants, epoll reactor, proactor on epoll, fake),
// through every lifecycle event (tests/conformance/matrix.hpp): completed,
// moved before co_await, cancelled or timed out while queued, in flight or
// on a file worker, its fd closed and the number reused, the Loop built on
// one thread, run on another and destroyed on a third, torn down in each
// state. Each row checks one settlement, the right error, the bytes where
// they belong, nothing left live, no pool buffer held, no fd leaked, and
// (in a sanitizer build) no report.
//
// Each row runs in a child process (fork): a crash or a sanitizer report
// fails that row alone, with the report's first lines, and a hang is cut
// at 10 s. Rows that fail for a known reason carry a Mark (kMarks below):
// "expected failure"; a marked row that passes fails the suite, so the
// mark goes with the fix. The run ends with the matrix's size and time.
//
//   LEV_CONFORMANCE_ROWS='recv*|uring|stop_*'   only the rows these fnmatch
//                                               patterns (form|engine|event) match
//   LEV_CONFORMANCE_NO_FORK=1                   run rows in this process (a debugger)
//   LEV_CONFORMANCE_JOBS=N                      rows at once (default 3)
//   LEV_CONFORMANCE_VERBOSE=1                   print every row
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "conformance/forms.hpp"
#include "conformance/matrix.hpp"
#include "conformance/rows.hpp"
#include "lev/detail/ops/all.hpp"
#include "support.hpp"

extern "C" int __lsan_do_recoverable_leak_check() __attribute__((weak));

namespace lev::conformance {
namespace {

// ---- the forms, generated from the op list ---------------------------------

template <class D>
concept HasForms = requires {
  typename Forms<D>::type;
};

template <class... D>
constexpr bool every_kind_has_forms(detail::OpList<D...>) {
  return (HasForms<D> && ...);
}
static_assert(every_kind_has_forms(detail::AllOps{}),
              "an op kind of lev::detail::AllOps has no form in tests/conformance/forms.hpp: add "
              "one (how to make a valid instance of it), so that it gets its conformance rows");

template <class... D>
auto all_forms(detail::OpList<D...>)
    -> decltype(std::tuple_cat(std::declval<typename Forms<D>::type>()...));
using AllForms = decltype(all_forms(detail::AllOps{}));

/// A form's entry: its name, its op's name, and its rows.
struct FormEntry {
  const char* name;
  const char* op;
  std::string (*applies)(const EngineSpec&, Event);
  RowResult (*run)(const EngineSpec&, Event);
};

/// Why a directory tree cannot be removed does not matter to a row.
void remove_tree(const std::string& dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

std::size_t fds_now() { return test::open_fd_count(); }

template <class Fx>
RowResult run_form_row(const EngineSpec& e, Event ev) {
  if (e.uring() && !test::has_uring())
    return {RowResult::skip, "io_uring is unavailable: " + test::uring_unavailable()};
  char tmpl[] = "/tmp/lev-conformance-XXXXXX";
  if (!::mkdtemp(tmpl)) return {RowResult::fail, "mkdtemp failed"};
  const std::string dir = tmpl;
  const std::size_t before = fds_now();
  RowResult out;
  {
    Driver<Fx> d(e, ev, Env{dir, e.fake()});
    d.run();
    if (!d.skipped.empty()) {
      out = {RowResult::skip, d.skipped};
    } else if (!d.failures.empty()) {
      out.kind = RowResult::fail;
      for (const std::string& f : d.failures) out.why += (out.why.empty() ? "" : "; ") + f;
    }
  }
  remove_tree(dir);
  // A descriptor may go a moment later, with another thread's last reference.
  std::size_t after = fds_now();
  for (int i = 0; i < 100 && after != before; ++i) {
    std::this_thread::sleep_for(2ms);
    after = fds_now();
  }
  if (after != before && out.kind != RowResult::skip) {
    out.kind = RowResult::fail;
    out.why += std::string(out.why.empty() ? "" : "; ") + "fds: " + std::to_string(before) +
               " before the row, " + std::to_string(after) + " after";
  }
  return out;
}

template <class... Fx>
std::vector<FormEntry> make_entries(std::tuple<Fx...>*) {
  return {FormEntry{Fx::name, Fx::Desc::name, &not_applicable<Fx>, &run_form_row<Fx>}...};
}

const std::vector<FormEntry>& forms() {
  static const std::vector<FormEntry> all = make_entries(static_cast<AllForms*>(nullptr));
  return all;
}

// ---- rows expected to fail ---------------------------------------------------

/// Issue 20's defects (flip a mark off when its fix lands: the row then
/// fails as "passes now") and what this suite found that nobody had listed.
const std::vector<Mark> kMarks = {
    // ---- issue 20's defects ----
    // 1: a moved writev_all awaiter leaves op.buf at the original's iovec copy (the fake
    // moves no bytes, so it cannot tell).
    {"writev_all(pipe)", "uring*,*epoll", "moved", "defect 1"},
    // 2: an op queued for a file worker survives loop.close(fd) and runs on the file that
    // gets the number next.
    {"*(file)", "*epoll", "close_reuse_worker_queued", "defect 2"},
    // 3: an epoll Loop destroyed on another thread than its constructor's; recv.cpp's
    // t_registries (the pools of recv(fd) and receive()) has the same shape.
    {"*", "*epoll", "threads", "defect 3"},
    {"*pool", "fake", "threads", "defect 3"},
    // 4: an epoll Loop run on another thread misses fd closes: a new fd at the number
    // inherits the old registration (readable(): a poll(2) first, so it passes).
    {"!readable(pipe)", "*epoll", "threads_close_reuse", "defect 4"},
    // 5: an io_uring Loop runs only on its constructor's thread.
    {"*", "uring*", "threads*", "defect 5"},
    // 6: epoll splice waits on its input only (a), and blocks the loop thread in a
    // splice into a blocking socket (b).
    {"splice(into full pipe)", "*epoll", "completes,moved", "defect 6a"},
    {"splice(into blocking socket)", "*epoll", "!stop_queued,teardown_queued", "defect 6b"},
    // 7: a FIFO open blocks an epoll file worker: no deadline, no cancel, ~Loop waits.
    // A zero timeout races the worker picking the open up (intermittent).
    {"openat(fifo)", "*epoll",
     "completes,moved,stop_worker_running,with_timeout_worker_running,teardown_worker_running",
     "defect 7"},
    {"openat(fifo)", "*epoll", "timeout_queued", "defect 7 (when the worker wins the race)", true},
    // 8: with_timeout reports an outer stop as a timeout (a close is never cancelled).
    {"!close(pipe)", "*", "with_timeout_stopped", "defect 8"},
    // 9: the fake's complete_with_data on a plain recvmsg copies into op.buf.
    {"recvmsg(unix dgram)", "fake", "completes,moved,threads", "defect 9"},

    // ---- found by this suite (see the findings in the branch's report) ----
    // F1: an openat result nobody receives (the Loop torn down with it queued or
    // completing) is never closed: release_undelivered closes accept's fd only. On the
    // fake it is certain; on io_uring an open that succeeds inline (a FIFO, opened
    // nonblocking first) is; on epoll it shows through the worker rows' own FIFO open,
    // when ~Loop catches its result (intermittent).
    {"openat(*)", "fake", "teardown_completed", "finding F1"},
    {"openat(fifo)", "uring*", "teardown_queued,teardown_completed", "finding F1"},
    {"*", "*epoll", "teardown_worker_queued", "finding F1 (the blocker's open)", true},
    // F2: io_uring splice that waits in io-wq (empty input, full output): its linked
    // timeout never fires ({.timeout} never ends it) and a cancel ends it with -512
    // (ERESTARTSYS, "Unknown error 512") instead of ECANCELED, when the worker is
    // already blocked (intermittent for a stop).
    {"splice(*)", "uring*", "timeout_queued,timeout_pending", "finding F2"},
    {"splice(*)", "uring*", "with_timeout_pending", "finding F2"},
    {"splice(*)", "uring*", "stop_pending,abort_pending,with_timeout_stopped",
     "finding F2 (ERESTARTSYS when the worker already blocks)", true},
    // F3: io_uring splice resolves its input fd when io-wq runs it: closed through
    // loop.close while the splice waits and the number reused at once, the old splice can
    // move the NEW fd's bytes (when io-wq had not run it yet: intermittent).
    {"splice(pipe->pipe)", "uring*", "close_reuse_pending", "finding F3", true},
};

/// The mark of a row, or null.
const Mark* mark_of(const std::string& form, const std::string& engine, const std::string& event) {
  for (const Mark& m : kMarks)
    if (m.matches(form, engine, event)) return &m;
  return nullptr;
}

// ---- running rows in children ------------------------------------------------

struct RowId {
  std::size_t form;
  std::size_t engine;
  Event event;
  [[nodiscard]] std::string name() const {
    return std::string(forms()[form].name) + " | " + engines()[engine].name + " | " +
           event_name(event);
  }
};

/// The row's verdict, from the child: "P", "S <why>", "F <why>".
std::string encode(const RowResult& r) {
  std::string s = r.kind == RowResult::pass ? "P" : r.kind == RowResult::skip ? "S " : "F ";
  return s + r.why;
}

RowResult decode(const std::string& s) {
  if (s.empty()) return {RowResult::fail, "the row's process gave no verdict"};
  if (s[0] == 'P') return {RowResult::pass, ""};
  return {s[0] == 'S' ? RowResult::skip : RowResult::fail, s.size() > 2 ? s.substr(2) : ""};
}

RowResult run_here(const RowId& id) {
  const FormEntry& f = forms()[id.form];
  RowResult r = f.run(engines()[id.engine], id.event);
  if (__lsan_do_recoverable_leak_check && r.kind != RowResult::skip &&
      __lsan_do_recoverable_leak_check() != 0) {
    r.kind = RowResult::fail;
    r.why += std::string(r.why.empty() ? "" : "; ") + "LeakSanitizer found a leak";
  }
  return r;
}

/// The fatal-signal handlers in place before doctest installed its own
/// (a sanitizer's, or the default): a row's process puts them back, so a
/// crash there is reported by the sanitizer, not by doctest.
constexpr int kFatalSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
struct SavedHandlers {
  struct sigaction saved[sizeof(kFatalSignals) / sizeof(int)];
  SavedHandlers() {
    for (std::size_t i = 0; i < std::size(kFatalSignals); ++i)
      ::sigaction(kFatalSignals[i], nullptr, &saved[i]);
  }
  void restore() const {
    for (std::size_t i = 0; i < std::size(kFatalSignals); ++i)
      ::sigaction(kFatalSignals[i], &saved[i], nullptr);
  }
};
const SavedHandlers g_handlers;  // made before main(), so before doctest's

struct Child {
  RowId id;
  pid_t pid;
  int verdict_fd;  // the verdict
  int report_fd;   // stderr (sanitizer reports)
  std::string verdict, report;
  SteadyClock::time_point started;
};

/// How long each row took (verbose output), by row index.
std::map<std::size_t, double> g_row_ms;

Child spawn_child(const RowId& id) {
  int v[2], e[2];
  if (::pipe2(v, O_CLOEXEC) != 0 || ::pipe2(e, O_CLOEXEC) != 0)
    throw std::runtime_error("conformance: pipe2");
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("conformance: fork");
  if (pid == 0) {
    g_handlers.restore();
    ::close(v[0]);
    ::close(e[0]);
    ::dup2(e[1], 1);
    ::dup2(e[1], 2);
    ::close(e[1]);
    std::string out;
    try {
      out = encode(run_here(id));
    } catch (const std::exception& ex) {
      out = std::string("F threw: ") + ex.what();
    }
    (void)!::write(v[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(v[1]);
  ::close(e[1]);
  ::fcntl(v[0], F_SETFL, O_NONBLOCK);
  ::fcntl(e[0], F_SETFL, O_NONBLOCK);
  return {id, pid, v[0], e[0], {}, {}, SteadyClock::now()};
}

/// Reads what is there (a nonblocking pipe); false at end of file.
bool drain_into(int fd, std::string& out) {
  for (;;) {
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n > 0) {
      if (out.size() < 64 * 1024) out.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    return n < 0 && (errno == EINTR || errno == EAGAIN);
  }
}

/// The first lines of a sanitizer report (or of whatever the child said).
std::string report_head(const std::string& report) {
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

RowResult finish_child(Child& c, bool killed) {
  int status = 0;
  ::waitpid(c.pid, &status, 0);
  ::close(c.verdict_fd);
  ::close(c.report_fd);
  if (killed) return {RowResult::fail, "hung: killed after 10 s; " + report_head(c.report)};
  if (WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0) || c.verdict.empty())
    return {RowResult::fail,
            "crashed (" +
                (WIFSIGNALED(status) ? std::string("signal ") + std::to_string(WTERMSIG(status))
                                     : "exit " + std::to_string(WEXITSTATUS(status))) +
                "): " + report_head(c.report)};
  RowResult r = decode(c.verdict);
  if (r.kind == RowResult::pass && c.report.find("runtime error") != std::string::npos)
    return {RowResult::fail, "UBSan: " + report_head(c.report)};
  return r;
}

/// Runs `rows`, `jobs` at a time, each in its own process.
std::vector<RowResult> run_rows(const std::vector<RowId>& rows) {
  std::vector<RowResult> out(rows.size());
  if (const char* nf = std::getenv("LEV_CONFORMANCE_NO_FORK"); nf && *nf == '1') {
    for (std::size_t i = 0; i < rows.size(); ++i) out[i] = run_here(rows[i]);
    return out;
  }
  const char* j = std::getenv("LEV_CONFORMANCE_JOBS");
  // Rows mostly wait (each takes little CPU): three at a time on 2 cores.
  const std::size_t jobs = j && *j ? static_cast<std::size_t>(std::max(1, std::atoi(j))) : 3;
  std::vector<std::pair<std::size_t, Child>> running;
  std::size_t next = 0;
  while (next < rows.size() || !running.empty()) {
    while (running.size() < jobs && next < rows.size()) {
      running.emplace_back(next, spawn_child(rows[next]));
      ++next;
    }
    std::vector<pollfd> fds;
    for (auto& [i, c] : running) {
      fds.push_back({c.verdict_fd, POLLIN, 0});
      fds.push_back({c.report_fd, POLLIN, 0});
    }
    ::poll(fds.data(), fds.size(), 50);
    for (std::size_t k = 0; k < running.size();) {
      auto& [i, c] = running[k];
      const bool verdict_open = drain_into(c.verdict_fd, c.verdict);
      const bool report_open = drain_into(c.report_fd, c.report);
      const bool late = SteadyClock::now() - c.started > 10s;
      if (late) ::kill(c.pid, SIGKILL);
      if (late || (!verdict_open && !report_open)) {
        out[i] = finish_child(c, late);
        g_row_ms[i] =
            std::chrono::duration<double, std::milli>(SteadyClock::now() - c.started).count();
        running.erase(running.begin() + static_cast<std::ptrdiff_t>(k));
      } else {
        ++k;
      }
    }
  }
  return out;
}

// ---- the matrix ---------------------------------------------------------------

bool selected(const RowId& id) {
  const char* f = std::getenv("LEV_CONFORMANCE_ROWS");
  if (!f || !*f) return true;
  std::string pat = f;
  const std::size_t a = pat.find('|'), b = pat.find('|', a == std::string::npos ? a : a + 1);
  const std::string fp = pat.substr(0, a);
  const std::string ep = a == std::string::npos ? "*" : pat.substr(a + 1, b - a - 1);
  const std::string vp = b == std::string::npos ? "*" : pat.substr(b + 1);
  return Mark{fp.c_str(), ep.c_str(), vp.c_str(), ""}.matches(
      forms()[id.form].name, engines()[id.engine].name, event_name(id.event));
}

struct Tally {
  std::size_t total = 0, ran = 0, passed = 0, expected = 0, failed = 0, unexpected_pass = 0;
  std::map<std::string, std::size_t> not_applicable, skipped, expected_by;
};

/// Runs the rows whose event `want(event)` accepts and reports them.
void run_matrix(bool (*want)(Event), const char* title) {
  const auto start = SteadyClock::now();
  const bool verbose = std::getenv("LEV_CONFORMANCE_VERBOSE") != nullptr;
  Tally t;
  std::vector<RowId> rows;
  std::set<std::string> ops;
  std::size_t events = 0;
  for (std::size_t v = 0; v < static_cast<std::size_t>(Event::count); ++v)
    if (want(static_cast<Event>(v))) ++events;
  for (std::size_t f = 0; f < forms().size(); ++f) {
    ops.insert(forms()[f].op);
    for (std::size_t e = 0; e < engines().size(); ++e)
      for (std::size_t v = 0; v < static_cast<std::size_t>(Event::count); ++v) {
        const auto ev = static_cast<Event>(v);
        if (!want(ev)) continue;
        const RowId id{f, e, ev};
        if (!selected(id)) continue;
        ++t.total;
        const std::string na = forms()[f].applies(engines()[e], ev);
        if (!na.empty()) {
          ++t.not_applicable[na];
          continue;
        }
        rows.push_back(id);
      }
  }
  const std::vector<RowResult> results = run_rows(rows);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const RowId& id = rows[i];
    const RowResult& r = results[i];
    const std::string name = id.name();
    if (r.kind == RowResult::skip) {
      ++t.skipped[r.why];
      if (verbose) std::printf("  skip  %s: %s\n", name.c_str(), r.why.c_str());
      continue;
    }
    ++t.ran;
    const Mark* m = mark_of(forms()[id.form].name, engines()[id.engine].name, event_name(id.event));
    if (r.kind == RowResult::pass) {
      if (m && !m->intermittent) {
        ++t.unexpected_pass;
        FAIL_CHECK(name << ": passes now, but is marked \"" << std::string(m->label)
                        << "\": remove the mark (tests/conformance_test.cpp, kMarks)");
      } else {
        ++t.passed;
        if (verbose) std::printf("  pass  %s (%.0f ms)\n", name.c_str(), g_row_ms[i]);
      }
      continue;
    }
    if (m) {
      ++t.expected;
      ++t.expected_by[m->label];
      if (verbose)
        std::printf("  xfail %s (%.0f ms): expected failure (%s): %s\n", name.c_str(), g_row_ms[i],
                    m->label, r.why.c_str());
      continue;
    }
    ++t.failed;
    FAIL_CHECK(name << ": " << r.why);
  }
  const double secs = std::chrono::duration<double>(SteadyClock::now() - start).count();
  std::printf(
      "conformance matrix (%s): %zu op kinds in %zu forms x %zu engines x %zu events = "
      "%zu rows",
      title, ops.size(), forms().size(), engines().size(), events,
      forms().size() * engines().size() * events);
  if (t.total != forms().size() * engines().size() * events)
    std::printf(" (%zu selected by LEV_CONFORMANCE_ROWS)", t.total);
  std::printf(
      "\n  ran %zu: %zu passed, %zu expected failures, %zu failed, %zu marked but "
      "passing; %.1f s\n",
      t.ran, t.passed, t.expected, t.failed, t.unexpected_pass, secs);
  for (const auto& [label, n] : t.expected_by)
    std::printf("  expected failure (%s): %zu rows\n", label.c_str(), n);
  std::size_t na = 0;
  for (const auto& [why, n] : t.not_applicable) na += n;
  std::printf("  not applicable: %zu rows\n", na);
  for (const auto& [why, n] : t.not_applicable) std::printf("    %4zu %s\n", n, why.c_str());
  std::size_t sk = 0;
  for (const auto& [why, n] : t.skipped) sk += n;
  std::printf("  skipped: %zu rows\n", sk);
  for (const auto& [why, n] : t.skipped) std::printf("    %4zu %s\n", n, why.c_str());
  std::fflush(stdout);
}

bool not_threaded(Event e) { return !is_thread_event(e); }
bool threaded(Event e) { return is_thread_event(e); }

}  // namespace
}  // namespace lev::conformance

TEST_SUITE("conformance") {
  TEST_CASE("every op behaves the same on every engine through every lifecycle event") {
    lev::conformance::run_matrix(&lev::conformance::not_threaded, "single-threaded events");
  }

  TEST_CASE("every op behaves the same on every engine when its Loop moves between threads") {
    lev::conformance::run_matrix(&lev::conformance::threaded, "thread events");
  }
}
