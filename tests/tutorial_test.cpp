// docs/tutorial.md, step 5: the client's ask() on the fake backend. The
// test decides when each operation completes and with what; time is
// virtual, so a one-second timeout costs no wall-clock time. It uses only
// lev's public names (nothing in lev::detail): tests/meson.build checks.
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
};

}  // namespace

TEST_SUITE("tutorial") {
  TEST_CASE("ask returns the answer line, even when it arrives in pieces") {
    Fixture f;
    f.start_ask("hello", 1s);
    lev::FakeOp send = f.fake->run_until(f.loop, "send");  // runs the loop until ask sends
    CHECK(send.fd() == 7);
    CHECK(send.data() == "hello\n");
    send.complete();  // every byte went
    f.fake->run_until(f.loop, "recv").complete_with_data("HEL");
    f.fake->run_until(f.loop, "recv").complete_with_data("LO\n");
    while (!f.answer) f.loop.run_once();
    REQUIRE(*f.answer);
    CHECK(**f.answer == "HELLO");
  }

  TEST_CASE("ask gives up after its limit, and the receive is cancelled") {
    Fixture f;
    const lev::TimePoint start = f.loop.now();
    f.start_ask("hello", 1s);
    f.fake->run_until(f.loop, "send").complete();
    lev::FakeOp recv = f.fake->run_until(f.loop, "recv");  // no answer will come
    while (!recv.cancel_requested()) f.loop.run_once();    // the clock jumps to the deadline
    CHECK(f.loop.now() - start == 1s);                     // virtual time: no second was waited
    while (!f.answer) f.loop.run_once();  // the receive ends cancelled, then ask returns
    REQUIRE_FALSE(*f.answer);
    CHECK(f.answer->error().is_timeout());
    CHECK(f.loop.live_op_count() == 0);  // nothing left behind
  }
}
// [/test]
