#pragma once
// The base of the conformance suite's forms: the flags and hooks a form
// does not need (see forms.hpp for what a form is).
#include <optional>
#include <string>

#include "conformance/world.hpp"
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

}  // namespace lev::conformance
