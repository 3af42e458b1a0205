#pragma once
// A kernel between two descriptors' operations on a fake backend (tests,
// the TLS fuzz target, the simulation): a send completes whole at once and
// its bytes wait for the other end's receives, handed over in pieces a
// plan chooses (at most a pool buffer each); a closed end gives EOF.
#include <algorithm>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "lev/fake.hpp"
#include "lev/loop.hpp"

namespace lev::test {

// Carries bytes between two fds' operations on a fake backend, as a kernel
// would: a send completes whole at once, and its bytes wait for the other
// end's receives, handed over as `plan` says (at most a pool buffer each).
struct FakeWire {
  FakeBackend& fake;
  int a, b;
  std::string to_b{}, to_a{};  // bytes in flight towards b, towards a
  bool a_closed = false, b_closed = false;
  // How many bytes the next receive gets out of `waiting` (0: none now).
  std::function<std::size_t(std::size_t waiting)> plan = [](std::size_t w) { return w; };
  // Sees (and may change) the bytes of each send as they enter the wire.
  std::function<void(std::string& bytes, bool towards_b)> tamper{};

  // Completes what can complete now; true when something was.
  bool pump() {
    bool did = false;
    const std::vector<detail::OpBase*> ops = fake.pending();
    for (detail::OpBase* op : ops) {
      if (op->kind == detail::OpKind::send && (op->fd == a || op->fd == b)) {
        std::string bytes(static_cast<const char*>(op->buf), op->len);
        if (tamper) tamper(bytes, op->fd == a);
        (op->fd == a ? to_b : to_a).append(bytes);
        fake.complete(*op, static_cast<int>(op->len));
        did = true;
      } else if (op->kind == detail::OpKind::recv && (op->fd == a || op->fd == b)) {
        std::string& q = op->fd == b ? to_b : to_a;
        const bool closed = op->fd == b ? a_closed : b_closed;
        if (q.empty()) {
          if (closed) {
            fake.complete_with_data(*op, "");
            did = true;
          }
          continue;
        }
        const std::size_t n = std::min(plan(q.size()), q.size());
        if (n == 0) continue;
        fake.complete_with_data(*op, std::string_view(q).substr(0, n));
        if (op->res > 0) q.erase(0, static_cast<std::size_t>(op->res));
        did = true;
      }
    }
    return did;
  }
};

// Runs `loop` (on a fake backend) with `wire` pumped before each round
// until `done()`, at most `rounds` rounds; false when it never got there.
template <class Done>
bool run_wire(Loop& loop, FakeWire& wire, Done done, int rounds = 200000) {
  for (int i = 0; i < rounds; ++i) {
    if (done()) return true;
    wire.pump();
    loop.run_once();
  }
  return done();
}

}  // namespace lev::test
