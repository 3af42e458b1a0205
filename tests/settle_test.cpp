// Loop::settle and Loop::cancel: an operation settles exactly once, and a
// cancel recorded on it is honoured by every continuation (send_all
// resubmitting, recv(fd) going from readiness to its recv, a refused
// zero-copy send going out plain), also when it lands while an
// intermediate result is queued. Teardown and cross-thread wakes never
// touch a loop that is gone. Each case says what broke before.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>

#include "lev/fake.hpp"
#include "lev/loop.hpp"
#include "lev/when.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using lev::detail::OpKind;
using lev::test::FakeLoop;

namespace {

struct Seen {
  int calls = 0;
  bool cancelled = false;
  std::error_code code;
  std::size_t value = 0;
  std::size_t transferred = 0;
};

auto record(Seen& s) {
  return [&s](lev::Operation& op, lev::Result<std::size_t> r) {
    ++s.calls;
    s.cancelled = op.is_cancelled();
    if (r) {
      s.value = *r;
    } else {
      s.code = r.error().code;
      s.transferred = r.error().transferred;
    }
  };
}

// A completion backend that is the fake, except that it can be told to
// refuse the next submission (as io_uring_submit may fail).
class RefusingBackend final : public lev::CompletionBackend {
 public:
  lev::FakeBackend fake;
  int refuse_next = 0;

  void attach(lev::CompletionQueue& q) override { fake.attach(q); }
  [[nodiscard]] std::string_view name() const noexcept override { return "refusing"; }
  void submit(lev::detail::OpBase& op) override {
    if (refuse_next > 0) {
      --refuse_next;
      throw std::system_error(ENOMEM, std::system_category(), "submit refused by the test");
    }
    fake.submit(op);
  }
  void cancel(lev::detail::OpBase& op) override { fake.cancel(op); }
  void cancel_all() override { fake.cancel_all(); }
  std::size_t poll(std::optional<lev::Duration> t) override { return fake.poll(t); }
  [[nodiscard]] std::shared_ptr<lev::Clock> preferred_clock() override {
    return fake.preferred_clock();
  }
  [[nodiscard]] std::size_t in_flight() const noexcept override { return fake.in_flight(); }
};

// The descriptor number of this process's only eventfd, or -1.
int find_eventfd() {
  int found = -1;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec);
    if (!ec && target.string().find("eventfd") != std::string::npos)
      found = std::stoi(e.path().filename().string());
  }
  return found;
}

}  // namespace

TEST_SUITE("settle") {
  // Broke: Loop::cancel ignored an op whose partial result was queued, and
  // the drain resubmitted the rest: the callback never ran.
  TEST_CASE("a send_all cancelled while its partial result is queued ends cancelled with the bytes sent") {
    FakeLoop f;
    Seen s;
    auto op = f.loop.send_all(7, std::string_view("0123456789"), record(s));
    f.fake->complete(*f.fake->find(OpKind::send), 3);
    op.cancel();
    f.loop.run_once();
    CHECK(s.calls == 1);
    CHECK(s.cancelled);
    CHECK(s.code == std::errc::operation_canceled);
    CHECK(s.transferred == 3);
    CHECK(f.fake->pending().empty());  // nothing resubmitted
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE("a partial send_all with no cancel recorded goes on with the rest") {
    FakeLoop f;
    Seen s;
    auto op = f.loop.send_all(7, std::string_view("0123456789"), record(s));
    f.fake->complete(*f.fake->find(OpKind::send), 3);
    f.loop.run_once();
    lev::detail::OpBase* rest = f.fake->find(OpKind::send);
    REQUIRE(rest);
    CHECK(rest->len == 7);
    CHECK(std::string_view(static_cast<const char*>(rest->buf), rest->len) == "3456789");
    f.fake->complete(*rest, 7);
    f.loop.run_once();
    CHECK(s.calls == 1);
    CHECK(s.value == 10);
  }

  // Broke: the winner's delivery stopped the loser while its partial send
  // was queued in the same round; the rest was resubmitted to a peer that
  // never reads, so when_any never returned.
  TEST_CASE("when_any: a send_all stopped while its partial result is queued lets the race end") {
    FakeLoop f;
    std::array<char, 8> buf{};
    const std::string big(1 << 20, 'x');
    std::optional<std::size_t> winner;
    auto recv_task = [&]() -> lev::Task<lev::Result<std::size_t>> {
      co_return co_await f.loop.recv(5, buf);
    };
    auto send_task = [&]() -> lev::Task<lev::Result<std::size_t>> {
      co_return co_await f.loop.send_all(6, big);
    };
    auto race = [&]() -> lev::Task<> {
      auto w = co_await lev::when_any(recv_task(), send_task());
      winner = w.index;
    };
    f.loop.spawn(race());
    f.loop.run_once();
    f.fake->complete_with_data(*f.fake->find(OpKind::recv), "x");
    f.fake->complete(*f.fake->find(OpKind::send), 4096);
    for (int i = 0; i < 4 && !winner; ++i) f.loop.run_once();
    REQUIRE(winner);
    CHECK(*winner == 0);
    CHECK(f.fake->pending().empty());
    CHECK(f.loop.live_op_count() == 0);
  }

  // Broke: the deadline timer fired while the partial result was queued;
  // its cancel was ignored and the rest resubmitted with no deadline left.
  TEST_CASE("a deadline that lands while a partial send_all result is queued ends it timed_out") {
    FakeLoop f;
    std::optional<lev::Result<std::size_t>> got;
    // Armed first, due at the same instant as the send's deadline: it fires
    // first and queues the partial result before the deadline is delivered.
    auto early = f.loop.at(f.loop.now() + 1s, [&](lev::Operation&, lev::Result<lev::Expired>) {
      f.fake->complete(*f.fake->find(OpKind::send), 3);
    });
    auto sender = [&]() -> lev::Task<> {
      got.emplace(co_await f.loop.send_all(6, std::string_view("0123456789"), {.timeout = 1s}));
    };
    f.loop.spawn(sender());
    for (int i = 0; i < 6 && !got; ++i) f.loop.run_once();
    REQUIRE(got);
    REQUIRE_FALSE(*got);
    CHECK(got->error().code == std::errc::timed_out);
    CHECK(got->error().transferred == 3);
    CHECK(f.fake->pending().empty());
  }

  // Broke: a stop, then the deadline in the same round: loop-timer
  // deadlines said timed_out while io_uring's linked ones said cancelled.
  TEST_CASE("a stop recorded before the deadline stays a stop, and a deadline before a stop stays a deadline") {
    for (bool stop_first : {true, false}) {
      CAPTURE(stop_first);
      FakeLoop f;
      std::array<char, 8> buf{};
      std::stop_source src;
      std::optional<lev::Result<std::size_t>> got;
      std::optional<lev::Operation> stopper;
      auto arm_stop = [&] {
        stopper = f.loop.at(f.loop.now() + 1s,
                            [&](lev::Operation&, lev::Result<lev::Expired>) { src.request_stop(); });
      };
      if (stop_first) arm_stop();  // same instant, armed first: fires first
      auto reader = [&]() -> lev::Task<> {
        got.emplace(co_await f.loop.recv(5, buf, {.timeout = 1s}).stop_on(src.get_token()));
      };
      f.loop.spawn(reader());
      f.loop.run_once();
      if (!stop_first) arm_stop();
      for (int i = 0; i < 6 && !got; ++i) f.loop.run_once();
      REQUIRE(got);
      REQUIRE_FALSE(*got);
      CHECK(got->error().code ==
            (stop_first ? std::errc::operation_canceled : std::errc::timed_out));
    }
  }

  // Broke: a stop that raced the readiness step of recv(fd) on the plain
  // path handed the reader an empty Buffer (end of stream) while the data
  // was still in the socket.
  TEST_CASE("recv(fd) on the plain path: a stop racing readiness ends it cancelled, not at end of stream") {
    for (bool queued_first : {false, true}) {
      CAPTURE(queued_first);
      auto fake = std::make_shared<lev::FakeBackend>(
          lev::FakeBackend::Options{.auto_advance = true, .provide_buffers = false});
      lev::Loop loop{lev::Model::proactor, {.backend = fake}};
      std::stop_source src;
      std::optional<lev::Result<lev::Buffer>> got;
      auto reader = [&]() -> lev::Task<> {
        got.emplace(co_await loop.recv(5).stop_on(src.get_token()));
      };
      loop.spawn(reader());
      loop.run_once();
      lev::detail::OpBase* poll = fake->find(OpKind::poll, 5);
      REQUIRE(poll);
      if (queued_first) {  // readiness queued, then the stop
        fake->complete(*poll, POLLIN);
        src.request_stop();
      } else {  // the stop while in flight, then readiness wins the race
        loop.run_once();
        src.request_stop();
        fake->complete(*poll, POLLIN);
      }
      for (int i = 0; i < 4 && !got; ++i) loop.run_once();
      REQUIRE(got);
      REQUIRE_FALSE(*got);
      CHECK(got->error().is_cancelled());
      CHECK(fake->pending().empty());  // no recv was started after the stop
      CHECK(loop.recv_buffer_stats().in_use == 0);
    }
  }

  TEST_CASE("recv(fd) on the plain path: a deadline landing on queued readiness ends it timed_out") {
    auto fake = std::make_shared<lev::FakeBackend>(
        lev::FakeBackend::Options{.auto_advance = true, .provide_buffers = false});
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    std::optional<lev::Result<lev::Buffer>> got;
    auto early = loop.at(loop.now() + 1s, [&](lev::Operation&, lev::Result<lev::Expired>) {
      fake->complete(*fake->find(OpKind::poll, 5), POLLIN);
    });
    auto reader = [&]() -> lev::Task<> { got.emplace(co_await loop.recv(5, {.timeout = 1s})); };
    loop.spawn(reader());
    for (int i = 0; i < 6 && !got; ++i) loop.run_once();
    REQUIRE(got);
    REQUIRE_FALSE(*got);
    CHECK(got->error().code == std::errc::timed_out);
    CHECK(fake->pending().empty());
  }

  TEST_CASE("recv(fd) with buffer selection: a stop landing on a queued ENOBUFS ends it cancelled") {
    FakeLoop f;
    std::stop_source src;
    std::optional<lev::Result<lev::Buffer>> got;
    auto reader = [&]() -> lev::Task<> {
      got.emplace(co_await f.loop.recv(5).stop_on(src.get_token()));
    };
    f.loop.spawn(reader());
    f.loop.run_once();
    f.fake->fail(*f.fake->find(OpKind::recv, 5), ENOBUFS);
    src.request_stop();
    for (int i = 0; i < 4 && !got; ++i) f.loop.run_once();
    REQUIRE(got);
    REQUIRE_FALSE(*got);
    CHECK(got->error().is_cancelled());
    CHECK(f.loop.recv_buffer_stats().exhausted == 0);  // it never went on to wait
  }

  // Broke (io_uring without a buffer ring): the stop was lost when it came
  // after the readiness completion was queued; the reader went on to recv.
  TEST_CASE("recv(fd) on io_uring without a buffer ring: a stop after readiness leaves the data for the next recv" *
            lev::test::needs_uring()) {
    ::setenv("LEV_URING_NO_BUF_RING", "1", 1);
    lev::Loop loop{lev::Model::proactor};
    ::unsetenv("LEV_URING_NO_BUF_RING");
    REQUIRE_FALSE(loop.features().provided_buffers);
    auto [a, b] = lev::test::socket_pair();
    REQUIRE(::write(b.get(), "data", 4) == 4);
    std::stop_source src;
    auto reader = [&]() -> lev::Task<std::string> {
      // Submitted before the recv's readiness op: its completion (and the
      // stop) comes first in the same round, while readiness is queued.
      auto nop = loop.nop([&](lev::Operation&, lev::Result<void>) { src.request_stop(); });
      auto first = co_await loop.recv(a).stop_on(src.get_token());
      if (first) co_return "first recv got data: the stop was lost";
      if (!first.error().is_cancelled()) co_return "first recv: " + first.error().message();
      auto second = co_await loop.recv(a);
      co_return second ? std::string(second->view()) : second.error().message();
    };
    CHECK(loop.block_on(reader()) == "data");
  }

  // Broke: a zero-copy send refused by an AF_UNIX socket was resent plain
  // without its linked timeout, to a full peer: it never ended.
  TEST_CASE("a refused zero-copy send keeps its time limit" * lev::test::needs_uring()) {
    lev::LoopOptions o;
    o.zero_copy_threshold = 1;
    lev::Loop loop{lev::Model::proactor, o};
    if (!loop.features().zero_copy_send) {
      MESSAGE("skipped: this kernel has no IORING_OP_SEND_ZC");
      return;
    }
    auto [a, b] = lev::test::socket_pair();
    int small = 4096;
    ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    const std::string chunk(4096, 'z');
    while (::send(a.get(), chunk.data(), chunk.size(), MSG_DONTWAIT) > 0) {
    }
    std::optional<lev::Result<std::size_t>> got;
    auto sender = [&]() -> lev::Task<> {
      got.emplace(co_await loop.send(a, chunk, {.timeout = 50ms}));
    };
    auto guard = loop.after(5s, [&](lev::Operation&, lev::Result<lev::Expired>) { loop.stop(); });
    loop.spawn(sender());
    while (!got && !guard.is_done()) loop.run_once();
    REQUIRE(got);
    REQUIRE_FALSE(*got);
    CHECK(got->error().code == std::errc::timed_out);
    guard.cancel();
  }

  // Broke: a resubmission that threw left the op marked submitted, and the
  // exception escaped run_once.
  TEST_CASE("a send_all whose resubmission fails is delivered with the error and the bytes sent") {
    auto backend = std::make_shared<RefusingBackend>();
    lev::Loop loop{lev::Model::proactor, {.backend = backend}};
    Seen s;
    auto op = loop.send_all(7, std::string_view("0123456789"), record(s));
    backend->fake.complete(*backend->fake.find(OpKind::send), 3);
    backend->refuse_next = 1;
    CHECK_NOTHROW(loop.run_once());
    CHECK(s.calls == 1);
    CHECK(s.code == std::errc::not_enough_memory);
    CHECK(s.transferred == 3);
    CHECK(loop.live_op_count() == 0);
  }

  // Broke: writev_all's continuation (its own hook, not Loop::settle's
  // resubmit) delivered a failed resubmission as cancelled, not as why.
  TEST_CASE("a writev_all whose resubmission fails is delivered with the error and the bytes written") {
    auto backend = std::make_shared<RefusingBackend>();
    lev::Loop loop{lev::Model::proactor, {.backend = backend}};
    std::string a = "0123", b = "456789";
    std::array<iovec, 2> iov{iovec{a.data(), a.size()}, iovec{b.data(), b.size()}};
    std::optional<lev::Result<std::size_t>> got;
    auto w = [&]() -> lev::Task<> { got = co_await loop.writev_all(7, iov); };
    loop.spawn(w());
    loop.run_once();
    lev::detail::OpBase* op = backend->fake.find(OpKind::writev);
    REQUIRE(op);
    backend->fake.complete(*op, 5);  // past the first iovec: the rest must be resubmitted
    backend->refuse_next = 1;
    CHECK_NOTHROW(loop.run_once());
    CHECK_NOTHROW(loop.run_once());
    REQUIRE(got);
    REQUIRE(!*got);
    CHECK(got->error().code == std::errc::not_enough_memory);
    CHECK(got->error().transferred == 5);
    CHECK(loop.live_op_count() == 0);
  }

  // Broke: a post made from a frame destroyed at teardown (step 5) went to
  // the queue after it had been drained, and leaked.
  TEST_CASE("a post made while the loop tears down is dropped, not leaked") {
    auto witness = std::make_shared<int>(0);
    {
      FakeLoop f;
      struct PostOnDestroy {
        lev::Loop* loop;
        std::shared_ptr<int> w;
        ~PostOnDestroy() {
          loop->post([w = w] { ++*w; });
        }
      };
      auto sleeper = [](lev::Loop& l, std::shared_ptr<int> w) -> lev::Task<> {
        PostOnDestroy p{&l, std::move(w)};
        (void)co_await l.sleep_for(1h);
      };
      f.loop.spawn(sleeper(f.loop, witness));
      f.loop.run_once();
    }
    CHECK(*witness == 0);              // never ran
    CHECK(witness.use_count() == 1);   // and its capture was destroyed
  }

  // Broke: the worker finishing an offload published its result, then still
  // wrote the loop's eventfd; the loop could see the result, end and close
  // that eventfd first, and the 8 bytes went to whatever took its number.
  TEST_CASE("a waker preempted before its eventfd write never writes to a descriptor the loop closed") {
    static std::atomic<bool> in_hook{false};
    lev::detail::before_eventfd_wake.store(+[] {
      in_hook.store(true);
      std::this_thread::sleep_for(200ms);
    });
    int efd_number = -1;
    {
      lev::Loop loop{lev::Model::reactor};
      efd_number = find_eventfd();
      // A ticking timer keeps the loop looking at its inbox without the
      // eventfd: it takes the result while the worker sleeps before writing.
      auto tick = loop.every(1ms, [](lev::Operation&, lev::Result<lev::Expired>) {});
      int v = loop.block_on([](lev::Loop& l) -> lev::Task<int> {
        co_return co_await l.offload([] { return 7; });
      }(loop));
      CHECK(v == 7);
      tick.cancel();
      loop.drain_callbacks();
      CHECK(in_hook.load());
    }
    REQUIRE(efd_number >= 0);
    // Whatever the number means now: if it was freed, a pipe takes it.
    auto [r, w] = lev::test::pipe_pair();
    bool took_number = false;
    if (::fcntl(efd_number, F_GETFD) < 0) {
      REQUIRE(::dup2(w.get(), efd_number) == efd_number);
      took_number = true;
    }
    std::this_thread::sleep_for(400ms);  // the worker wakes and finishes
    lev::detail::before_eventfd_wake.store(nullptr);
    ::fcntl(r.get(), F_SETFL, O_NONBLOCK);
    char junk[16];
    CHECK(::read(r.get(), junk, sizeof junk) < 0);  // nothing arrived
    if (took_number) ::close(efd_number);
  }

  // A multishot's MoreFn asks for a cancel (a pause) while reap() walks the
  // CQ ring; with the SQ full, getting an SQE used to flush, and a flush that
  // met a full CQ (EBUSY) reaped inside the walk. Such cancels now wait
  // until the walk is done (UringBackend::deferred_cancels_). This case puts
  // many multishot results on tiny rings at once and checks that nothing is
  // lost or repeated; it does not reliably reach the deferral itself.
  TEST_CASE("many multishot results on tiny rings at once: nothing lost, nothing repeated" *
            lev::test::needs_uring()) {
    lev::LoopOptions o;
    o.queue_size = 2;
    o.cqe_entries = 16;
    o.recv_buffer_count = 64;
    o.recv_buffer_size = 16;
    lev::Loop loop{lev::Model::proactor, o};
    auto [probe_a, probe_b] = lev::test::socket_pair();
    REQUIRE(::write(probe_b.get(), "x", 1) == 1);
    auto arm = [](lev::Loop& l, int fd) -> lev::Task<lev::Result<lev::Buffer>> {
      co_return co_await l.recv(fd, {.timeout = 2s});
    };
    REQUIRE(loop.block_on(arm(loop, probe_a.get())));
    if (!loop.recv_buffer_stats().multishot) {
      MESSAGE("skipped: no multishot recv on this kernel");
      return;
    }
    constexpr int kConns = 8, kMessages = 40;
    std::vector<std::pair<lev::Fd, lev::Fd>> conns;
    for (int i = 0; i < kConns; ++i) {
      conns.push_back(lev::test::socket_pair());
      REQUIRE(::write(conns.back().second.get(), "<", 1) == 1);
      REQUIRE(loop.block_on(arm(loop, conns.back().first.get())));  // armed, then unread
    }
    auto message = [](int conn, int i) {
      std::string m(16, static_cast<char>('a' + conn));
      m[0] = static_cast<char>('0' + i % 10);
      return m;
    };
    for (int i = 0; i < kMessages; ++i)
      for (int c = 0; c < kConns; ++c) {
        const std::string m = message(c, i);
        REQUIRE(::write(conns[c].second.get(), m.data(), m.size()) == 16);
      }
    for (int c = 0; c < kConns; ++c) {
      std::string want;
      for (int i = 0; i < kMessages; ++i) want += message(c, i);
      auto read_all = [](lev::Loop& l, int fd, std::size_t n) -> lev::Task<std::string> {
        std::string got;
        while (got.size() < n) {
          auto b = co_await l.recv(fd, {.timeout = 2s});
          if (!b || b->empty()) break;
          got.append(b->view());
        }
        co_return got;
      };
      CHECK(loop.block_on(read_all(loop, conns[c].first.get(), want.size())) == want);
    }
    CHECK(loop.recv_buffer_stats().in_use == 0);
  }
}
