#pragma once
// The base of the conformance suite's forms: the flags and hooks a form
// does not need (see forms.hpp for what a form is).
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "conformance/world.hpp"
#include "lev/fake.hpp"
#include "lev/loop.hpp"

namespace lev::conformance {

using Timeout = std::optional<Duration>;

/// The flags and hooks a form does not need (each form overrides what it has).
struct FormBase {
  /// A real engine holds it in flight until unblock().
  static constexpr bool pends = false;
  /// The epoll engine runs it on a file worker.
  static constexpr bool on_worker = false;
  /// ...and it blocks the worker until unblock().
  static constexpr bool stuck_on_worker = false;
  /// It works on an fd a row can close (release_fd) and reuse (reuse).
  static constexpr bool has_fd = false;
  /// effect() says whether it took effect (a real engine; never the fake).
  static constexpr bool effect_known = false;
  /// It may block a thread (a worker, the loop): rows run a watchdog that
  /// calls unstick() and fail the row when it had to.
  static constexpr bool may_stick = false;
  /// After a cancel and unblock(), a fresh op gets what unblock() provided
  /// (nothing was lost: checked by running one).
  static constexpr bool again = false;
  /// Never cancelled (close): it always takes effect.
  static constexpr bool never_cancelled = false;
  /// After its fd was closed and the number reused, one op of the form on
  /// the new fd completes at once (connect: on a fresh socket).
  static constexpr bool again_after_reuse = false;

  explicit FormBase(Env& e) : env(e) {}
  Env& env;
  void unblock() {}
  bool effect() { return false; }
  std::string effect_wrong() { return {}; }
  bool unstick() { return false; }
  Fd release_fd() { return {}; }
  void reuse(int) {}
  std::string reuse_wrong() { return {}; }
  std::string skip(Loop&) { return {}; }
};

/// The outcome of an op that reports a byte count: wrong unless it is
/// `want` (`verb` and the count: "wrote 3").
inline Outcome count_outcome(Result<std::size_t>& r, std::size_t want, const char* verb) {
  return outcome_of(r, r && *r != want ? std::string(verb) + " " + std::to_string(*r) : "");
}

/// A form whose op reads from `src`, empty until unblock() injects its
/// payload; the op works on src's fd (release_fd, reuse). The fake
/// completes it with the payload. A form overrides what differs.
struct SourceForm : FormBase {
  Source src;
  SourceForm(Env& e, Source::Kind kind, std::string payload)
      : FormBase(e), src(kind, std::move(payload)) {}
  void unblock() { src.inject(); }
  bool effect() { return src.consumed(); }
  Fd release_fd() { return std::move(src.op_end); }
  void reuse(int n) { src.reuse(n); }
  std::string reuse_wrong() { return src.reuse_wrong(); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete_with_data(op, src.payload); }
  /// Nothing when the op got the payload, else `verb` and what it got
  /// (`received "..."`).
  [[nodiscard]] std::string got_wrong(const char* verb, std::string_view got) const {
    return got == src.payload ? "" : std::string(verb) + " \"" + std::string(got) + "\"";
  }
};

/// A form whose op writes into `sink`, full until unblock() drains it; the
/// op works on sink's fd (release_fd, reuse). A form overrides what differs.
struct SinkForm : FormBase {
  Sink sink;
  SinkForm(Env& e, Sink::Kind kind) : FormBase(e), sink(kind) {}
  void unblock() { sink.drain(); }
  bool effect() {
    sink.drain();
    return !sink.got.empty();
  }
  Fd release_fd() { return std::move(sink.op_end); }
  void reuse(int n) { sink.reuse(n); }
  std::string reuse_wrong() { return sink.reuse_wrong(); }
  /// Nothing when the sink got `want`, else what `where` got ("the pipe
  /// got \"...\"").
  [[nodiscard]] std::string sink_wrong(std::string_view want, const char* where) const {
    return sink.got == want ? "" : std::string(where) + " got \"" + sink.got + "\"";
  }
};

}  // namespace lev::conformance
