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

#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::for_each_engine;
using lev::net::DatagramSocket;

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
        const std::string base = "/tmp/lev-dgram-" + std::to_string(::getpid());
        ::unlink((base + "-a").c_str());
        ::unlink((base + "-b").c_str());
        auto a = DatagramSocket::bind(loop, *lev::SocketAddress::unix_path(base + "-a"));
        auto b = DatagramSocket::bind(loop, *lev::SocketAddress::unix_path(base + "-b"));
        REQUIRE((a && b));
        CHECK((co_await a->send_to(std::string_view("hello"), b->local_address())).value() == 5);
        std::array<char, 16> buf{};
        auto d = co_await b->recv_from(buf);
        REQUIRE(d);
        CHECK(std::string_view(buf.data(), d->size) == "hello");
        CHECK(d->peer.to_string() == "unix:" + base + "-a");
        ::unlink((base + "-a").c_str());
        ::unlink((base + "-b").c_str());
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
}
