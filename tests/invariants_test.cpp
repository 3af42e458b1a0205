// The completion-queue invariant, settled exactly once, exact registry, and
// teardown, checked deterministically on the fake backend (and for teardown
// against io_uring too).
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "lev/fake.hpp"
#include "lev/loop.hpp"
#include "support.hpp"

using lev::detail::OpKind;

namespace {

using lev::test::FakeLoop;

struct Seen {
  int calls = 0;
  int res = 0;
  bool cancelled = false;
  std::size_t bytes = 0;
};

auto record(Seen& s) {
  return [&s](lev::Operation& op, lev::Result<std::size_t> r) {
    ++s.calls;
    s.cancelled = op.is_cancelled();
    s.res = r ? 0 : r.error().code.value();
    s.bytes = r ? *r : 0;
  };
}

}  // namespace

TEST_SUITE("invariants") {
  TEST_CASE("a callback never runs during submission, only when the queue is drained") {
    FakeLoop f;
    char buf[8];
    Seen s;
    auto op = f.loop.recv(5, buf, record(s));
    CHECK(s.calls == 0);
    CHECK(f.loop.live_op_count() == 1);
    f.fake->complete_with_data(*f.fake->find(OpKind::recv), "hey");
    CHECK(s.calls == 0);  // recorded and queued, not delivered
    CHECK(op.is_done());
    CHECK(f.loop.live_op_count() == 1);  // live until delivered
    CHECK(f.loop.drain_callbacks() == 1);
    CHECK(s.calls == 1);
    CHECK(s.bytes == 3);
    CHECK(std::string(buf, 3) == "hey");
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE("a coroutine is resumed only from run_once, never from the completing call") {
    FakeLoop f;
    int stage = 0;
    auto t = [&]() -> lev::Task<> {
      stage = 1;
      (void)co_await f.loop.nop();
      stage = 2;
    };
    f.loop.spawn(t());
    CHECK(stage == 0);
    f.loop.run_once();
    CHECK(stage == 1);
    f.fake->complete(*f.fake->find(OpKind::nop), 0);
    CHECK(stage == 1);
    f.loop.run_once();
    CHECK(stage == 2);
  }

  TEST_CASE("cancel before submission settles once with ECANCELED") {
    FakeLoop f;
    char buf[8];
    Seen s;
    auto op = f.loop.recv(5, buf, record(s));
    op.cancel();  // not flushed to the "kernel" yet
    CHECK(s.calls == 0);
    CHECK(f.loop.live_op_count() == 1);
    f.loop.run_once();
    CHECK(s.calls == 1);
    CHECK(s.cancelled);
    CHECK(s.res == ECANCELED);
    CHECK(f.loop.live_op_count() == 0);
    CHECK(f.fake->find(OpKind::recv) == nullptr);  // nothing left to complete twice
  }

  TEST_CASE("cancel while in flight settles once with ECANCELED at the next round") {
    FakeLoop f;
    char buf[8];
    Seen s;
    auto op = f.loop.recv(5, buf, record(s));
    f.loop.run_once();  // flushed: now in flight
    CHECK(f.fake->pending().size() == 1);
    op.cancel();
    CHECK(f.fake->cancel_requested(*f.fake->pending()[0]));
    CHECK(s.calls == 0);
    f.loop.run_once();
    CHECK(s.calls == 1);
    CHECK(s.cancelled);
    CHECK(f.loop.live_op_count() == 0);
    f.loop.run_once();
    CHECK(s.calls == 1);
  }

  TEST_CASE("a completion that wins the race with cancel is delivered once, as completed") {
    FakeLoop f;
    char buf[8];
    Seen s;
    auto op = f.loop.recv(5, buf, record(s));
    f.loop.run_once();
    lev::detail::OpBase* rec = f.fake->pending()[0];
    op.cancel();
    f.fake->complete_with_data(*rec, "data");  // the kernel finished first
    CHECK_THROWS_AS(f.fake->complete(*rec, -ECANCELED), std::logic_error);  // never twice
    f.loop.run_once();
    f.loop.run_once();
    CHECK(s.calls == 1);
    CHECK_FALSE(s.cancelled);
    CHECK(s.bytes == 4);
  }

  TEST_CASE("cancel after the completion is queued but before delivery keeps the result") {
    FakeLoop f;
    char buf[8];
    Seen s;
    auto op = f.loop.recv(5, buf, record(s));
    f.loop.run_once();
    f.fake->complete_with_data(*f.fake->find(OpKind::recv), "ok");
    op.cancel();
    CHECK(f.fake->cancel_count() == 0);  // nothing to ask the backend
    f.loop.run_once();
    CHECK(s.calls == 1);
    CHECK_FALSE(s.cancelled);
    CHECK(s.bytes == 2);
  }

  TEST_CASE("cancel twice asks the backend once and settles once") {
    FakeLoop f;
    char buf[8];
    Seen s;
    auto op = f.loop.recv(5, buf, record(s));
    f.loop.run_once();
    op.cancel();
    op.cancel();
    CHECK(f.fake->cancel_count() == 1);
    f.loop.run_once();
    op.cancel();  // after delivery: harmless
    CHECK(s.calls == 1);
    CHECK(f.fake->cancel_count() == 1);
  }

  TEST_CASE("an accept that completes while being cancelled never leaks its fd") {
    const std::size_t before = lev::test::open_fd_count();
    {
      FakeLoop f;
      const std::size_t with_loop = lev::test::open_fd_count();  // + its wakeup eventfd
      int calls = 0;
      // the callback ignores the connection: the owned result closes it
      auto op = f.loop.accept(3, [&](lev::Operation&, lev::Result<lev::Accepted> r) {
        ++calls;
        CHECK(r);
      });
      f.loop.run_once();
      op.cancel();
      f.fake->complete(*f.fake->find(OpKind::accept), ::dup(0));
      CHECK(lev::test::open_fd_count() == with_loop + 1);
      f.loop.run_once();
      CHECK(calls == 1);
      CHECK(lev::test::open_fd_count() == with_loop);
    }
    {
      // completed, cancelled, and the loop destroyed before delivery
      std::optional<FakeLoop> f;
      f.emplace();
      const std::size_t with_loop = lev::test::open_fd_count();
      int calls = 0;
      auto op = f->loop.accept(3, [&](lev::Operation&, auto) { ++calls; });
      f->loop.run_once();
      op.cancel();
      f->fake->complete(*f->fake->find(OpKind::accept), ::dup(0));
      CHECK(lev::test::open_fd_count() == with_loop + 1);
      f.reset();
      CHECK(calls == 0);
      CHECK(lev::test::open_fd_count() == before);
    }
    {
      // an awaiting coroutine destroyed with the accept result queued
      FakeLoop f;
      const std::size_t with_loop = lev::test::open_fd_count();
      auto t = [&]() -> lev::Task<> { (void)co_await f.loop.accept(3); };
      f.loop.spawn(t());
      f.loop.run_once();
      f.fake->complete(*f.fake->find(OpKind::accept), ::dup(0));
      CHECK(lev::test::open_fd_count() == with_loop + 1);
    }
    CHECK(lev::test::open_fd_count() == before);
  }

  TEST_CASE("live_op_count is exact at every step") {
    FakeLoop f;
    char buf[4];
    CHECK(f.loop.live_op_count() == 0);
    auto a = f.loop.recv(5, buf, [](lev::Operation&, auto) {});
    CHECK(f.loop.live_op_count() == 1);
    auto b = f.loop.nop([](lev::Operation&, auto) {});
    CHECK(f.loop.live_op_count() == 2);
    auto c = f.loop.after(std::chrono::seconds(1), [](lev::Operation&, auto) {});
    CHECK(f.loop.live_op_count() == 3);
    f.loop.run_once();  // flush; auto_advance fires the timer (virtual second)
    CHECK(c.is_done());
    CHECK(f.loop.live_op_count() == 2);
    f.fake->complete(*f.fake->find(OpKind::nop), 0);
    CHECK(f.loop.live_op_count() == 2);  // queued is still live
    f.loop.run_once();
    CHECK(f.loop.live_op_count() == 1);
    a.cancel();
    CHECK(f.loop.live_op_count() == 1);
    f.loop.run_once();
    CHECK(f.loop.live_op_count() == 0);
    CHECK(a.is_cancelled());
  }

  TEST_CASE("destroying a fake loop with live operations cancels them all") {
    auto fake = std::make_shared<lev::FakeBackend>();
    std::vector<lev::Operation> ops;
    int calls = 0;
    {
      lev::Loop loop{lev::Model::proactor, {.backend = fake}};
      static char buf[16];
      for (int i = 0; i < 5; ++i)
        ops.push_back(loop.recv(5, buf, [&](lev::Operation&, auto) { ++calls; }));
      loop.run_once();
      ops.push_back(loop.after(std::chrono::hours(1), [&](lev::Operation&, auto) { ++calls; }));
      CHECK(fake->in_flight() == 5);
    }
    CHECK(fake->in_flight() == 0);
    CHECK(calls == 0);  // callbacks of a destroyed loop are not called
    for (auto& op : ops) CHECK(op.is_cancelled());
  }

  TEST_CASE("destroying an io_uring loop mid-recv reaps every completion before freeing frames" *
            lev::test::needs_uring()) {
    // Under ASan this proves the kernel writes into no freed frame: after the
    // loop is gone, the peers send data that a still-armed recv would write.
    std::vector<std::pair<lev::Fd, lev::Fd>> pairs;
    for (int i = 0; i < 8; ++i) pairs.push_back(lev::test::socket_pair());
    int resumed = 0;
    {
      lev::Loop loop{lev::Model::proactor};
      for (auto& p : pairs) {
        auto t = [](lev::Loop& l, int fd, int& resumed) -> lev::Task<> {
          std::array<std::byte, 64> buf;
          (void)co_await l.recv(fd, buf);
          ++resumed;
        };
        loop.spawn(t(loop, p.first.get(), resumed));
      }
      loop.run_once();
      CHECK(loop.live_op_count() == 8);
    }
    for (auto& p : pairs) CHECK(::send(p.second.get(), "xxxx", 4, MSG_NOSIGNAL) == 4);
    CHECK(resumed == 0);
    // The data is still in the socket: the cancelled recvs took nothing.
    char b[8];
    for (auto& p : pairs) CHECK(::recv(p.first.get(), b, sizeof(b), MSG_DONTWAIT) == 4);
  }

  TEST_CASE("teardown without IORING_ASYNC_CANCEL_ANY cancels each op by name" *
            lev::test::needs_uring()) {
    // Regression guard for the fallback registry older kernels need.
    ::setenv("LEV_URING_NO_CANCEL_ANY", "1", 1);
    auto [a, b] = lev::test::socket_pair();
    auto [c, d] = lev::test::socket_pair();
    {
      lev::Loop loop{lev::Model::proactor};
      ::unsetenv("LEV_URING_NO_CANCEL_ANY");
      std::array<char, 8> buf1, buf2;
      int done = 0;
      loop.recv(a, buf1, [&](lev::Operation&, auto) { ++done; });
      loop.recv(c, buf2, [&](lev::Operation&, auto) { ++done; });
      auto t = [&]() -> lev::Task<> { (void)co_await loop.nop(); };
      loop.block_on(t());
      CHECK(loop.live_op_count() == 2);
      CHECK(done == 0);
    }
    ::unsetenv("LEV_URING_NO_CANCEL_ANY");
    CHECK(::send(b.get(), "zz", 2, MSG_NOSIGNAL) == 2);
    char out[4];
    CHECK(::recv(a.get(), out, sizeof(out), MSG_DONTWAIT) == 2);  // nobody took it
  }

  TEST_CASE("on every real engine: nothing runs inline and live_op_count is exact") {
    for (const auto& e : lev::test::real_engines()) {
      CAPTURE(e.name);
      lev::Loop loop{e.model, lev::test::options_for(e)};
      auto [a, b] = lev::test::socket_pair();
      std::array<char, 8> buf;
      int calls = 0;
      auto op = loop.recv(a, buf, [&](lev::Operation&, lev::Result<std::size_t> r) {
        CHECK(r.value() == 3);
        ++calls;
      });
      CHECK(loop.live_op_count() == 1);
      CHECK(::send(b.get(), "abc", 3, 0) == 3);
      CHECK(calls == 0);
      loop.nop([&](lev::Operation&, auto) { ++calls; });
      CHECK(loop.live_op_count() == 2);
      CHECK(calls == 0);
      while (loop.live_op_count() > 0) loop.run_once();
      CHECK(calls == 2);
      op.cancel();  // after delivery: nothing happens, nothing is counted twice
      CHECK(loop.live_op_count() == 0);
    }
  }

  TEST_CASE("an Operation handle outlives its loop and still reports") {
    lev::Operation op;
    {
      lev::Loop loop{lev::Model::proactor, {.backend = "fake"}};
      op = loop.nop([](lev::Operation&, auto) {});
    }
    CHECK(op.valid());
    CHECK(op.is_done());
    CHECK(op.is_cancelled());
    op.cancel();  // harmless
  }

  TEST_CASE("callback captures are released right after the callback runs") {
    FakeLoop f;
    auto token = std::make_shared<int>(1);
    std::weak_ptr<int> watch = token;
    auto op = f.loop.nop([t = std::move(token)](lev::Operation&, auto) {});
    f.loop.run_once();
    f.fake->complete(*f.fake->find(OpKind::nop), 0);
    CHECK_FALSE(watch.expired());
    f.loop.run_once();
    CHECK(watch.expired());
    CHECK(op.valid());
  }

  TEST_CASE("the seed's on_complete(op, result, data) ABI works through lev::bind") {
    FakeLoop f;
    struct State {
      int calls = 0;
    } state;
    auto on_complete = [](lev::Operation& op, lev::Result<void> r, void* data) {
      CHECK(r);
      CHECK_FALSE(op.failed());
      ++static_cast<State*>(data)->calls;
    };
    f.loop.nop(lev::bind(+on_complete, &state));
    f.loop.run_once();
    f.fake->complete(*f.fake->find(OpKind::nop), 0);
    f.loop.run_once();
    CHECK(state.calls == 1);
  }
}
