#include "lev/net/tls.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "lev/deadline.hpp"
#include "lev/fake.hpp"
#include "lev/loop.hpp"
#include "lev/when.hpp"
#include "support.hpp"
#include "tls_support.hpp"

using namespace std::chrono_literals;
using lev::Fd;
using lev::Loop;
using lev::Task;
using lev::test::for_each_engine;
using lev::test::pki;
using lev::tls::Connection;
using lev::tls::Context;

namespace {

// The whole binary needs the openssl command (it makes the certificates).
const bool g_openssl_checked = [] {
  if (!lev::test::openssl_missing().empty()) {
    std::fprintf(stderr, "tls_test: skipped: %s\n", lev::test::openssl_missing().c_str());
    std::_Exit(77);
  }
  return true;
}();

Context server_ctx(lev::tls::ServerConfig c = {}) {
  if (c.identity.empty()) c.identity = lev::tls::Identity::files(pki().cert, pki().key);
  return Context::server(std::move(c)).value();
}

Context client_ctx(lev::tls::ClientConfig c = {}) {
  if (c.ca_file.empty() && c.ca_pem.empty()) c.ca_file = pki().ca;
  return Context::client(std::move(c)).value();
}

// A connected TCP pair on loopback (client end, server end), nonblocking.
std::pair<Fd, Fd> tcp_pair() {
  auto [listener, addr] = lev::test::tcp_listener();
  Fd c{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  REQUIRE(::connect(c.get(), addr.data(), addr.size()) == 0);
  Fd s{::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)};
  REQUIRE(s);
  ::fcntl(c.get(), F_SETFL, O_NONBLOCK);
  return {std::move(c), std::move(s)};
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

// Echoes until the peer's close_notify, then sends its own; the bytes seen.
Task<lev::Result<std::string>> echo_server(Connection& c) {
  if (auto hs = co_await c.handshake({.timeout = 5s}); !hs) co_return hs.error();
  std::string seen;
  char buf[16384];
  for (;;) {
    auto n = co_await c.recv(buf, {.timeout = 5s});
    if (!n) co_return n.error();
    if (*n == 0) break;
    seen.append(buf, *n);
    if (auto s = co_await c.send_all(std::string_view(buf, *n)); !s) co_return s.error();
  }
  if (auto s = co_await c.shutdown({.timeout = 5s}); !s) co_return s.error();
  co_return seen;
}

// Sends `data` in pieces of up to `piece` bytes, then close_notify.
Task<lev::Result<void>> send_pieces(Connection& c, std::string_view data, std::size_t piece) {
  for (std::size_t i = 0; i < data.size(); i += piece)
    if (auto s = co_await c.send_all(data.substr(i, piece), {.timeout = 5s}); !s)
      co_return s.error();
  co_return co_await c.shutdown({.timeout = 5s});
}

// Receives until close_notify.
Task<lev::Result<std::string>> recv_all(Connection& c) {
  std::string got;
  char buf[7000];
  for (int i = 0; i < 100000; ++i) {
    auto n = co_await c.recv(buf, {.timeout = 5s});
    if (!n) co_return n.error();
    if (*n == 0) co_return got;
    got.append(buf, *n);
  }
  co_return got;
}

// A handshake of both ends on one loop: (client result, server result).
std::pair<lev::Result<void>, lev::Result<void>> handshake_both(Loop& loop, Connection& client,
                                                               Connection& server) {
  auto both = [&]() -> Task<std::pair<lev::Result<void>, lev::Result<void>>> {
    auto [c, s] = co_await lev::when_all(client.handshake({.timeout = 5s}).task(),
                                         server.handshake({.timeout = 5s}).task());
    co_return std::make_pair(std::move(c), std::move(s));
  };
  return loop.block_on(both());
}

// Carries bytes between two fds' operations on a fake backend, as a kernel
// would: a send completes whole at once, and its bytes wait for the other
// end's receives, handed over as `plan` says (at most a pool buffer each).
struct FakeWire {
  lev::FakeBackend& fake;
  int a, b;
  std::string to_b{}, to_a{};  // bytes in flight towards b, towards a
  bool a_closed = false, b_closed = false;
  // How many bytes the next receive gets out of `waiting` (0: none now).
  std::function<std::size_t(std::size_t waiting)> plan = [](std::size_t w) { return w; };

  // Completes what can complete now; true when something was.
  bool pump() {
    bool did = false;
    const std::vector<lev::detail::OpBase*> ops = fake.pending();
    for (lev::detail::OpBase* op : ops) {
      if (op->kind == lev::detail::OpKind::send && (op->fd == a || op->fd == b)) {
        (op->fd == a ? to_b : to_a).append(static_cast<const char*>(op->buf), op->len);
        fake.complete(*op, static_cast<int>(op->len));
        did = true;
      } else if (op->kind == lev::detail::OpKind::recv && (op->fd == a || op->fd == b)) {
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
        q.erase(0, static_cast<std::size_t>(op->res));
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

lev::FakeBackend::Options quiet_fake() {
  lev::FakeBackend::Options o;
  o.detect_blocking = false;
  return o;
}
}  // namespace

TEST_SUITE("net") {
  TEST_CASE(
      "a lev client and a lev server talk TLS 1.3 on every engine, sending and receiving at once") {
    const Context sctx = server_ctx({.alpn = {"h2", "lev/1"}});
    const Context cctx = client_ctx({.alpn = {"lev/1", "http/1.1"}});
    const std::string data = pattern(300 * 1024);
    for_each_engine([&](Loop& loop) {
      auto [cfd, sfd] = tcp_pair();
      Connection server = Connection::server(loop, std::move(sfd), sctx);
      Connection client = Connection::client(loop, std::move(cfd), cctx, "localhost");
      auto client_side = [&]() -> Task<lev::Result<std::string>> {
        if (auto hs = co_await client.handshake({.timeout = 5s}); !hs) co_return hs.error();
        // One task sends while another receives, on the same connection.
        auto [sent, got] =
            co_await lev::when_all(send_pieces(client, data, 10000), recv_all(client));
        if (!sent) co_return sent.error();
        co_return got;
      };
      auto both = [&]() -> Task<std::pair<lev::Result<std::string>, lev::Result<std::string>>> {
        auto [s, c] = co_await lev::when_all(echo_server(server), client_side());
        co_return std::make_pair(std::move(s), std::move(c));
      };
      auto [s, c] = loop.block_on(both());
      REQUIRE_MESSAGE(s, s.error().message());
      REQUIRE_MESSAGE(c, c.error().message());
      CHECK(*s == data);
      CHECK(*c == data);
      CHECK(client.version() == "TLSv1.3");
      CHECK(server.alpn() == "lev/1");
      CHECK(client.alpn() == "lev/1");
      CHECK(server.server_name() == "localhost");
      CHECK_FALSE(client.resumed());
    });
  }

  TEST_CASE("TLS runs on the fake backend with every record handed over one byte at a time") {
    auto fake = std::make_shared<lev::FakeBackend>(quiet_fake());
    Loop loop{lev::Model::proactor, {.backend = fake}};
    auto [a, b] =
        lev::test::socket_pair();  // descriptors for identity only: the fake moves the bytes
    FakeWire wire{*fake, a.get(), b.get(), {}, {}};
    wire.plan = [](std::size_t) { return std::size_t{1}; };
    const Context sctx = server_ctx();
    const Context cctx = client_ctx();
    Connection client = Connection::client(loop, std::move(a), cctx, "localhost");
    Connection server = Connection::server(loop, std::move(b), sctx);
    const std::string data = pattern(16 * 1024);  // one full record
    lev::Result<std::string> got = std::string();
    lev::Result<void> sent{};
    bool server_done = false, client_done = false;
    auto srv = [&]() -> Task<> {
      got = co_await echo_server(server);
      server_done = true;
    };
    auto cli = [&]() -> Task<> {
      if (auto hs = co_await client.handshake(); !hs) {
        sent = hs.error();
      } else {
        sent = co_await send_pieces(client, data, data.size());
        if (sent) {
          auto echoed = co_await recv_all(client);
          if (!echoed)
            sent = echoed.error();
          else
            CHECK(*echoed == data);
        }
      }
      client_done = true;
    };
    loop.spawn(srv());
    loop.spawn(cli());
    REQUIRE(run_wire(loop, wire, [&] { return server_done && client_done; }));
    REQUIRE_MESSAGE(got, got.error().message());
    REQUIRE_MESSAGE(sent, sent.error().message());
    CHECK(*got == data);
    CHECK(loop.live_op_count() == 0);
  }

  TEST_CASE("a 16 KiB record split in two at any point arrives whole (fake backend)") {
    auto fake = std::make_shared<lev::FakeBackend>(quiet_fake());
    Loop loop{lev::Model::proactor, {.backend = fake}};
    auto [a, b] = lev::test::socket_pair();
    FakeWire wire{*fake, a.get(), b.get(), {}, {}};
    const Context sctx = server_ctx();
    const Context cctx = client_ctx();
    Connection client = Connection::client(loop, std::move(a), cctx, "localhost");
    Connection server = Connection::server(loop, std::move(b), sctx);
    bool done = false;
    lev::Result<void> hs_c{}, hs_s{};
    auto hs = [&]() -> Task<> {
      auto [c, s] = co_await lev::when_all(client.handshake().task(), server.handshake().task());
      hs_c = c;
      hs_s = s;
      done = true;
    };
    loop.spawn(hs());
    REQUIRE(run_wire(loop, wire, [&] { return done; }));
    REQUIRE(hs_c);
    REQUIRE(hs_s);
    const std::string data = pattern(16 * 1024);
    std::vector<std::size_t> cuts;
    for (std::size_t k = 1; k <= 64; ++k) cuts.push_back(k);
    for (std::size_t k = 65; k < 16 * 1024; k += 257) cuts.push_back(k);
    for (std::size_t k = 16 * 1024 - 16; k < 16 * 1024 + 22; ++k) cuts.push_back(k);
    for (const std::size_t k : cuts) {
      CAPTURE(k);
      std::size_t handed = 0;  // the first receive gets k bytes, then the rest as it comes
      wire.plan = [&](std::size_t w) {
        const std::size_t n = handed == 0 ? k : w;
        handed += n;
        return n;
      };
      done = false;
      std::string got;
      lev::Result<std::size_t> sent = std::size_t{0};
      auto one = [&]() -> Task<> {
        sent = co_await client.send_all(data);
        char buf[4096];
        while (got.size() < data.size()) {
          auto n = co_await server.recv(buf);
          if (!n || *n == 0) break;
          got.append(buf, *n);
        }
        done = true;
      };
      loop.spawn(one());
      REQUIRE(run_wire(loop, wire, [&] { return done; }));
      REQUIRE(sent);
      REQUIRE(got == data);
    }
  }

  TEST_CASE(
      "an IdleDeadline ends an idle TLS recv with timed_out, and the connection stays usable") {
    const Context sctx = server_ctx();
    const Context cctx = client_ctx();
    for_each_engine([&](Loop& loop) {
      auto [cfd, sfd] = tcp_pair();
      Connection server = Connection::server(loop, std::move(sfd), sctx);
      Connection client = Connection::client(loop, std::move(cfd), cctx, "localhost");
      auto [hc, hs] = handshake_both(loop, client, server);
      REQUIRE(hc);
      REQUIRE(hs);
      auto body = [&]() -> Task<> {
        lev::IdleDeadline idle{loop, 50ms};
        char buf[64];
        auto first = co_await idle(server.recv(buf));
        REQUIRE_FALSE(first);
        CHECK(first.error().is_timeout());
        CHECK_FALSE(server.unusable());
        idle.rearm();
        // A message split over two records, the second late: both arrive.
        (co_await client.send_all(std::string_view("hel"))).value();
        auto later = [&]() -> Task<> {
          (void)co_await loop.after(20ms);
          (co_await client.send_all(std::string_view("lo"))).value();
        };
        loop.spawn(later());
        std::string got;
        while (got.size() < 5) {
          auto n = co_await idle(server.recv(buf));
          REQUIRE_MESSAGE(n, n.error().message());
          got.append(buf, *n);
        }
        CHECK(got == "hello");
      };
      loop.block_on(body());
    });
  }

  TEST_CASE("a failed verification names the host and the reason") {
    const Context cctx = client_ctx();
    Loop loop{lev::Model::proactor, lev::test::proactor_options()};
    SUBCASE("a name the certificate does not carry") {
      auto [cfd, sfd] = tcp_pair();
      Connection server = Connection::server(loop, std::move(sfd), server_ctx());
      Connection client = Connection::client(loop, std::move(cfd), cctx, "wrong.test");
      auto [c, s] = handshake_both(loop, client, server);
      REQUIRE_FALSE(c);
      CHECK(c.error().code == lev::tls::errc::verify_failed);
      const std::string m = c.error().message();
      CHECK_MESSAGE(m.find("wrong.test") != std::string::npos, m);
      CHECK_MESSAGE(m.find("hostname mismatch") != std::string::npos, m);
      REQUIRE_FALSE(s);  // the client's alert ends the server's handshake too
      CHECK(s.error().code == lev::tls::errc::handshake_failed);
      CHECK(client.unusable());
    }
    SUBCASE("a certificate from a CA nobody trusts") {
      auto [cfd, sfd] = tcp_pair();
      const Context rogue =
          server_ctx({.identity = lev::tls::Identity::files(pki().rogue_cert, pki().rogue_key)});
      Connection server = Connection::server(loop, std::move(sfd), rogue);
      Connection client = Connection::client(loop, std::move(cfd), cctx, "localhost");
      auto [c, s] = handshake_both(loop, client, server);
      REQUIRE_FALSE(c);
      CHECK(c.error().code == lev::tls::errc::verify_failed);
      const std::string m = c.error().message();
      CHECK_MESSAGE(
          m.find("localhost: unable to get local issuer certificate") != std::string::npos, m);
      CHECK_FALSE(s);
    }
    SUBCASE("an IP address is checked as one") {
      auto [cfd, sfd] = tcp_pair();
      Connection server = Connection::server(loop, std::move(sfd), server_ctx());
      Connection client = Connection::client(loop, std::move(cfd), cctx, "127.0.0.1");
      auto [c, s] = handshake_both(loop, client, server);
      CHECK_MESSAGE(c, c.error().message());
      CHECK(s);
      CHECK(server.server_name().empty());  // no SNI for an address
    }
    SUBCASE("verification off accepts any certificate") {
      auto [cfd, sfd] = tcp_pair();
      const Context rogue =
          server_ctx({.identity = lev::tls::Identity::files(pki().rogue_cert, pki().rogue_key)});
      const Context lax = Context::client({.verify_peer = false}).value();
      Connection server = Connection::server(loop, std::move(sfd), rogue);
      Connection client = Connection::client(loop, std::move(cfd), lax, "wrong.test");
      auto [c, s] = handshake_both(loop, client, server);
      CHECK(c);
      CHECK(s);
    }
  }

  TEST_CASE("a server chooses its certificate by the client's SNI") {
    const Context sctx = server_ctx(
        {.by_name = {
             {"other.test", lev::tls::Identity::files(pki().other_cert, pki().other_key)},
             {"*.other.test", lev::tls::Identity::files(pki().other_cert, pki().other_key)}}});
    const Context cctx = client_ctx();
    Loop loop{lev::Model::reactor};
    for (const char* host : {"other.test", "API.other.test", "localhost"}) {
      CAPTURE(host);
      auto [cfd, sfd] = tcp_pair();
      Connection server = Connection::server(loop, std::move(sfd), sctx);
      Connection client = Connection::client(loop, std::move(cfd), cctx, host);
      auto [c, s] = handshake_both(loop, client, server);
      CHECK_MESSAGE(c, c.error().message());  // verified for that name: the right certificate came
      CHECK(s);
      CHECK(server.server_name() == std::string(host));
    }
  }

  TEST_CASE("ALPN: the server's first choice the client offers; none in common goes on without") {
    Loop loop{lev::Model::proactor, lev::test::proactor_options()};
    const Context sctx = server_ctx({.alpn = {"h2", "http/1.1"}});
    struct Row {
      std::vector<std::string> offer;
      const char* chosen;
    };
    for (const Row& r : {Row{{"http/1.1", "h2"}, "h2"}, Row{{"http/1.1"}, "http/1.1"},
                         Row{{"spdy/1"}, ""}, Row{{}, ""}}) {
      auto [cfd, sfd] = tcp_pair();
      Connection server = Connection::server(loop, std::move(sfd), sctx);
      Connection client =
          Connection::client(loop, std::move(cfd), client_ctx({.alpn = r.offer}), "localhost");
      auto [c, s] = handshake_both(loop, client, server);
      REQUIRE(c);
      REQUIRE(s);
      CHECK(client.alpn() == r.chosen);
      CHECK(server.alpn() == r.chosen);
    }
  }

  TEST_CASE("a second connection resumes the session with a ticket") {
    const Context sctx = server_ctx();
    for (const auto min : {lev::tls::Version::tls1_3, lev::tls::Version::tls1_2}) {
      const Context cctx = client_ctx({.min_version = min});
      Loop loop{lev::Model::proactor, lev::test::proactor_options()};
      for (int round = 0; round < 2; ++round) {
        CAPTURE(round);
        auto [cfd, sfd] = tcp_pair();
        Connection server = Connection::server(loop, std::move(sfd), sctx);
        Connection client = Connection::client(loop, std::move(cfd), cctx, "localhost");
        auto talk = [&]() -> Task<> {
          auto [c, s] = co_await lev::when_all(send_pieces(client, "ping", 4), echo_server(server));
          REQUIRE(c);
          REQUIRE(s);
          auto rest = co_await recv_all(client);  // the tickets come with the server's data
          REQUIRE(rest);
          CHECK(*rest == "ping");
        };
        auto [c, s] = handshake_both(loop, client, server);
        REQUIRE(c);
        REQUIRE(s);
        CHECK(client.resumed() == (round == 1));
        CHECK(server.resumed() == (round == 1));
        loop.block_on(talk());
        if (round == 0) CHECK(cctx.cached_sessions() > 0);
      }
    }
  }

  TEST_CASE("certificates and CAs load from PEM text; a missing file is named") {
    const std::string cert = lev::test::read_text(pki().cert);
    const std::string key = lev::test::read_text(pki().key);
    const Context sctx = Context::server({.identity = lev::tls::Identity::pem(cert, key)}).value();
    const Context cctx = Context::client({.ca_pem = lev::test::read_text(pki().ca)}).value();
    Loop loop{lev::Model::reactor};
    auto [cfd, sfd] = tcp_pair();
    Connection server = Connection::server(loop, std::move(sfd), sctx);
    Connection client = Connection::client(loop, std::move(cfd), cctx, "localhost");
    auto [c, s] = handshake_both(loop, client, server);
    CHECK_MESSAGE(c, c.error().message());
    CHECK(s);

    auto missing = Context::server(
        {.identity = lev::tls::Identity::files("/nonexistent/cert.pem", pki().key)});
    REQUIRE_FALSE(missing);
    CHECK(missing.error().code == lev::tls::errc::bad_config);
    CHECK(missing.error().message().find("/nonexistent/cert.pem") != std::string::npos);
    auto mismatch =
        Context::server({.identity = lev::tls::Identity::files(pki().cert, pki().other_key)});
    REQUIRE_FALSE(mismatch);
    CHECK_MESSAGE(mismatch.error().message().find("mismatch") != std::string::npos,
                  mismatch.error().message());
    CHECK_FALSE(Context::client({.ca_pem = "not a certificate"}));
  }
}
