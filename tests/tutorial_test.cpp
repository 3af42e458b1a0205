// docs/tutorial.md, step 5: the client's ask() on the fake backend. The
// test decides when each operation completes and with what; time is
// virtual, so a one-second timeout costs no wall-clock time.
// [test]
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "tutorial_ask.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>

using namespace std::chrono_literals;

namespace {

// A loop on the fake backend, and the answer once ask() has returned.
struct Fixture {
  std::shared_ptr<lev::FakeBackend> fake = std::make_shared<lev::FakeBackend>();
  lev::Loop loop{lev::Model::proactor, {.backend = fake}};
  std::optional<lev::Result<std::string>> answer;

  void start_ask(std::string question, lev::Duration limit) {
    auto client = [](Fixture& f, std::string q, lev::Duration l) -> lev::Task<> {
      f.answer = co_await ask(f.loop, 7, std::move(q), l);  // fd 7: the fake never touches it
    };
    loop.spawn(client(*this, std::move(question), limit));
  }
  // Runs the loop until an operation of `kind` waits for the test.
  lev::detail::OpBase& pending(lev::detail::OpKind kind) {
    while (!fake->find(kind)) loop.run_once();
    return *fake->find(kind);
  }
};

}  // namespace

TEST_SUITE("tutorial") {
  TEST_CASE("ask returns the answer line, even when it arrives in pieces") {
    Fixture f;
    f.start_ask("hello", 1s);
    auto& send = f.pending(lev::detail::OpKind::send);
    CHECK(std::string(static_cast<const char*>(send.buf), send.len) == "hello\n");
    f.fake->complete(send, static_cast<int>(send.len));
    f.fake->complete_with_data(f.pending(lev::detail::OpKind::recv), "HEL");
    f.fake->complete_with_data(f.pending(lev::detail::OpKind::recv), "LO\n");
    while (!f.answer) f.loop.run_once();
    REQUIRE(*f.answer);
    CHECK(**f.answer == "HELLO");
  }

  TEST_CASE("ask gives up after its limit, and the receive is cancelled") {
    Fixture f;
    const auto start = f.fake->clock().now();
    f.start_ask("hello", 1s);
    auto& send = f.pending(lev::detail::OpKind::send);
    f.fake->complete(send, static_cast<int>(send.len));
    (void)f.pending(lev::detail::OpKind::recv);  // no answer will come
    while (!f.answer) f.loop.run_once();         // the clock jumps to the deadline
    REQUIRE_FALSE(*f.answer);
    CHECK(f.answer->error().is_timeout());
    CHECK(f.fake->clock().now() - start == 1s);
    CHECK(f.loop.live_op_count() == 0);  // nothing left behind
  }
}
// [/test]
