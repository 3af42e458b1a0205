#pragma once
// The conformance matrix's axes (engines, lifecycle events), what a row
// reports, and the table of rows marked as failing for a known reason.
#include <fnmatch.h>

#include <cstddef>
#include <string>
#include <vector>

#include "lev/loop.hpp"

namespace lev::conformance {

/// An engine a row runs on: a backend, with an environment variable set
/// while the loop is made (the io_uring variants), or the fake.
struct EngineSpec {
  const char* name;
  Model model;
  const char* backend;  // "uring", "epoll", "fake"
  const char* env;      // set to 1 while the Loop is constructed
  [[nodiscard]] bool fake() const noexcept { return backend[0] == 'f'; }
  [[nodiscard]] bool epoll() const noexcept { return backend[0] == 'e'; }
  [[nodiscard]] bool uring() const noexcept { return backend[0] == 'u'; }
};

inline const std::vector<EngineSpec>& engines() {
  static const std::vector<EngineSpec> all = {
      {"uring", Model::proactor, "uring", nullptr},
      {"uring/no-buf-ring", Model::proactor, "uring", "LEV_URING_NO_BUF_RING"},
      {"uring/one-shot-recv", Model::proactor, "uring", "LEV_URING_NO_MULTISHOT_RECV"},
      {"reactor/epoll", Model::reactor, "epoll", nullptr},
      {"proactor/epoll", Model::proactor, "epoll", nullptr},
      {"fake", Model::proactor, "fake", nullptr},
  };
  return all;
}

/// The lifecycle events: one column of the matrix each.
enum class Event {
  completes,              // the op completes (its resource made ready)
  moved,                  // the awaiter moved into a task before co_await, the original destroyed
  stop_before,            // its task's token stopped before it ran: never reaches the backend
  stop_queued,            // stop token: started, the backend has not run it yet
  timeout_queued,         // {.timeout = 0}: passes before the backend ran it
  with_timeout_queued,    // with_timeout(op, 0): passes before the backend ran it
  stop_pending,           // stop token while in flight
  abort_pending,          // JoinHandle::abort while in flight
  timeout_pending,        // {.timeout} passes while in flight
  with_timeout_pending,   // with_timeout passes while in flight
  with_timeout_stopped,   // with_timeout(op, 30s), its task's token stopped while in flight
  stop_worker_queued,     // epoll: stop while queued behind a busy file worker
  timeout_worker_queued,  // epoll: {.timeout} passes while queued for a worker
  with_timeout_worker_queued,   // epoll: with_timeout passes while queued for a worker
  stop_worker_running,          // epoll: stop while a file worker runs it
  timeout_worker_running,       // epoll: {.timeout} passes while a worker runs it
  with_timeout_worker_running,  // epoll: with_timeout passes while a worker runs it
  close_reuse_pending,  // its fd closed (loop.close) while in flight, the number reused at once
  close_reuse_worker_queued,  // epoll: the same while it is queued for a worker
  threads,                    // the Loop built on thread A, run on B, destroyed on C
  threads_close_reuse,        // run on B: close and reuse there, destroyed on A
  teardown_queued,            // ~Loop right after the op started
  teardown_pending,           // ~Loop with the op in flight
  teardown_completed,         // ~Loop with its result ready, not delivered
  teardown_worker_queued,     // epoll: ~Loop with the op queued for a worker
  teardown_worker_running,    // epoll: ~Loop while a worker runs it
  count
};

inline const char* event_name(Event e) {
  static const char* const names[] = {
      "completes",
      "moved",
      "stop_before",
      "stop_queued",
      "timeout_queued",
      "with_timeout_queued",
      "stop_pending",
      "abort_pending",
      "timeout_pending",
      "with_timeout_pending",
      "with_timeout_stopped",
      "stop_worker_queued",
      "timeout_worker_queued",
      "with_timeout_worker_queued",
      "stop_worker_running",
      "timeout_worker_running",
      "with_timeout_worker_running",
      "close_reuse_pending",
      "close_reuse_worker_queued",
      "threads",
      "threads_close_reuse",
      "teardown_queued",
      "teardown_pending",
      "teardown_completed",
      "teardown_worker_queued",
      "teardown_worker_running",
  };
  static_assert(sizeof(names) / sizeof(names[0]) == static_cast<std::size_t>(Event::count));
  return names[static_cast<std::size_t>(e)];
}

inline bool is_thread_event(Event e) {
  return e == Event::threads || e == Event::threads_close_reuse;
}

/// What one row came to.
struct RowResult {
  enum Kind { pass, fail, skip } kind = pass;
  std::string why;  // fail: what went wrong; skip: why it could not run here
};

/// A row (or a set of rows: fnmatch patterns) expected to fail, and why:
/// "defect N" (an item of issue 20) or "finding ..." (found by this suite,
/// not listed there). A marked row that fails reports "expected failure";
/// one that passes FAILS the suite, so that the mark is removed with the
/// fix. `sometimes`: the failure depends on timing or on garbage memory,
/// so a pass is accepted too (say why in `label`).
struct Mark {
  enum When { always, sometimes };
  const char* form;
  const char* engine;
  const char* event;
  const char* label;
  When when = always;
  /// Whether a pass of a row with this mark is accepted.
  [[nodiscard]] bool pass_accepted() const { return when == sometimes; }
  [[nodiscard]] bool matches(const std::string& f, const std::string& en,
                             const std::string& ev) const {
    return any(form, f) && any(engine, en) && any(event, ev);
  }
  /// `patterns`: fnmatch patterns separated by commas; a leading '!'
  /// matches what none of the rest matches.
  static bool any(const char* patterns, const std::string& s) {
    if (patterns[0] == '!') return !any(patterns + 1, s);
    const std::string all = patterns;
    for (std::size_t pos = 0;;) {
      const std::size_t end = all.find(',', pos);
      const std::string one = all.substr(pos, end == std::string::npos ? end : end - pos);
      if (::fnmatch(one.c_str(), s.c_str(), 0) == 0) return true;
      if (end == std::string::npos) return false;
      pos = end + 1;
    }
  }
};

}  // namespace lev::conformance
