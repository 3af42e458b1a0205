// lev::net::DatagramSocket over loopback UDP (v4, v6) and unix datagram
// sockets, parametrised over the real engines.
#include "lev/net/datagram.hpp"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <netinet/in.h>

#include <array>
#include <cstring>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "support.hpp"

using namespace std::chrono_literals;
using lev::net::DatagramSocket;
using lev::test::for_each_engine;
using lev::test::TempDir;

namespace {

lev::Task<> ping_pong(lev::Loop& loop, const char* host) {
  auto server = DatagramSocket::bind(loop, *lev::SocketAddress::ip(host, 0));
  auto client = DatagramSocket::bind(loop, *lev::SocketAddress::ip(host, 0));
  REQUIRE(server);
  REQUIRE(client);
  const lev::SocketAddress to = server->local_address();
  CHECK((co_await client->send_to(std::string_view("ping"), to)).value() == 4);
  std::array<char, 64> buf{};
  auto d = co_await server->recv_from(buf);
  REQUIRE(d);
  CHECK(std::string_view(buf.data(), d->size) == "ping");
  CHECK(!d->truncated);
  CHECK(d->peer.port() == client->local_address().port());
  CHECK(d->peer.family() == client->local_address().family());
  CHECK((co_await server->send_to(std::string_view("pong!"), d->peer)).value() == 5);
  auto back = co_await client->recv_from(buf);
  REQUIRE(back);
  CHECK(std::string_view(buf.data(), back->size) == "pong!");
  CHECK(back->peer.port() == to.port());
}


// The engines receive() runs on: the real ones, and io_uring without
// multishot recv and without a buffer ring (its plain path: readiness,
// then a recvmsg into a pool buffer). `fn(loop)` per engine, a SUBCASE each.
template <class Fn>
void for_each_receive_engine(lev::LoopOptions base, Fn fn) {
  struct Variant {
    const char* name;
    lev::Model model;
    const char* backend;
    const char* env;  // set while the loop is made
  };
  std::vector<Variant> all;
  for (const auto& e : lev::test::real_engines()) all.push_back({e.name, e.model, e.backend, nullptr});
  if (lev::test::has_uring()) {
    all.push_back({"proactor/uring one-shot", lev::Model::proactor, "uring",
                   "LEV_URING_NO_MULTISHOT_RECV"});
    all.push_back({"proactor/uring no buffer ring", lev::Model::proactor, "uring",
                   "LEV_URING_NO_BUF_RING"});
  }
  for (const Variant& v : all) {
    SUBCASE(v.name) {
      if (v.env) ::setenv(v.env, "1", 1);
      lev::LoopOptions o = base;
      o.backend = v.backend;
      std::optional<lev::Loop> loop;
      try {
        loop.emplace(v.model, o);
      } catch (...) {
        if (v.env) ::unsetenv(v.env);
        throw;
      }
      if (v.env) ::unsetenv(v.env);
      fn(*loop);
    }
  }
}

lev::Task<> receive_ping_pong(lev::Loop& loop, const lev::SocketAddress& a_addr,
                              const lev::SocketAddress& b_addr) {
  auto a = DatagramSocket::bind(loop, a_addr);
  auto b = DatagramSocket::bind(loop, b_addr);
  REQUIRE((a && b));
  CHECK((co_await a->send_to(std::string_view("ping"), b->local_address())).value() == 4);
  auto d = co_await b->receive();
  REQUIRE(d);
  CHECK(d->data.view() == "ping");
  CHECK(!d->truncated);
  CHECK(d->peer.to_string() == a->local_address().to_string());
  // An empty datagram is one too (not an end of stream).
  CHECK((co_await a->send_to(std::string_view(), b->local_address())).value() == 0);
  auto e = co_await b->receive();
  REQUIRE(e);
  CHECK(e->data.empty());
  CHECK(e->peer.to_string() == a->local_address().to_string());
  CHECK((co_await b->send_to(d->data, d->peer)).value() == 4);  // echo the pool buffer
  auto back = co_await a->receive();
  REQUIRE(back);
  CHECK(back->data.view() == "ping");
}
}  // namespace

TEST_SUITE("datagram") {
  TEST_CASE("a UDP datagram goes both ways over IPv4 with the peer's address") {
    for_each_engine([](lev::Loop& loop) { loop.block_on(ping_pong(loop, "127.0.0.1")); });
  }

  TEST_CASE("a UDP datagram goes both ways over IPv6 with the peer's address") {
    lev::Fd probe{::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
    auto any6 = *lev::SocketAddress::ip("::1", 0);
    if (!probe || ::bind(probe.get(), any6.data(), any6.size()) != 0) {
      MESSAGE("skipped: no IPv6 loopback here");
      return;
    }
    probe.reset();
    for_each_engine([](lev::Loop& loop) { loop.block_on(ping_pong(loop, "::1")); });
  }

  TEST_CASE("a datagram longer than the buffer is cut and reported truncated") {
    for_each_engine([](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        auto a = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        auto b = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        REQUIRE((a && b));
        const std::string big(1000, 'x');
        CHECK((co_await a->send_to(big, b->local_address())).value() == 1000);
        std::array<char, 100> buf{};
        auto d = co_await b->recv_from(buf);
        REQUIRE(d);
        CHECK(d->size == 100);
        CHECK(d->truncated);
        // The rest of that datagram is gone: the next one is whole.
        CHECK((co_await a->send_to(std::string_view("next"), b->local_address())).value() == 4);
        auto n = co_await b->recv_from(buf);
        CHECK(std::string_view(buf.data(), n.value().size) == "next");
        CHECK(!n->truncated);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("sendmsg and recvmsg gather and scatter one datagram, connected send and recv work") {
    for_each_engine([](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        auto a = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        auto b = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        REQUIRE((a && b));
        const lev::SocketAddress to = b->local_address();
        std::string h = "head:", p = "payload";
        std::array<iovec, 2> out{iovec{h.data(), h.size()}, iovec{p.data(), p.size()}};
        CHECK((co_await a->sendmsg(out, &to)).value() == 12);
        std::array<char, 5> x{};
        std::array<char, 32> y{};
        std::array<iovec, 2> in{iovec{x.data(), x.size()}, iovec{y.data(), y.size()}};
        auto d = co_await b->recvmsg(in);
        REQUIRE(d);
        CHECK(d->size == 12);
        CHECK(std::string_view(x.data(), 5) == "head:");
        CHECK(std::string_view(y.data(), 7) == "payload");
        REQUIRE(a->connect(to));
        REQUIRE(b->connect(a->local_address()));
        CHECK((co_await a->send(std::string_view("c1"))).value() == 2);
        std::array<char, 8> buf{};
        CHECK((co_await b->recv(buf)).value() == 2);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("unix datagram sockets carry datagrams between bound paths") {
    for_each_engine([](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        const TempDir dir("dgram");  // short: sun_path holds 108 bytes
        auto a = DatagramSocket::bind(loop, *lev::SocketAddress::unix_path(dir.file("a")));
        auto b = DatagramSocket::bind(loop, *lev::SocketAddress::unix_path(dir.file("b")));
        REQUIRE((a && b));
        CHECK((co_await a->send_to(std::string_view("hello"), b->local_address())).value() == 5);
        std::array<char, 16> buf{};
        auto d = co_await b->recv_from(buf);
        REQUIRE(d);
        CHECK(std::string_view(buf.data(), d->size) == "hello");
        CHECK(d->peer.to_string() == "unix:" + dir.file("a"));
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("a recv_from with a deadline ends timed out when nothing comes") {
    for_each_engine([](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        auto s = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        REQUIRE(s);
        std::array<char, 16> buf{};
        auto d = co_await s->recv_from(buf, lev::IoOptions{.timeout = 20ms});
        CHECK(d.error().is_timeout());
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("a send_to with a deadline ends timed out while the peer's queue stays full") {
    // Regression (issue 22, item 5): send_to took no {.timeout}. A unix
    // datagram peer that does not read fills up (net.unix.max_dgram_qlen)
    // and a sender connected to it waits for room; the deadline ends the wait.
    for_each_engine([](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        const TempDir dir("dgram");  // short: sun_path holds 108 bytes
        auto a = DatagramSocket::bind(loop, *lev::SocketAddress::unix_path(dir.file("a")));
        auto b = DatagramSocket::bind(loop, *lev::SocketAddress::unix_path(dir.file("b")));
        REQUIRE((a && b));
        REQUIRE(a->connect(b->local_address()));
        int queued = 0;
        while (::send(a->fd(), "x", 1, MSG_DONTWAIT) == 1 && queued < 100000) ++queued;
        REQUIRE(errno == EAGAIN);
        const lev::TimePoint t0 = loop.now();
        auto sent = co_await a->send_to(std::string_view("late"), b->local_address(),
                                        lev::IoOptions{.timeout = 50ms});
        REQUIRE_FALSE(sent);
        CHECK(sent.error().is_timeout());
        CHECK(loop.now() - t0 >= 45ms);
        // Room again: the same send goes.
        std::array<char, 4> buf{};
        for (int i = 0; i < queued; ++i) REQUIRE(co_await b->recv_from(buf));
        auto again = co_await a->send_to(std::string_view("late"), b->local_address(),
                                         lev::IoOptions{.timeout = 5s});
        CHECK(again.value() == 4);
      };
      loop.block_on(t());
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a server receives 1000 datagrams from a windowed sender with none lost") {
    for_each_engine([](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        auto server = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        auto client = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        REQUIRE((server && client));
        server->receive_buffer(1 << 20);
        const lev::SocketAddress to = server->local_address();
        constexpr int kTotal = 1000, kWindow = 32;
        std::array<bool, kTotal> seen{};
        int got = 0;
        auto receiver = [&]() -> lev::Task<> {
          std::array<char, 64> buf{};
          while (got < kTotal) {
            auto d = co_await server->recv_from(buf, lev::IoOptions{.timeout = 2s});
            if (!d) break;
            const int i = std::stoi(std::string(buf.data(), d->size));
            if (i >= 0 && i < kTotal && !seen[static_cast<std::size_t>(i)]) {
              seen[static_cast<std::size_t>(i)] = true;
              ++got;
            }
          }
        };
        loop.spawn(receiver());
        for (int i = 0; i < kTotal; ++i) {
          while (i - got >= kWindow) (void)co_await loop.nop();  // a window in flight
          const std::string msg = std::to_string(i);
          CHECK((co_await client->send_to(msg, to)).value() == msg.size());
        }
        const auto until = loop.now() + 2s;
        while (got < kTotal && loop.now() < until) (void)co_await loop.after(1ms);
        CHECK(got == kTotal);
      };
      loop.block_on(t());
    });
  }


  TEST_CASE("receive hands over a pooled datagram with its sender over IPv4, IPv6 and unix paths") {
    for_each_receive_engine({}, [](lev::Loop& loop) {
      loop.block_on(receive_ping_pong(loop, *lev::SocketAddress::ip("127.0.0.1", 0),
                                      *lev::SocketAddress::ip("127.0.0.1", 0)));
      lev::Fd probe{::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
      auto any6 = *lev::SocketAddress::ip("::1", 0);
      if (probe && ::bind(probe.get(), any6.data(), any6.size()) == 0)
        loop.block_on(receive_ping_pong(loop, any6, any6));
      {
        const TempDir dir("dgram");  // short: sun_path holds 108 bytes
        loop.block_on(receive_ping_pong(loop, *lev::SocketAddress::unix_path(dir.file("a")),
                                        *lev::SocketAddress::unix_path(dir.file("b"))));
      }
      const lev::RecvBufferStats st = loop.datagram_buffer_stats();
      CHECK(st.in_use == 0);
      CHECK(st.buffer_size >= 65536);
      CHECK(st.multishot == (st.arms > 0));
      CHECK(loop.recv_buffer_stats().buffers == 0);  // the stream pool was never made
    });
  }

  TEST_CASE("receive: io_uring serves it with one multishot recvmsg per socket from its own buffer group") {
    if (!lev::test::has_uring()) return;
    lev::Loop loop{lev::Model::proactor, {.backend = "uring"}};
    auto t = [&]() -> lev::Task<> {
      auto a = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
      auto b = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
      REQUIRE((a && b));
      // A stream pool beside it (group 0) does not mix with the datagrams' (group 1).
      auto [x, y] = lev::test::socket_pair();
      CHECK((co_await loop.send(y, std::string_view("stream"))).value() == 6);
      auto sb = co_await loop.recv(x);
      REQUIRE(sb);
      CHECK(sb->view() == "stream");
      for (int i = 0; i < 50; ++i) {
        const std::string m = "d" + std::to_string(i);
        CHECK((co_await a->send_to(m, b->local_address())).value() == m.size());
        auto d = co_await b->receive();
        REQUIRE(d);
        CHECK(d->data.view() == m);
      }
    };
    loop.block_on(t());
    const lev::RecvBufferStats st = loop.datagram_buffer_stats();
    CHECK(st.kernel_ring);
    if (st.multishot) CHECK(st.arms == 1);
    CHECK(loop.recv_buffer_stats().kernel_ring);
  }

  TEST_CASE("receive cuts a datagram longer than a pool buffer and reports it truncated") {
    for_each_receive_engine({.datagram_buffer_size = 16}, [](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        auto a = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        auto b = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        REQUIRE((a && b));
        const std::string big(100, 'x');
        CHECK((co_await a->send_to(big, b->local_address())).value() == 100);
        auto d = co_await b->receive();
        REQUIRE(d);
        CHECK(d->data.size() == 16);
        CHECK(d->data.view() == big.substr(0, 16));
        CHECK(d->truncated);
        CHECK((co_await a->send_to(std::string_view("fits"), b->local_address())).value() == 4);
        auto n = co_await b->receive();
        REQUIRE(n);
        CHECK(n->data.view() == "fits");
        CHECK(!n->truncated);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("a receive with a timeout ends timed out; a datagram that comes later waits for the next") {
    for_each_receive_engine({}, [](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        auto a = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        auto b = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        REQUIRE((a && b));
        auto d = co_await b->receive(20ms);
        REQUIRE(!d);
        CHECK(d.error().is_timeout());
        CHECK(std::string(d.error().message()).find("recvmsg") != std::string::npos);
        std::stop_source stop;
        stop.request_stop();
        auto c = co_await b->receive().stop_on(stop.get_token());
        REQUIRE(!c);
        CHECK(c.error().is_cancelled());
        CHECK((co_await a->send_to(std::string_view("late"), b->local_address())).value() == 4);
        (void)co_await loop.after(10ms);  // arrives while nobody receives
        auto n = co_await b->receive(1s);
        REQUIRE(n);
        CHECK(n->data.view() == "late");
      };
      loop.block_on(t());
      CHECK(loop.datagram_buffer_stats().in_use == 0);
    });
  }

  TEST_CASE(
      "receive takes IoOptions as the other operations do; flags it refuses on every engine") {
    // Regression (issue 22, item 5): receive() took a bare
    // std::optional<Duration> where every other operation takes
    // {.timeout, .flags}; receive({.timeout = ...}) did not compile. A
    // pool receive cannot peek on io_uring (a one-shot recvmsg with a
    // kernel-picked buffer had no msghdr: Bad address), so flags are
    // refused alike everywhere, and the datagram stays for the next one.
    for_each_receive_engine({}, [](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        auto a = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        auto b = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        REQUIRE((a && b));
        auto none = co_await b->receive({.timeout = 20ms});
        REQUIRE(!none);
        CHECK(none.error().is_timeout());
        CHECK((co_await a->send_to(std::string_view("peeked"), b->local_address())).value() == 6);
        (void)co_await loop.after(5ms);  // it has arrived
        auto peek = co_await b->receive({.flags = MSG_PEEK, .timeout = 1s});
        REQUIRE(!peek);
        CHECK(peek.error().code == std::errc::invalid_argument);
        CHECK(std::string(peek.error().op) == "recvmsg");
        auto taken = co_await b->receive({.timeout = 1s});  // still there
        REQUIRE_MESSAGE(taken, taken.error().message());
        CHECK(taken->data.view() == "peeked");
        CHECK(taken->peer.to_string() == a->local_address().to_string());
        auto after = co_await b->receive(std::optional<lev::Duration>(20ms));  // the old form
        REQUIRE(!after);
        CHECK(after.error().is_timeout());
      };
      loop.block_on(t());
      // io_uring: the closed socket's multishot ends on a later round.
      for (int i = 0; i < 100 && loop.live_op_count() > 0; ++i) loop.run_once();
      CHECK(loop.datagram_buffer_stats().in_use == 0);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a socket closed while its receive waits ends that receive with an error, no buffer kept") {
    for_each_receive_engine({}, [](lev::Loop& loop) {
      const std::size_t before = lev::test::open_fd_count();
      std::optional<lev::Result<lev::ReceivedDatagram>> got;
      auto t = [&]() -> lev::Task<> {
        auto b = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        REQUIRE(b);
        std::stop_source stop;
        auto r = [&]() -> lev::Task<> { got = co_await b->receive().stop_on(stop.get_token()); };
        loop.spawn(r());
        (void)co_await loop.after(5ms);  // the receive waits
        // Regression: on io_uring without multishot recv the receive's
        // readiness wait outlived the close (the request holds the file)
        // and never ended; now the close cancels it by fd first.
        if (loop.backend_name() == "uring" && !loop.features().cancel_fd) {
          MESSAGE("this kernel has no IORING_ASYNC_CANCEL_FD: the receive is stopped first");
          stop.request_stop();
        }
        *b = DatagramSocket{};  // closes the fd under it
        for (int i = 0; i < 100 && !got; ++i) (void)co_await loop.after(1ms);
      };
      loop.block_on(t());
      REQUIRE(got);
      REQUIRE(!*got);
      CHECK(loop.live_op_count() == 0);
      CHECK(loop.datagram_buffer_stats().in_use == 0);
      CHECK(lev::test::open_fd_count() == before);
    });
  }

  TEST_CASE("a receive server takes 1000 datagrams from a windowed sender with none lost") {
    for_each_receive_engine({}, [](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        auto server = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        auto client = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        REQUIRE((server && client));
        const lev::SocketAddress to = server->local_address();
        constexpr int kTotal = 1000, kWindow = 32;  // the window fits the socket buffer
        std::array<bool, kTotal> seen{};
        int got = 0, bad = 0;
        auto receiver = [&]() -> lev::Task<> {
          while (got < kTotal) {
            auto d = co_await server->receive(2s);
            if (!d) break;
            const std::string text(d->data.view());
            const int i = text.empty() ? -1 : std::stoi(text);
            if (i >= 0 && i < kTotal && !seen[static_cast<std::size_t>(i)] && !d->truncated) {
              seen[static_cast<std::size_t>(i)] = true;
              ++got;
            } else {
              ++bad;
            }
          }
        };
        loop.spawn(receiver());
        for (int i = 0; i < kTotal; ++i) {
          while (i - got >= kWindow) (void)co_await loop.nop();
          const std::string msg = std::to_string(i);
          CHECK((co_await client->send_to(msg, to)).value() == msg.size());
        }
        const auto until = loop.now() + 2s;
        while (got < kTotal && loop.now() < until) (void)co_await loop.after(1ms);
        CHECK(got == kTotal);
        CHECK(bad == 0);
      };
      loop.block_on(t());
      CHECK(loop.datagram_buffer_stats().in_use == 0);
    });
  }

  TEST_CASE("when the datagram pool runs dry, datagrams wait in the socket buffer, the overflow is dropped, and receiving goes on") {
    for_each_receive_engine({.datagram_buffer_count = 4, .datagram_buffer_size = 256}, [](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        auto server = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        auto client = DatagramSocket::bind(loop, *lev::SocketAddress::ip("127.0.0.1", 0));
        REQUIRE((server && client));
        server->receive_buffer(4096);  // the kernel's floor: a few dozen small datagrams
        const lev::SocketAddress to = server->local_address();
        std::vector<lev::ReceivedDatagram> held;
        for (int i = 0; i < 4; ++i) {  // every pool buffer held by the program
          CHECK((co_await client->send_to(std::string_view("held"), to)).value() == 4);
          auto d = co_await server->receive(1s);
          REQUIRE(d);
          held.push_back(std::move(*d));
        }
        CHECK(loop.datagram_buffer_stats().in_use == 4);
        constexpr int kBurst = 2000;
        for (int i = 0; i < kBurst; ++i) {
          const std::string m = std::to_string(i);
          auto s = co_await client->send_to(m, to);  // UDP: the sender is not held back
          CHECK(s);
        }
        // One receive waits now: the pool is dry, so it waits for a buffer.
        std::optional<lev::Result<lev::ReceivedDatagram>> next;
        auto r = [&]() -> lev::Task<> { next = co_await server->receive(2s); };
        loop.spawn(r());
        (void)co_await loop.after(20ms);
        CHECK(!next);
        held.clear();  // buffers back: the waiting receive and the rest go on
        for (int i = 0; i < 100 && !next; ++i) (void)co_await loop.after(1ms);
        REQUIRE(next);
        REQUIRE(*next);
        int received = 1;
        for (;;) {
          auto d = co_await server->receive(100ms);
          if (!d) {
            CHECK(d.error().is_timeout());
            break;
          }
          ++received;
        }
        CHECK(received > 0);
        CHECK(received < kBurst);  // the socket buffer could not hold the burst: dropped, as UDP may
        CHECK((co_await client->send_to(std::string_view("after"), to)).value() == 5);
        auto after = co_await server->receive(1s);
        REQUIRE(after);
        CHECK(after->data.view() == "after");
      };
      loop.block_on(t());
      CHECK(loop.datagram_buffer_stats().in_use == 0);
    });
  }

  TEST_CASE("on the fake backend send_to and recv_from are recorded, completed by the test, and cancelled") {
    lev::test::FakeLoop f;
    DatagramSocket s{f.loop, lev::Fd{::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)}};
    REQUIRE(s.is_open());
    const lev::SocketAddress peer = *lev::SocketAddress::ip("127.0.0.1", 4242);
    // send_to: the op carries the datagram and its destination.
    std::optional<lev::Result<std::size_t>> sent;
    auto send = [&]() -> lev::Task<> { sent = co_await s.send_to(std::string_view("hello"), peer); };
    f.loop.spawn(send());
    f.loop.run_once();
    lev::detail::OpBase* op = f.fake->find(lev::detail::OpKind::sendmsg);
    REQUIRE(op);
    const msghdr& out = static_cast<lev::detail::MessageArgs*>(op->args)->msg;
    REQUIRE(out.msg_iovlen == 1);
    CHECK(std::string_view(static_cast<const char*>(out.msg_iov[0].iov_base), out.msg_iov[0].iov_len) == "hello");
    CHECK(lev::SocketAddress(static_cast<const sockaddr*>(out.msg_name), out.msg_namelen).port() == 4242);
    f.fake->complete(*op, 5);
    f.loop.run_once();
    REQUIRE(sent);
    CHECK(sent->value() == 5);
    // recv_from: what the "kernel" writes (bytes, sender, MSG_TRUNC) is what
    // the Datagram says; a length past the buffer is cut to it.
    std::array<char, 4> buf{};
    std::optional<lev::Result<lev::Datagram>> got;
    auto recv = [&]() -> lev::Task<> { got = co_await s.recv_from(buf); };
    f.loop.spawn(recv());
    f.loop.run_once();
    op = f.fake->find(lev::detail::OpKind::recvmsg);
    REQUIRE(op);
    msghdr& in = static_cast<lev::detail::MessageArgs*>(op->args)->msg;
    std::memcpy(in.msg_iov[0].iov_base, "abcd", 4);
    std::memcpy(in.msg_name, peer.data(), peer.size());
    in.msg_namelen = peer.size();
    in.msg_flags = MSG_TRUNC;
    f.fake->complete(*op, 9);
    f.loop.run_once();
    REQUIRE(got);
    REQUIRE(*got);
    CHECK((*got)->size == 4);
    CHECK((*got)->truncated);
    CHECK((*got)->peer.port() == 4242);
    CHECK(std::string_view(buf.data(), 4) == "abcd");
    // A recv_from stopped before anything came ends cancelled.
    std::stop_source stop;
    got.reset();
    auto stopped = [&]() -> lev::Task<> { got = co_await s.recv_from(buf).stop_on(stop.get_token()); };
    f.loop.spawn(stopped());
    f.loop.run_once();
    REQUIRE(f.fake->find(lev::detail::OpKind::recvmsg));
    stop.request_stop();
    f.loop.run_once();
    REQUIRE(got);
    CHECK(got->error().is_cancelled());
    CHECK(f.loop.live_op_count() == 0);
  }

  // Regression: complete_with_data on a plain recvmsg copied into op.buf /
  // op.len, which a recvmsg never sets (its buffers are MessageArgs'
  // iovecs): a silent 0-byte completion, or a SEGV under ASan.
  TEST_CASE("the fake completes recv_from and recvmsg with data: the bytes, the sender, the cut") {
    lev::test::FakeLoop f;
    DatagramSocket s{f.loop,
                     lev::Fd{::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)}};
    REQUIRE(s.is_open());
    const lev::SocketAddress peer = *lev::SocketAddress::ip("127.0.0.1", 4242);
    std::array<char, 16> buf{};
    std::optional<lev::Result<lev::Datagram>> got;
    auto recv = [&]() -> lev::Task<> { got = co_await s.recv_from(buf); };
    f.loop.spawn(recv());
    f.loop.run_once();
    lev::detail::OpBase* op = f.fake->find(lev::detail::OpKind::recvmsg);
    REQUIRE(op);
    f.fake->complete_with_data(*op, "hello", &peer);
    f.loop.run_once();
    REQUIRE(got);
    REQUIRE(*got);
    CHECK((*got)->size == 5);
    CHECK_FALSE((*got)->truncated);
    CHECK((*got)->peer.to_string() == peer.to_string());
    CHECK(std::string_view(buf.data(), 5) == "hello");
    // Scattered over three iovecs, cut at their end, no sender given.
    std::array<char, 3> x{}, y{}, z{};
    const std::array<iovec, 3> iov{iovec{x.data(), 3}, iovec{y.data(), 3}, iovec{z.data(), 2}};
    got.reset();
    auto scatter = [&]() -> lev::Task<> { got = co_await s.recvmsg(iov); };
    f.loop.spawn(scatter());
    f.loop.run_once();
    op = f.fake->find(lev::detail::OpKind::recvmsg);
    REQUIRE(op);
    f.fake->complete_with_data(*op, "abcdefghij");
    f.loop.run_once();
    REQUIRE(got);
    REQUIRE(*got);
    CHECK((*got)->size == 8);
    CHECK((*got)->truncated);
    CHECK((*got)->peer.family() == AF_UNSPEC);
    CHECK(std::string(x.data(), 3) + std::string(y.data(), 3) + std::string(z.data(), 2) ==
          "abcdefgh");
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE("on the fake backend receive is one multishot recvmsg fed datagram by datagram") {
    auto fake = std::make_shared<lev::FakeBackend>(
        lev::FakeBackend::Options{.multishot_recv = true});
    lev::Loop loop{lev::Model::proactor, {.backend = fake, .datagram_buffer_count = 2,
                                          .datagram_buffer_size = 8}};
    DatagramSocket s{loop, lev::Fd{::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)}};
    const lev::SocketAddress peer = *lev::SocketAddress::ip("127.0.0.1", 4243);
    std::vector<lev::Result<lev::ReceivedDatagram>> got;
    auto r = [&]() -> lev::Task<> {
      for (int i = 0; i < 3; ++i) got.push_back(co_await s.receive());
    };
    loop.spawn(r());
    loop.run_once();
    lev::detail::OpBase* op = fake->find(lev::detail::OpKind::recvmsg);
    REQUIRE(op);
    CHECK(op->select == lev::detail::kSelectMultishot);
    CHECK(fake->deliver_more(*op, "one", &peer));
    CHECK(fake->deliver_more(*op, "a longer datagram", &peer));  // cut to 8 bytes
    loop.run_once();
    loop.run_once();
    REQUIRE(got.size() == 2);
    REQUIRE(got[0]);
    CHECK(got[0]->data.view() == "one");
    CHECK(got[0]->peer.port() == 4243);
    CHECK(!got[0]->truncated);
    REQUIRE(got[1]);
    CHECK(got[1]->data.view() == "a longer");
    CHECK(got[1]->truncated);
    // Both pool buffers are held by the program: the next datagram finds
    // the pool dry and the multishot ends (ENOBUFS), to be re-armed when a
    // buffer comes back. That datagram is the kernel's to keep or drop.
    CHECK(!fake->deliver_more(*op, "dropped", &peer));
    loop.run_once();
    CHECK(loop.datagram_buffer_stats().exhausted == 1);
    CHECK(fake->find(lev::detail::OpKind::recvmsg) == nullptr);
    got.clear();  // buffers back: the multishot is armed again
    loop.run_once();
    op = fake->find(lev::detail::OpKind::recvmsg);
    REQUIRE(op);
    CHECK(fake->deliver_more(*op, "", &peer));  // an empty datagram is not an end
    loop.run_once();
    REQUIRE(got.size() == 1);
    REQUIRE(got[0]);
    CHECK(got[0]->data.empty());
    CHECK(loop.datagram_buffer_stats().arms >= 2);  // armed again after the dry pool (and any pause)
  }
}
