// Every operation against real kernels: pipes, socketpairs, loopback TCP.
// Parametrised over the real engines (support.hpp: real_engines()).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <new>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "lev/loop.hpp"
#include "lev/when.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::Engine;
using lev::test::for_each_engine;

namespace {

lev::Task<std::string> read_some(lev::Loop& loop, int fd) {
  std::array<char, 64> buf{};
  auto n = co_await loop.read(fd, buf);
  co_return std::string(buf.data(), n.value());
}

lev::Task<std::string> recv_to_eof(lev::Loop& loop, int fd) {
  std::string all;
  std::array<char, 4096> buf{};
  for (;;) {
    auto n = co_await loop.recv(fd, buf);
    if (!n || *n == 0) break;
    all.append(buf.data(), *n);
  }
  co_return all;
}

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("nop completes with success") {
    for_each_engine([](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<bool> { co_return bool(co_await loop.nop()); };
      CHECK(loop.block_on(t()));
    });
  }

  TEST_CASE("write then read through a pipe, awaitable form") {
    for_each_engine([](lev::Loop& loop) {
      auto [r, w] = lev::test::pipe_pair();
      auto t = [&]() -> lev::Task<std::string> {
        auto n = co_await loop.write(w, std::string_view("through the pipe"));
        CHECK(n.value() == 16);
        co_return co_await read_some(loop, r.get());
      };
      CHECK(loop.block_on(t()) == "through the pipe");
    });
  }

  TEST_CASE("write then read through a pipe, callback form") {
    for_each_engine([](lev::Loop& loop) {
      auto [r, w] = lev::test::pipe_pair();
      std::array<char, 32> buf{};
      std::string got;
      loop.write(w, std::string_view("callbacks"),
                 [&](lev::Operation& op, lev::Result<std::size_t> n) {
                   CHECK_FALSE(op.failed());
                   CHECK(*n == 9);
                   loop.read(r, buf, [&](lev::Operation&, lev::Result<std::size_t> m) {
                     got.assign(buf.data(), m.value());
                   });
                 });
      loop.run();
      CHECK(got == "callbacks");
    });
  }

  TEST_CASE("read and write at an offset in a regular file") {
    for_each_engine([](lev::Loop& loop) {
      const lev::test::TempDir dir("io");
      lev::Fd f{::open(dir.file("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)};
      REQUIRE(f);
      auto t = [&]() -> lev::Task<std::string> {
        (co_await loop.write(f, std::string_view("0123456789"), 0)).value();
        (co_await loop.write(f, std::string_view("ab"), 4)).value();
        std::array<char, 6> buf{};
        auto n = co_await loop.read(f, buf, 2);
        co_return std::string(buf.data(), n.value());
      };
      CHECK(loop.block_on(t()) == "23ab67");
    });
  }

  TEST_CASE("send and recv over a socketpair, with flags") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      auto t = [&]() -> lev::Task<std::string> {
        (co_await loop.send(a, std::string_view("peek me"))).value();
        std::array<char, 16> buf{};
        auto peeked = co_await loop.recv(b, buf, MSG_PEEK);
        CHECK(peeked.value() == 7);
        auto n = co_await loop.recv(b, buf);
        co_return std::string(buf.data(), n.value());
      };
      CHECK(loop.block_on(t()) == "peek me");
    });
  }

  TEST_CASE("send_all moves every byte of a large buffer while the peer reads") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::vector<unsigned char> data(8 << 20);
      std::iota(data.begin(), data.end(), 0);
      auto sender = [&]() -> lev::Task<std::size_t> {
        auto n = co_await loop.send_all(a, data);
        (co_await loop.shutdown(a, lev::Shutdown::write)).value();
        co_return n.value();
      };
      auto receiver = [&]() -> lev::Task<std::string> {
        co_return co_await recv_to_eof(loop, b.get());
      };
      std::size_t sent = 0;
      std::string got;
      // a coroutine lambda's captures live in the closure: keep it named
      auto send_side = [&]() -> lev::Task<> { sent = co_await sender(); };
      auto both = [&]() -> lev::Task<> {
        loop.spawn(send_side());
        got = co_await receiver();
      };
      loop.block_on(both());
      loop.run();  // the sender may still await its shutdown's completion
      CHECK(sent == data.size());
      REQUIRE(got.size() == data.size());
      CHECK(std::memcmp(got.data(), data.data(), data.size()) == 0);
    });
  }

  TEST_CASE("write_all fills a pipe beyond its capacity while the reader drains it") {
    for_each_engine([](lev::Loop& loop) {
      auto [r, w] = lev::test::pipe_pair();
      std::string data(1 << 20, 'x');
      for (std::size_t i = 0; i < data.size(); i += 4096) data[i] = char('a' + (i / 4096) % 26);
      std::string got;
      std::size_t written = 0;
      loop.write_all(w, data, [&](lev::Operation&, lev::Result<std::size_t> n) {
        written = n.value();
        w.reset();  // EOF for the reader
      });
      auto reader = [&]() -> lev::Task<> {
        std::array<char, 65536> buf;
        for (;;) {
          auto n = co_await loop.read(r, buf);
          if (!n || *n == 0) break;
          got.append(buf.data(), *n);
        }
      };
      loop.block_on(reader());
      CHECK(written == data.size());
      CHECK(got == data);
    });
  }

  TEST_CASE("loopback TCP: accept, connect, send, recv, shutdown to EOF, close") {
    for_each_engine([](lev::Loop& loop) {
      auto [listener, addr] = lev::test::tcp_listener();
      auto server = [&]() -> lev::Task<std::string> {
        auto c = co_await loop.accept(listener);
        REQUIRE(c);
        CHECK(c->peer.family() == AF_INET);
        CHECK(c->peer.to_string().rfind("127.0.0.1:", 0) == 0);
        std::string got = co_await recv_to_eof(loop, c->fd.get());
        (co_await loop.send_all(c->fd, std::string_view("bye"))).value();
        (co_await loop.close(c->fd)).value();
        CHECK_FALSE(c->fd.valid());
        co_return got;
      };
      auto client = [&]() -> lev::Task<std::string> {
        lev::Fd s = lev::test::tcp_socket();
        (co_await loop.connect(s, addr)).value();
        (co_await loop.send_all(s, std::string_view("hello over tcp"))).value();
        (co_await loop.shutdown(s, SHUT_WR)).value();
        std::string reply = co_await recv_to_eof(loop, s.get());
        (co_await loop.close(s)).value();
        co_return reply;
      };
      std::string server_got;
      auto server_side = [&]() -> lev::Task<> { server_got = co_await server(); };
      auto both = [&]() -> lev::Task<std::string> {
        loop.spawn(server_side());
        co_return co_await client();
      };
      CHECK(loop.block_on(both()) == "bye");
      CHECK(server_got == "hello over tcp");
    });
  }

  TEST_CASE("loopback TCP in callback form") {
    for_each_engine([](lev::Loop& loop) {
      auto [listener, addr] = lev::test::tcp_listener();
      lev::Fd client = lev::test::tcp_socket();
      lev::Fd server;
      std::array<char, 16> buf{};
      std::string got;
      bool connected = false;
      loop.accept(listener, [&](lev::Operation&, lev::Result<lev::Accepted> c) {
        server = std::move(c.value().fd);
        loop.recv(server, buf, [&](lev::Operation&, lev::Result<std::size_t> n) {
          got.assign(buf.data(), n.value());
          loop.shutdown(server, lev::Shutdown::both, [&](lev::Operation&, lev::Result<void> r) {
            CHECK(r);
            loop.close(server.release(), [](lev::Operation&, lev::Result<void> r2) { CHECK(r2); });
          });
        });
      });
      loop.connect(client, addr, [&](lev::Operation&, lev::Result<void> r) {
        connected = bool(r);
        loop.send(client, std::string_view("cb"),
                  [](lev::Operation&, lev::Result<std::size_t> n) { CHECK(*n == 2); });
      });
      loop.run();
      CHECK(connected);
      CHECK(got == "cb");
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("IPv6 loopback accept and connect") {
    Engine e = lev::test::real_engines().front();
    lev::Fd probe{::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    auto any = *lev::SocketAddress::ip("::1", 0);
    if (!probe || ::bind(probe.get(), any.data(), any.size()) != 0) {
      MESSAGE("skipped: no ::1 on this machine");
      return;
    }
    for_each_engine([](lev::Loop& loop) {
      auto [listener, addr] = lev::test::tcp_listener(true);
      auto t = [&]() -> lev::Task<std::string> {
        lev::Fd s = lev::test::tcp_socket(AF_INET6);
        lev::Result<lev::Accepted> accepted = lev::Error{};
        auto acc = [&]() -> lev::Task<> { accepted = co_await loop.accept(listener); };
        loop.spawn(acc());
        (co_await loop.connect(s, addr)).value();
        (co_await loop.send_all(s, std::string_view("v6"))).value();
        while (!accepted) (void)co_await loop.nop();
        CHECK(accepted->peer.family() == AF_INET6);
        std::array<char, 4> buf{};
        auto n = co_await loop.recv(accepted->fd, buf);
        co_return std::string(buf.data(), n.value());
      };
      CHECK(loop.block_on(t()) == "v6");
    });
    (void)e;
  }

  TEST_CASE("many concurrent ping-pongs over socketpairs all finish") {
    for_each_engine([](lev::Loop& loop) {
      constexpr int kPairs = 50, kRounds = 100;
      std::vector<std::pair<lev::Fd, lev::Fd>> pairs;
      for (int i = 0; i < kPairs; ++i) pairs.push_back(lev::test::socket_pair());
      int finished = 0;
      auto echo = [](lev::Loop& l, int fd) -> lev::Task<> {
        std::array<char, 64> buf;
        for (;;) {
          auto n = co_await l.recv(fd, buf);
          if (!n || *n == 0) co_return;
          (co_await l.send_all(fd, std::span(buf.data(), *n))).value();
        }
      };
      auto ping = [](lev::Loop& l, int fd, int& finished) -> lev::Task<> {
        std::array<char, 8> buf;
        for (int i = 0; i < kRounds; ++i) {
          (co_await l.send_all(fd, std::string_view("ping1234"))).value();
          std::size_t got = 0;
          while (got < 8)
            got += (co_await l.recv(fd, std::span(buf.data() + got, 8 - got))).value();
        }
        ::shutdown(fd, SHUT_WR);
        ++finished;
      };
      for (auto& p : pairs) {
        loop.spawn(echo(loop, p.first.get()));
        loop.spawn(ping(loop, p.second.get(), finished));
      }
      loop.run();
      CHECK(finished == kPairs);
      CHECK(loop.live_op_count() == 0);
    });
  }
}

TEST_SUITE("io deadlines") {
  TEST_CASE("recv with a timeout: timed_out when nothing comes, the value when data does") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::array<std::byte, 16> buf{};
      auto once = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await loop.recv(a, buf, {.timeout = 20ms});
      };
      const auto t0 = std::chrono::steady_clock::now();
      auto r = loop.block_on(once());
      REQUIRE_FALSE(r);
      CHECK(r.error().is_timeout());
      CHECK(r.error().message().find("recv") != std::string::npos);
      CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
      CHECK(loop.live_op_count() == 0);
      REQUIRE(::send(b.get(), "abc", 3, MSG_NOSIGNAL) == 3);
      auto got = loop.block_on(once());
      REQUIRE(got);
      CHECK(*got == 3);  // the timed-out recv took nothing
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("send_all with a timeout to a peer that never reads: timed_out, bytes reported") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::vector<char> big(8 << 20, 'x');
      auto t = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await loop.send_all(a, big, {.timeout = 30ms});
      };
      auto r = loop.block_on(t());
      REQUIRE_FALSE(r);
      CHECK(r.error().is_timeout());
      CHECK(r.error().transferred > 0);
      CHECK(r.error().transferred < big.size());
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("accept with a timeout, and a stop request on a bounded op is a cancellation") {
    for_each_engine([](lev::Loop& loop) {
      auto [l, addr] = lev::test::tcp_listener();
      auto acc = [&]() -> lev::Task<lev::Result<lev::Accepted>> {
        co_return co_await loop.accept(l, {.timeout = 10ms});
      };
      auto r = loop.block_on(acc());
      REQUIRE_FALSE(r);
      CHECK(r.error().is_timeout());

      auto [a, b] = lev::test::socket_pair();
      std::stop_source src;
      std::array<std::byte, 8> buf{};
      auto stopped = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await loop.recv(a, buf, {.timeout = 10s}).stop_on(src.get_token());
      };
      auto stopper = [&]() -> lev::Task<> {
        (void)co_await loop.after(5ms);
        src.request_stop();
      };
      loop.spawn(stopper());
      auto s = loop.block_on(stopped());
      REQUIRE_FALSE(s);
      CHECK(s.error().is_cancelled());
      CHECK(loop.live_op_count() == 0);
    });
  }
}

TEST_SUITE("io zero-copy") {
  TEST_CASE("zero-copy sends deliver every byte, in order; sockets that refuse it fall back" *
            lev::test::needs_uring()) {
    lev::Loop loop{lev::Model::proactor, {.zero_copy_threshold = 1}};
    auto check_stream = [&](lev::Fd& tx, lev::Fd& rx) {
      std::vector<char> data(3 << 20);
      for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + i / 4096);
      std::vector<char> got;
      auto sender = [&]() -> lev::Task<lev::Result<std::size_t>> {
        std::size_t total = 0;
        for (std::size_t off = 0; off < data.size(); off += 256 * 1024) {
          auto r = co_await loop.send_all(tx, std::span(data).subspan(off, 256 * 1024));
          if (!r) co_return r;
          total += *r;
        }
        co_return total;
      };
      auto receiver = [&]() -> lev::Task<> {
        std::vector<char> buf(1 << 16);
        while (got.size() < data.size()) {
          auto n = co_await loop.recv(rx, buf);
          if (!n || *n == 0) break;
          got.insert(got.end(), buf.begin(), buf.begin() + static_cast<long>(*n));
        }
      };
      loop.spawn(receiver());
      auto sent = loop.block_on(sender());
      loop.run();
      REQUIRE(sent);
      CHECK(*sent == data.size());
      CHECK(got == data);
      CHECK(loop.live_op_count() == 0);
    };
    SUBCASE("TCP") {
      auto [l, addr] = lev::test::tcp_listener();
      lev::Fd c{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
      REQUIRE(::connect(c.get(), addr.data(), addr.size()) == 0);
      lev::Fd s{::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)};
      check_stream(s, c);
    }
    SUBCASE("unix socket") {
      auto [a, b] = lev::test::socket_pair();
      check_stream(a, b);
    }
  }
}

namespace {

// An awaiter built in one place, moved to another before it is awaited;
// the first place is then scribbled over, as a dead temporary's stack slot
// is by the next call. What co_await does must not depend on that place.
template <class A, class Make>
A moved_out(Make make) {
  alignas(A) unsigned char first[sizeof(A)];
  A* a = ::new (static_cast<void*>(first)) A(make());
  A moved(std::move(*a));
  a->~A();
  std::memset(first, 0xa5, sizeof first);
  return moved;
}

// `n` bytes over four iovecs of uneven lengths.
struct Gather {
  std::string data;
  std::array<iovec, 4> iov{};
  explicit Gather(std::size_t n) : data(n, '\0') {
    for (std::size_t i = 0; i < n; ++i) data[i] = static_cast<char>('a' + (i * 13 + i / 251) % 26);
    const std::size_t cut[5] = {0, n / 7, n / 2, n - n / 5, n};
    for (std::size_t i = 0; i < 4; ++i) iov[i] = iovec{data.data() + cut[i], cut[i + 1] - cut[i]};
  }
};

template <class T>
lev::Task<T> join(lev::JoinHandle<T> h) {
  co_return co_await std::move(h);
}

lev::Task<std::string> recv_exactly(lev::Loop& loop, int fd, std::size_t want) {
  std::string all;
  std::array<char, 65536> buf{};
  while (all.size() < want) {
    auto n = co_await loop.recv(fd, buf);
    if (!n || *n == 0) break;
    all.append(buf.data(), *n);
  }
  co_return all;
}

}  // namespace

TEST_SUITE("io moved awaiters") {
  // Regression: writev_all points op.buf at its own copy of the iovecs; a
  // move copied the array but left op.buf at the old awaiter, so the write
  // read a dead place (writev: Bad address, the peer got nothing; ASan:
  // stack-use-after-return in WritevOp::attempt).
  TEST_CASE("a writev_all awaiter moved before co_await writes every byte from its own iovecs") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      int small = 4096;  // several writes: the continuation walks the copy too
      ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
      Gather g(256 * 1024);
      auto t = [&]() -> lev::Task<lev::Result<std::size_t>> {
        auto w = moved_out<lev::Loop::Awaiter<lev::detail::WritevOp>>(
            [&] { return loop.writev_all(a, g.iov); });
        co_return co_await w;
      };
      auto reader = loop.spawn(recv_exactly(loop, b.get(), g.data.size()));
      auto r = loop.block_on(t());
      REQUIRE(r);
      CHECK(*r == g.data.size());
      CHECK(loop.block_on(join(std::move(reader))) == g.data);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("writev_all with a time limit, or with stop_on, kept in a variable before co_await") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      Gather g(2000);
      auto t = [&]() -> lev::Task<std::size_t> {
        auto bounded = moved_out<lev::Loop::Deadline<lev::detail::WritevOp>>(
            [&] { return loop.writev_all(a, g.iov, {.timeout = 2s}); });
        auto n1 = co_await bounded;
        std::stop_source never;
        auto stoppable = loop.writev_all(a, g.iov).stop_on(never.get_token());  // moved into StopOn
        auto n2 = co_await stoppable;
        co_return n1.value() + n2.value();
      };
      CHECK(loop.block_on(t()) == 2 * g.data.size());
      CHECK(loop.block_on(recv_exactly(loop, b.get(), 2 * g.data.size())) == g.data + g.data);
    });
  }

  // The issue's own trigger: the awaiter is moved into with_timeout's task
  // and the temporary it was made in dies at the end of the statement.
  TEST_CASE("writev_all spawned inside with_timeout sends every byte") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      Gather g(2000);
      auto h = loop.spawn(lev::with_timeout(loop, loop.writev_all(a, g.iov), 2s));
      CHECK(loop.block_on(recv_exactly(loop, b.get(), g.data.size())) == g.data);
      auto r = loop.block_on(join(std::move(h)));
      REQUIRE(r);
      CHECK(*r == g.data.size());
    });
  }

  TEST_CASE("a moved writev_all resubmits the rest from its own iovecs (fake backend)") {
    lev::test::FakeLoop f;
    Gather g(2000);
    std::optional<lev::Result<std::size_t>> got;
    auto t = [&]() -> lev::Task<> {
      auto w = moved_out<lev::Loop::Awaiter<lev::detail::WritevOp>>(
          [&] { return f.loop.writev_all(7, g.iov); });
      got = co_await w;
    };
    f.loop.spawn(t());
    f.loop.run_once();
    auto rest_of = [](const lev::detail::OpBase& op) {
      const auto* v = static_cast<const iovec*>(op.buf);
      std::string s;
      for (std::uint32_t i = 0; i < op.len; ++i)
        s.append(static_cast<const char*>(v[i].iov_base), v[i].iov_len);
      return s;
    };
    lev::detail::OpBase* op = f.fake->find(lev::detail::OpKind::writev);
    REQUIRE(op);
    CHECK(rest_of(*op) == g.data);
    f.fake->complete(*op, 700);
    f.loop.run_once();
    op = f.fake->find(lev::detail::OpKind::writev);
    REQUIRE(op);
    CHECK(rest_of(*op) == g.data.substr(700));
    f.fake->complete(*op, 1300);
    f.loop.run_once();
    REQUIRE(got);
    REQUIRE(*got);
    CHECK(**got == 2000);
  }

  // Regression: the fake copied a readv's data over its iovec array itself
  // (op.buf holds the iovecs, op.len counts them), and took a write's data
  // into the caller's const buffer.
  TEST_CASE("the fake scatters a readv's data over its iovecs and refuses data for a write") {
    lev::test::FakeLoop f;
    std::array<char, 4> x{}, y{};
    const std::array<iovec, 2> iov{iovec{x.data(), 4}, iovec{y.data(), 4}};
    std::optional<lev::Result<std::size_t>> got;
    auto t = [&]() -> lev::Task<> { got = co_await f.loop.readv(5, iov); };
    f.loop.spawn(t());
    f.loop.run_once();
    lev::detail::OpBase* op = f.fake->find(lev::detail::OpKind::readv);
    REQUIRE(op);
    f.fake->complete_with_data(*op, "scatter");
    f.loop.run_once();
    REQUIRE(got);
    CHECK(got->value() == 7);
    CHECK(std::string(x.data(), 4) + std::string(y.data(), 3) == "scatter");
    CHECK(static_cast<const void*>(iov[1].iov_base) == y.data());  // the iovecs are intact
    const std::string text = "mine";
    auto w = [&]() -> lev::Task<> { (void)co_await f.loop.write(5, text); };
    f.loop.spawn(w());
    f.loop.run_once();
    op = f.fake->find(lev::detail::OpKind::write);
    REQUIRE(op);
    CHECK_THROWS_AS(f.fake->complete_with_data(*op, "theirs"), std::logic_error);
    CHECK(text == "mine");
    f.fake->complete(*op, 4);
    f.loop.run_once();
    CHECK(f.loop.live_op_count() == 0);
  }

  // Every other description with arguments of its own (an address, a
  // msghdr and its iovec, a statx buffer, paths): moved before co_await,
  // its first place scribbled over, the op still does what it says.
  TEST_CASE("every operation with arguments of its own works after its awaiter moved") {
    for_each_engine([](lev::Loop& loop) {
      using namespace lev::detail;
      using lev::Loop;
      auto [l, addr] = lev::test::tcp_listener();
      const lev::test::TempDir dir("moved");
      const std::string path = dir.file("f"), path2 = dir.file("g"), sub = dir.file("d");
      auto t = [&]() -> lev::Task<> {
        // accept + connect
        lev::Fd c = lev::test::tcp_socket();
        auto conn = moved_out<Loop::Awaiter<ConnectOp>>([&] { return loop.connect(c, addr); });
        auto acc = moved_out<Loop::Awaiter<AcceptOp>>([&] { return loop.accept(l); });
        CHECK(co_await conn);
        auto peer = co_await acc;
        REQUIRE(peer);
        CHECK(peer->peer.family() == AF_INET);
        // sendmsg + recvmsg (one iovec kept inside the Args, the peer's address)
        auto [d1, d2] = lev::test::socket_pair(SOCK_DGRAM);
        const std::string msg = "datagram";
        const iovec out{const_cast<char*>(msg.data()), msg.size()};
        char in_buf[32]{};
        const iovec in{in_buf, sizeof in_buf};
        auto snd = moved_out<Loop::Awaiter<SendmsgOp>>(
            [&] { return loop.make<SendmsgOp>(d1, std::span<const iovec>(&out, 1), nullptr, 0); });
        auto rcv = moved_out<Loop::Awaiter<RecvmsgOp>>(
            [&] { return loop.make<RecvmsgOp>(d2, std::span<const iovec>(&in, 1), 0); });
        CHECK((co_await snd).value() == msg.size());
        auto dg = co_await rcv;
        REQUIRE(dg);
        CHECK(std::string(in_buf, dg->size) == msg);
        // openat, statx, renameat, mkdirat, unlinkat (paths, a statx buffer)
        auto op = moved_out<Loop::Awaiter<OpenatOp>>(
            [&] { return loop.make<OpenatOp>(AT_FDCWD, path.c_str(), O_CREAT | O_RDWR, 0600u); });
        auto fd = co_await op;
        REQUIRE(fd);
        lev::Fd file{*fd};
        CHECK((co_await loop.write(file, std::string_view("12345"), 0)).value() == 5);
        auto st = moved_out<Loop::Awaiter<StatxOp>>(
            [&] { return loop.make<StatxOp>(AT_FDCWD, path.c_str(), 0); });
        auto stat = co_await st;
        REQUIRE(stat);
        CHECK(stat->size == 5);
        auto ren = moved_out<Loop::Awaiter<RenameatOp>>(
            [&] { return loop.make<RenameatOp>(AT_FDCWD, path.c_str(), path2.c_str(), 0); });
        CHECK(co_await ren);
        auto mk = moved_out<Loop::Awaiter<MkdiratOp>>(
            [&] { return loop.make<MkdiratOp>(AT_FDCWD, sub.c_str(), 0700u); });
        CHECK(co_await mk);
        auto rm1 = moved_out<Loop::Awaiter<UnlinkatOp>>(
            [&] { return loop.make<UnlinkatOp>(AT_FDCWD, path2.c_str(), 0); });
        CHECK(co_await rm1);
        auto rm2 = moved_out<Loop::Awaiter<UnlinkatOp>>(
            [&] { return loop.make<UnlinkatOp>(AT_FDCWD, sub.c_str(), AT_REMOVEDIR); });
        CHECK(co_await rm2);
        // splice (its output fd and offset are Args), plain writev and readv
        auto [pr, pw] = lev::test::pipe_pair();
        auto [s1, s2] = lev::test::socket_pair();
        Gather g(300);
        auto wv = moved_out<Loop::Awaiter<WritevOp>>([&] { return loop.writev(s1, g.iov); });
        CHECK((co_await wv).value() == 300);
        auto sp = moved_out<Loop::Awaiter<SpliceOp>>([&] { return loop.splice(s2, pw, 300); });
        CHECK((co_await sp).value() == 300);
        std::string back(300, '\0');
        const std::array<iovec, 2> into{iovec{back.data(), 100}, iovec{back.data() + 100, 200}};
        auto rv = moved_out<Loop::Awaiter<ReadvOp>>([&] { return loop.readv(pr, into); });
        CHECK((co_await rv).value() == 300);
        CHECK(back == g.data);
      };
      loop.block_on(t());
      CHECK(loop.live_op_count() == 0);
    });
  }
}
