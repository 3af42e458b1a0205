// `co_await loop.recv(fd)`: owned buffers from the loop's pool, the
// multishot recv behind it on io_uring, exhaustion (ENOBUFS), pauses,
// deadlines, cancellation, close and teardown. Every real engine, plus the
// fake backend and the plain path (a backend without buffer selection).
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lev/loop.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::Engine;

namespace {

// The engines plus the io_uring plain-recv path (no provided-buffer ring).
template <class Fn>
void for_each_recv_engine(Fn fn, lev::LoopOptions base = {}) {
  for (const Engine& e : lev::test::real_engines()) {
    SUBCASE(e.name) {
      lev::LoopOptions o = base;
      o.backend = e.backend;
      lev::Loop loop{e.model, o};
      fn(loop);
    }
  }
  if (!lev::test::has_uring()) return;  // left out, as real_engines() leaves uring out
  SUBCASE("proactor/uring without a buffer ring") {
    ::setenv("LEV_URING_NO_BUF_RING", "1", 1);
    lev::LoopOptions o = base;
    lev::Loop loop{lev::Model::proactor, o};
    ::unsetenv("LEV_URING_NO_BUF_RING");
    fn(loop);
  }
}

void write_str(int fd, const std::string& s) {
  REQUIRE(::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size()));
}

lev::Task<std::string> recv_all(lev::Loop& loop, int fd) {
  std::string all;
  for (;;) {
    auto b = co_await loop.recv(fd);
    if (!b) co_return "error: " + b.error().message();
    if (b->empty()) break;
    all.append(b->view());
  }
  co_return all;
}

lev::Task<std::string> recv_bytes(lev::Loop& loop, int fd, std::size_t want) {
  std::string all;
  while (all.size() < want) {
    auto b = co_await loop.recv(fd);
    if (!b || b->empty()) break;
    all.append(b->view());
  }
  co_return all;
}

// Runs the loop for `d` (run_once alone would block while a recv waits).
void spin(lev::Loop& loop, lev::Duration d) {
  loop.block_on([](lev::Loop& l, lev::Duration t) -> lev::Task<> { (void)co_await l.after(t); }(loop, d));
}

// Runs the loop until `done()` or about two seconds.
template <class Pred>
void spin_until(lev::Loop& loop, Pred done) {
  for (int i = 0; i < 400 && !done(); ++i) spin(loop, 5ms);
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 26) % 26);
  return s;
}

}  // namespace

TEST_CASE("recv(fd) hands out owned buffers, empty at end of stream") {
  for_each_recv_engine([](lev::Loop& loop) {
    auto [a, b] = lev::test::socket_pair();
    write_str(b.get(), "hello");
    auto first = loop.block_on([](lev::Loop& l, int fd) -> lev::Task<std::string> {
      auto got = co_await l.recv(fd);
      REQUIRE(got);
      CHECK(got->holds_pool_buffer());
      co_return std::string(got->view());
    }(loop, a.get()));
    CHECK(first == "hello");
    CHECK(loop.recv_buffer_stats().in_use == 0);  // the Buffer went back
    const std::string body = pattern(100000);
    write_str(b.get(), body.substr(0, 50000));
    write_str(b.get(), body.substr(50000));
    b.reset();  // EOF after the data
    CHECK(loop.block_on(recv_all(loop, a.get())) == body);
    CHECK(loop.recv_buffer_stats().in_use == 0);
  });
}

TEST_CASE("recv(fd) on io_uring: one multishot recv serves many messages" *
          lev::test::needs_uring()) {
  lev::Loop loop{lev::Model::proactor};
  if (!loop.features().multishot_recv) return;  // kernel before 6.0: covered elsewhere
  auto [a, b] = lev::test::socket_pair();
  auto reader = [](lev::Loop& l, int fd) -> lev::Task<int> {
    int n = 0;
    for (;;) {
      auto got = co_await l.recv(fd);
      REQUIRE(got);
      if (got->empty()) break;
      CHECK(got->view().find('x') != std::string_view::npos);
      ++n;
    }
    co_return n;
  };
  auto writer = [](lev::Loop& l, int fd) -> lev::Task<> {
    for (int i = 0; i < 50; ++i) {
      REQUIRE(::write(fd, "x", 1) == 1);
      (void)co_await l.after(0ms);  // one message per round
    }
    ::shutdown(fd, SHUT_WR);
  };
  int bfd = b.get();
  loop.spawn(writer(loop, bfd));
  const int got = loop.block_on(reader(loop, a.get()));
  CHECK(got >= 1);
  const auto st = loop.recv_buffer_stats();
  CHECK(st.multishot);
  CHECK(st.kernel_ring);
  CHECK(st.arms <= 2);  // once, plus at most one re-arm should the kernel end it
  CHECK(st.in_use == 0);
}

TEST_CASE("an idle connection waiting in recv(fd) holds no buffer") {
  for_each_recv_engine([](lev::Loop& loop) {
    auto [a, b] = lev::test::socket_pair();
    std::string got;
    auto reader = [](lev::Loop& l, int fd, std::string& out) -> lev::Task<> {
      auto r = co_await l.recv(fd);
      if (r) out = std::string(r->view());
    };
    int afd = a.get();
    loop.spawn(reader(loop, afd, got));
    spin(loop, 10ms);  // armed, nothing arrived
    CHECK(loop.recv_buffer_stats().in_use == 0);
    write_str(b.get(), "late");
    spin_until(loop, [&] { return !got.empty(); });
    CHECK(got == "late");
    CHECK(loop.recv_buffer_stats().in_use == 0);
  });
}

TEST_CASE("an exhausted pool makes recv wait for a buffer, losing nothing") {
  lev::LoopOptions small;
  small.recv_buffer_count = 2;
  small.recv_buffer_size = 16;
  for_each_recv_engine(
      [](lev::Loop& loop) {
        auto [a1, b1] = lev::test::socket_pair();
        auto [a2, b2] = lev::test::socket_pair();
        write_str(b1.get(), pattern(32));  // exactly two buffers' worth
        const std::string body = pattern(500);
        std::string got2;
        // Task 1 takes both buffers and holds them a while.
        auto hog = [](lev::Loop& l, int fd) -> lev::Task<std::size_t> {
          std::vector<lev::Buffer> held;
          std::size_t n = 0;
          while (held.size() < 2) {
            auto b = co_await l.recv(fd);
            REQUIRE(b);
            n += b->size();
            held.push_back(std::move(*b));
          }
          (void)co_await l.after(30ms);  // task 2 finds the pool empty meanwhile
          co_return n;
        };
        auto taker = [](lev::Loop& l, int fd, std::size_t want, std::string& out) -> lev::Task<> {
          (void)co_await l.after(5ms);
          out = co_await recv_bytes(l, fd, want);
        };
        int a2fd = a2.get();
        write_str(b2.get(), body);
        loop.spawn(taker(loop, a2fd, body.size(), got2));
        CHECK(loop.block_on(hog(loop, a1.get())) == 32);
        spin_until(loop, [&] { return got2.size() >= body.size(); });
        CHECK(got2 == body);
        const auto st = loop.recv_buffer_stats();
        CHECK(st.exhausted >= 1);
        CHECK(st.peak_in_use <= 2);
        CHECK(st.in_use == 0);
      },
      small);
}

TEST_CASE("results nobody reads pause the multishot; all arrive in order") {
  lev::LoopOptions o;
  o.recv_buffer_count = 256;
  o.recv_buffer_size = 16;
  for_each_recv_engine(
      [](lev::Loop& loop) {
        auto [a, b] = lev::test::socket_pair();
        const std::string body = pattern(2000);  // 125 buffers of 16
        std::string got;
        auto reader = [](lev::Loop& l, int fd, std::size_t want, std::string& out) -> lev::Task<> {
          auto first = co_await l.recv(fd);  // arms
          if (first) out.append(first->view());
          (void)co_await l.after(20ms);  // meanwhile results pile up
          out += co_await recv_bytes(l, fd, want - out.size());
        };
        int afd = a.get();
        loop.spawn(reader(loop, afd, body.size(), got));
        spin(loop, 2ms);
        write_str(b.get(), body.substr(0, 1));
        spin(loop, 2ms);
        write_str(b.get(), body.substr(1));
        spin_until(loop, [&] { return got.size() >= body.size(); });
        CHECK(got == body);
        const auto st = loop.recv_buffer_stats();
        if (st.multishot) CHECK(st.paused >= 1);  // it stopped taking buffers for a while
        CHECK(st.in_use == 0);
      },
      o);
}

// Regression (finding F5): with a small pool, the multishot recv of a
// connection whose task had stopped reading kept taking buffers (the pause
// came at 16 unread, or when the pool was all but empty: too late with 2
// or 3 buffers, and the kernel takes several in one go anyway), so it held
// the whole pool and a reader of another connection on the loop waited
// for a buffer for ever.
TEST_CASE("a connection whose task stops reading cannot starve another connection's reader") {
  for (const std::uint32_t count : {2u, 3u}) {
    const std::string name = "a pool of " + std::to_string(count);
    SUBCASE(name.c_str()) {
      lev::LoopOptions small;
      small.recv_buffer_count = count;
      small.recv_buffer_size = 16;
      for_each_recv_engine(
          [](lev::Loop& loop) {
            auto [xa, xb] = lev::test::socket_pair();
            auto [ya, yb] = lev::test::socket_pair();
            // X's task reads once (arming its recv), then stops reading.
            bool resume_x = false;
            std::string x_first;
            auto stalled = [](lev::Loop& l, int fd, std::string& first,
                              bool& resume) -> lev::Task<> {
              {
                auto got = co_await l.recv(fd);
                if (got) first = std::string(got->view());
              }  // its buffer goes back
              for (int i = 0; i < 1000 && !resume; ++i) (void)co_await l.after(5ms);
            };
            loop.spawn(stalled(loop, xa.get(), x_first, resume_x));
            write_str(xb.get(), "x");
            spin_until(loop, [&] { return !x_first.empty(); });
            REQUIRE(x_first == "x");
            const std::string x_body = pattern(1000);  // 63 buffers' worth, never read
            write_str(xb.get(), x_body);
            spin(loop, 20ms);  // X's recv takes what it may
            // Y's reader must get its data (within about two seconds).
            const std::string y_body = pattern(100);
            std::string y_got;
            auto reader = [](lev::Loop& l, int fd, std::size_t want,
                             std::string& out) -> lev::Task<> {
              out = co_await recv_bytes(l, fd, want);
            };
            loop.spawn(reader(loop, ya.get(), y_body.size(), y_got));
            write_str(yb.get(), y_body);
            spin_until(loop, [&] { return y_got.size() >= y_body.size(); });
            CHECK(y_got == y_body);
            // Nothing of X's was lost meanwhile: read now, it is all there, in order.
            resume_x = true;
            const std::string x_got = loop.block_on(recv_bytes(loop, xa.get(), x_body.size()));
            CHECK(x_got == x_body);
            CHECK(loop.recv_buffer_stats().in_use == 0);
            const auto st = loop.recv_buffer_stats();
            if (st.multishot)
              CHECK(st.copied >= 1);  // X held the pool: its results were copied out
          },
          small);
    }
  }
}

// Regression (F5): the pause came at 16 unread results, or once a quarter
// of the pool or less was free: one fd nobody read held 6 of 8 buffers.
TEST_CASE("an fd nobody reads holds at most a quarter of a small pool while its data trickles in") {
  lev::LoopOptions o;
  o.recv_buffer_count = 8;
  o.recv_buffer_size = 16;
  for_each_recv_engine(
      [](lev::Loop& loop) {
        auto [a, b] = lev::test::socket_pair();
        bool first = false;
        auto stalled = [](lev::Loop& l, int fd, bool& got) -> lev::Task<> {
          got = (co_await l.recv(fd)).has_value();  // arms, then reads no more
        };
        loop.spawn(stalled(loop, a.get(), first));
        write_str(b.get(), "x");
        spin_until(loop, [&] { return first; });
        REQUIRE(first);
        for (int i = 0; i < 12; ++i) {  // one buffer's worth per round
          write_str(b.get(), "y");
          spin(loop, 2ms);
        }
        const auto st = loop.recv_buffer_stats();
        CHECK(st.in_use <= 2);  // 8 / 4
        // Read now, nothing is lost.
        CHECK(loop.block_on(recv_bytes(loop, a.get(), 12)) == std::string(12, 'y'));
        CHECK(loop.recv_buffer_stats().in_use == 0);
      },
      o);
}

TEST_CASE("recv(fd) with a timeout ends timed_out; later data is not lost") {
  for_each_recv_engine([](lev::Loop& loop) {
    auto [a, b] = lev::test::socket_pair();
    auto first = loop.block_on([](lev::Loop& l, int fd) -> lev::Task<std::error_code> {
      auto r = co_await l.recv(fd, {.timeout = 20ms});
      co_return r ? std::error_code{} : r.error().code;
    }(loop, a.get()));
    CHECK(first == std::errc::timed_out);
    write_str(b.get(), "after");
    auto second = loop.block_on([](lev::Loop& l, int fd) -> lev::Task<std::string> {
      auto r = co_await l.recv(fd, {.timeout = 5s});
      co_return r ? std::string(r->view()) : r.error().message();
    }(loop, a.get()));
    CHECK(second == "after");
  });
}

TEST_CASE("recv(fd) stops on its token; the connection stays usable") {
  for_each_recv_engine([](lev::Loop& loop) {
    auto [a, b] = lev::test::socket_pair();
    std::stop_source src;
    auto waiting = [](lev::Loop& l, int fd, std::stop_token tok) -> lev::Task<std::error_code> {
      auto r = co_await l.recv(fd).stop_on(std::move(tok));
      co_return r ? std::error_code{} : r.error().code;
    };
    auto stopper = [](lev::Loop& l, std::stop_source& s) -> lev::Task<> {
      (void)co_await l.after(10ms);
      s.request_stop();
    };
    loop.spawn(stopper(loop, src));
    CHECK(loop.block_on(waiting(loop, a.get(), src.get_token())) == std::errc::operation_canceled);
    write_str(b.get(), "still here");
    b.reset();
    CHECK(loop.block_on(recv_all(loop, a.get())) == "still here");
  });
}

TEST_CASE("closing the fd through lev lets go of its multishot recv") {
  for_each_recv_engine([](lev::Loop& loop) {
    auto [a, b] = lev::test::socket_pair();
    const std::size_t before = lev::test::open_fd_count();
    write_str(b.get(), "one");
    CHECK(loop.block_on([](lev::Loop& l, int fd) -> lev::Task<std::string> {
      auto r = co_await l.recv(fd);
      co_return r ? std::string(r->view()) : "";
    }(loop, a.get())) == "one");
    a.reset();  // lev::Fd: the loop cancels the armed recv
    spin(loop, 5ms);
    CHECK(lev::test::open_fd_count() == before - 1);
    // The kernel dropped its hold on the socket: the peer sees the close.
    char c;
    CHECK(::recv(b.get(), &c, 1, MSG_DONTWAIT) == 0);
    CHECK(loop.live_op_count() == 0);
  });
}

// Regression: on io_uring without multishot recv (kernels before 6.0, or
// without a buffer ring) the waiting recv is an op of its own whose
// request held the socket past the close: it never ended (a documented
// limit). Now the close cancels it by fd first (IORING_ASYNC_CANCEL_FD).
TEST_CASE("a socket closed through lev while recv(fd) waits ends that recv with an error") {
  auto check = [](lev::Loop& loop, bool by_loop) {
    if (loop.backend_name() == "uring" && !loop.features().cancel_fd &&
        !loop.features().multishot_recv) {
      MESSAGE("skipped: this kernel has no IORING_ASYNC_CANCEL_FD");
      return;
    }
    auto [a, b] = lev::test::socket_pair();
    const std::size_t before = lev::test::open_fd_count();
    std::optional<lev::Result<lev::Buffer>> got;
    auto t = [&]() -> lev::Task<> {
      auto waiter = [&]() -> lev::Task<> { got = co_await loop.recv(a.get()); };
      loop.spawn(waiter());
      (void)co_await loop.after(5ms);  // the recv waits
      if (by_loop)
        (void)co_await loop.close(a);
      else
        a.reset();
      for (int i = 0; i < 200 && !got; ++i) (void)co_await loop.after(1ms);
    };
    loop.block_on(t());
    REQUIRE(got);
    CHECK_FALSE(*got);
    CHECK(loop.live_op_count() == 0);
    CHECK(loop.recv_buffer_stats().in_use == 0);
    CHECK(lev::test::open_fd_count() == before - 1);
  };
  struct Variant {
    const char* name;
    const char* env;
  };
  std::vector<Variant> variants{{"defaults", nullptr}};
  if (lev::test::has_uring()) {
    variants.push_back({"io_uring one-shot recvs", "LEV_URING_NO_MULTISHOT_RECV"});
    variants.push_back({"io_uring without a buffer ring", "LEV_URING_NO_BUF_RING"});
  }
  for (const Variant& v : variants) {
    for (const Engine& e : lev::test::real_engines()) {
      if (v.env && std::string_view(e.backend) != "uring") continue;
      for (const bool by_loop : {false, true}) {
        SUBCASE((std::string(v.name) + ", " + e.name + (by_loop ? ", loop.close" : ", lev::Fd"))
                    .c_str()) {
          if (v.env) ::setenv(v.env, "1", 1);
          lev::Loop loop{e.model, {.backend = e.backend}};
          if (v.env) ::unsetenv(v.env);
          check(loop, by_loop);
        }
      }
    }
  }
}

TEST_CASE("a Buffer may outlive its loop; a loop torn down mid-recv settles") {
  lev::Buffer kept;
  {
    lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
    auto [a, b] = lev::test::socket_pair();
    write_str(b.get(), "keep");
    kept = loop.block_on([](lev::Loop& l, int fd) -> lev::Task<lev::Buffer> {
      auto r = co_await l.recv(fd);
      co_return std::move(r.value());
    }(loop, a.get()));
    write_str(b.get(), "queued and never read");
    auto pending = [](lev::Loop& l, int fd) -> lev::Task<> {
      (void)co_await l.after(1h);
      (void)co_await l.recv(fd);
    };
    auto waiting = [](lev::Loop& l, int fd) -> lev::Task<> { (void)co_await l.recv(fd); };
    auto [c, d] = lev::test::socket_pair();
    int afd = a.get(), cfd = c.get();
    loop.spawn(pending(loop, afd));
    loop.spawn(waiting(loop, cfd));
    spin(loop, 5ms);
  }
  CHECK(kept.view() == "keep");
  kept.reset();  // the orphaned pool goes now (ASan would catch a leak or a bad free)
}

TEST_CASE("recv(fd) on the fake backend: the test picks the data") {
  lev::test::FakeLoop f;
  auto [a, b] = lev::test::socket_pair();
  std::string got;
  auto reader = [](lev::Loop& l, int fd, std::string& out) -> lev::Task<> {
    auto r = co_await l.recv(fd);
    out = r ? std::string(r->view()) : r.error().message();
  };
  int afd = a.get();
  f.loop.spawn(reader(f.loop, afd, got));
  f.loop.run_once();
  lev::detail::OpBase* op = f.fake->find(lev::detail::OpKind::recv, afd);
  REQUIRE(op);
  CHECK(op->select == lev::detail::kSelectOnce);
  CHECK(f.loop.recv_buffer_stats().in_use == 0);  // nothing taken before data
  f.fake->complete_with_data(*op, "faked");
  f.loop.run_once();
  CHECK(got == "faked");
  CHECK(f.loop.recv_buffer_stats().in_use == 0);
}

TEST_CASE("recv(fd) on a bad fd is an error naming recv") {
  for_each_recv_engine([](lev::Loop& loop) {
    auto r = loop.block_on([](lev::Loop& l) -> lev::Task<lev::Result<lev::Buffer>> {
      co_return co_await l.recv(-1);
    }(loop));
    REQUIRE(!r);
    CHECK(r.error().message().find("recv") != std::string::npos);
  });
}

TEST_CASE("bad pool options are refused at construction") {
  CHECK_THROWS_AS((lev::Loop{lev::Model::proactor, {.recv_buffer_count = 0}}),
                  std::invalid_argument);
  CHECK_THROWS_AS((lev::Loop{lev::Model::reactor, {.recv_buffer_count = 40000}}),
                  std::invalid_argument);
  CHECK_THROWS_AS((lev::Loop{lev::Model::proactor, {.recv_buffer_size = 0}}),
                  std::invalid_argument);
}

TEST_CASE("run() returns when the only live ops are recvs nobody waits on") {
  for_each_recv_engine([](lev::Loop& loop) {
    auto [a, b] = lev::test::socket_pair();
    write_str(b.get(), "once");
    std::string got;
    auto reader = [](lev::Loop& l, int fd, std::string& out) -> lev::Task<> {
      auto r = co_await l.recv(fd);  // arms a multishot on io_uring; no second recv
      if (r) out = std::string(r->view());
    };
    int afd = a.get();
    loop.spawn(reader(loop, afd, got));
    loop.run();  // must not wait for the fd forever
    CHECK(got == "once");
    write_str(b.get(), "later");  // kept for a recv that comes later
    CHECK(loop.block_on([](lev::Loop& l, int fd) -> lev::Task<std::string> {
      auto r = co_await l.recv(fd);
      co_return r ? std::string(r->view()) : "";
    }(loop, afd)) == "later");
  });
}
