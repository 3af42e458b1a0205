#include "lev/net/tls.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "fake_wire.hpp"
#include "lev/deadline.hpp"
#include "lev/fake.hpp"
#include "lev/loop.hpp"
#include "lev/net/listen.hpp"
#include "lev/net/stream.hpp"
#include "lev/process.hpp"
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

// Which way a pair's socket buffers are shrunk to 16 KiB (the sender's send
// buffer, the receiver's receive buffer), so that a receiver that does not
// read stops the sender within a few records.
enum class Squeeze { none, server_sends, client_sends };

// A client ("localhost") and a server over loopback TCP, both handshakes
// done (REQUIREd).
struct Established {
  Connection client;
  Connection server;
};
Established established(Loop& loop, const Context& sctx, const Context& cctx,
                        Squeeze squeeze = Squeeze::none) {
  auto [cfd, sfd] = tcp_pair();
  if (squeeze != Squeeze::none) {
    const int small = 16 * 1024;
    const bool server_sends = squeeze == Squeeze::server_sends;
    ::setsockopt((server_sends ? sfd : cfd).get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    ::setsockopt((server_sends ? cfd : sfd).get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  }
  Connection server = Connection::server(loop, std::move(sfd), sctx);
  Connection client = Connection::client(loop, std::move(cfd), cctx, "localhost");
  auto [hc, hs] = handshake_both(loop, client, server);
  REQUIRE(hc);
  REQUIRE(hs);
  return {std::move(client), std::move(server)};
}

lev::FakeBackend::Options quiet_fake() {
  lev::FakeBackend::Options o;
  o.detect_blocking = false;
  return o;
}

// LEV_TLS_PROBE_CHILD=on|off: this binary, started afresh by the kTLS
// tests, makes three connections with kTLS asked for (or not), says what
// the probe said (on) or "done" (off) on stderr, and exits.
const bool g_probe_child = [] {
  const char* mode = std::getenv("LEV_TLS_PROBE_CHILD");
  if (!mode) return false;
  const bool on = std::string_view(mode) == "on";
  lev::tls::ServerConfig sc{};
  sc.ktls = on;
  lev::tls::ClientConfig cc{};
  cc.ktls = on;
  const Context sctx = server_ctx(std::move(sc));
  const Context cctx = client_ctx(std::move(cc));
  Loop loop{lev::Model::reactor};
  for (int i = 0; i < 3; ++i) {
    // (No doctest assertion here: this runs before any test does.)
    auto [cfd, sfd] = lev::test::socket_pair();
    Connection server = Connection::server(loop, std::move(sfd), sctx);
    Connection client = Connection::client(loop, std::move(cfd), cctx, "localhost");
    auto both = [&]() -> Task<bool> {
      auto [c, s] = co_await lev::when_all(client.handshake({.timeout = 5s}).task(),
                                           server.handshake({.timeout = 5s}).task());
      co_return c&& s;
    };
    if (!loop.block_on(both())) std::fprintf(stderr, "handshake failed\n");
  }
  if (on)
    std::fprintf(stderr, "probe said: [%s]\n", lev::tls::ktls_unavailable().c_str());
  else
    std::fprintf(stderr, "done\n");
  std::exit(0);
}();

// Runs this binary afresh with LEV_TLS_PROBE_CHILD=mode; its stderr.
std::string run_probe_child(const char* mode) {
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(p[1], 2);
    ::setenv("LEV_TLS_PROBE_CHILD", mode, 1);
    ::execl("/proc/self/exe", "tls_test", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(p[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof(buf))) > 0;)
    out.append(buf, static_cast<std::size_t>(n));
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  return out;
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
    lev::test::FakeWire wire{*fake, a.get(), b.get(), {}, {}};
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
    lev::test::FakeWire wire{*fake, a.get(), b.get(), {}, {}};
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
      auto [client, server] = established(loop, sctx, cctx);
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
    for (const auto max : {lev::tls::Version::tls1_3, lev::tls::Version::tls1_2}) {
      const Context cctx = client_ctx({.max_version = max});
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
        CHECK(client.version() == (max == lev::tls::Version::tls1_3 ? "TLSv1.3" : "TLSv1.2"));
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

  TEST_CASE("a peer that closes without close_notify is a truncation, distinct from a clean end") {
    const Context sctx = server_ctx();
    const Context cctx = client_ctx();
    for_each_engine([&](Loop& loop) {
      for (const bool clean : {true, false}) {
        CAPTURE(clean);
        auto [client, server] = established(loop, sctx, cctx);
        auto body = [&]() -> Task<> {
          (co_await server.send_all(std::string_view("last words"))).value();
          if (clean) (co_await server.shutdown()).value();
          ::shutdown(server.fd(), SHUT_WR);  // the TCP stream ends either way
          char buf[64];
          auto n = co_await client.recv(buf, {.timeout = 5s});
          REQUIRE(n);
          CHECK(std::string_view(buf, *n) == "last words");
          for (int again = 0; again < 2; ++again) {  // and it stays so
            auto end = co_await client.recv(buf, {.timeout = 5s});
            if (clean) {
              REQUIRE_MESSAGE(end, end.error().message());
              CHECK(*end == 0);
            } else {
              REQUIRE_FALSE(end);
              CHECK(end.error().code == lev::tls::errc::truncated);
              CHECK(end.error().message().find("without close_notify") != std::string::npos);
            }
          }
        };
        loop.block_on(body());
      }
    });
  }

  TEST_CASE("garbage from the peer is an error, never a crash or a hang") {
    const Context sctx = server_ctx();
    const Context cctx = client_ctx();
    for_each_engine([&](Loop& loop) {
      SUBCASE("an HTTP request instead of a ClientHello") {
        auto [cfd, sfd] = tcp_pair();
        Connection server = Connection::server(loop, std::move(sfd), sctx);
        REQUIRE(::send(cfd.get(), "GET / HTTP/1.1\r\n\r\n", 18, 0) == 18);
        auto hs = loop.block_on(server.handshake({.timeout = 5s}).task());
        REQUIRE_FALSE(hs);
        CHECK(hs.error().code == lev::tls::errc::handshake_failed);
        CHECK_MESSAGE(hs.error().message().find("http request") != std::string::npos,
                      hs.error().message());
        CHECK(server.unusable());
        char buf[16];
        auto after = loop.block_on(server.recv(buf).task());
        REQUIRE_FALSE(after);
        CHECK(after.error().code == lev::tls::errc::unusable);
      }
      SUBCASE("random bytes, then the peer closes") {
        std::uint32_t x = 12345;
        for (int round = 0; round < 20; ++round) {
          CAPTURE(round);
          auto [cfd, sfd] = tcp_pair();
          Connection server = Connection::server(loop, std::move(sfd), sctx);
          std::string junk(1 + round * 37, '\0');
          for (char& ch : junk) ch = static_cast<char>((x = x * 1103515245 + 12345) >> 16);
          if (round % 2) junk[0] = 0x16;  // a handshake record type, then nonsense
          REQUIRE(::send(cfd.get(), junk.data(), junk.size(), 0) ==
                  static_cast<ssize_t>(junk.size()));
          ::shutdown(cfd.get(), SHUT_WR);
          auto hs = loop.block_on(server.handshake({.timeout = 5s}).task());
          REQUIRE_FALSE(hs);
          CHECK(hs.error().code == lev::tls::errc::handshake_failed);
        }
      }
      SUBCASE("a bad record after the handshake") {
        auto [client, server] = established(loop, sctx, cctx);
        // An application-data record whose contents fail authentication.
        const char bad[] = "\x17\x03\x03\x00\x20xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        REQUIRE(::send(server.fd(), bad, sizeof(bad) - 1, 0) ==
                static_cast<ssize_t>(sizeof(bad) - 1));
        char buf[64];
        auto n = loop.block_on(client.recv(buf, {.timeout = 5s}).task());
        REQUIRE_FALSE(n);
        CHECK(n.error().code == lev::tls::errc::protocol_error);
        CHECK_MESSAGE(n.error().message().find("decryption failed") != std::string::npos,
                      n.error().message());
        CHECK(client.unusable());
      }
    });
  }

  TEST_CASE("a handshake dribbled one byte at a time ends at its deadline") {
    const Context sctx = server_ctx();
    for_each_engine([&](Loop& loop) {
      auto [cfd, sfd] = tcp_pair();
      Connection server = Connection::server(loop, std::move(sfd), sctx);
      // A record header announcing a 512-byte ClientHello, then its bytes, slowly.
      std::string hello("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
      hello.resize(517, 'x');
      bool stop = false;
      auto dribble = [&]() -> Task<> {
        for (std::size_t i = 0; i < hello.size() && !stop; ++i) {
          if (!co_await loop.send(cfd, std::string_view(hello).substr(i, 1))) break;
          (void)co_await loop.after(30ms);
        }
      };
      auto h = loop.spawn(dribble());
      const auto t0 = std::chrono::steady_clock::now();
      auto hs = loop.block_on(server.handshake({.timeout = 200ms}).task());
      const auto took = std::chrono::steady_clock::now() - t0;
      stop = true;
      auto join = [&]() -> Task<> { co_await std::move(h); };
      loop.block_on(join());
      REQUIRE_FALSE(hs);
      CHECK(hs.error().is_timeout());
      CHECK(took >= 190ms);
      CHECK(took < 2s);
      CHECK(server.unusable());
    });
  }

  TEST_CASE(
      "a peer that never reads: send_all ends at its deadline and the connection is unusable") {
    const Context sctx = server_ctx();
    const Context cctx = client_ctx();
    for_each_engine([&](Loop& loop) {
      auto [client, server] = established(loop, sctx, cctx, Squeeze::server_sends);
      const std::string big = pattern(8 * 1024 * 1024);
      auto sent = loop.block_on(server.send_all(big, {.timeout = 150ms}).task());
      REQUIRE_FALSE(sent);
      CHECK(sent.error().is_timeout());
      CHECK(sent.error().transferred < big.size());
      CHECK(server.unusable());
      CHECK(server.buffered() <= 128 * 1024);  // what was encrypted and not sent stays bounded
      auto again = loop.block_on(server.send(std::string_view("more")).task());
      REQUIRE_FALSE(again);
      CHECK(again.error().code == lev::tls::errc::unusable);
    });
  }

  TEST_CASE("TLS cancellation: handshake, recv mid-record, send, shutdown") {
    const Context sctx = server_ctx();
    const Context cctx = client_ctx();
    for_each_engine([&](Loop& loop) {
      SUBCASE("a handshake cancelled by its task's scope leaves the connection unusable") {
        auto [cfd, sfd] = tcp_pair();
        Connection server = Connection::server(loop, std::move(sfd), sctx);
        auto h = loop.spawn(server.handshake().task());  // no client ever speaks
        auto abort = [&]() -> Task<lev::Result<void>> {
          (void)co_await loop.after(10ms);
          h.abort();
          co_return co_await std::move(h);
        };
        auto r = loop.block_on(abort());
        REQUIRE_FALSE(r);
        CHECK(r.error().is_cancelled());
        CHECK(server.unusable());
      }
      SUBCASE("a recv cancelled in the middle of a record loses nothing") {
        // client <-> (c1 | r1) relay (r2 | s2) <-> server: the test carries
        // the bytes itself, so that it can stop half way through a record.
        auto [c1, r1] = lev::test::socket_pair();
        auto [r2, s2] = lev::test::socket_pair();
        Connection client = Connection::client(loop, std::move(c1), cctx, "localhost");
        Connection server = Connection::server(loop, std::move(s2), sctx);
        auto relay = [&](int from, int to) -> Task<> {
          char buf[8192];
          for (;;) {
            auto n = co_await loop.recv(from, buf);
            if (!n || *n == 0) co_return;
            if (!co_await loop.send_all(to, std::string_view(buf, *n))) co_return;
          }
        };
        auto up = loop.spawn(relay(r1.get(), r2.get()));
        auto down = loop.spawn(relay(r2.get(), r1.get()));
        auto [hc, hs] = handshake_both(loop, client, server);
        REQUIRE(hc);
        REQUIRE(hs);
        up.abort();
        down.abort();
        auto body = [&]() -> Task<> {
          co_await std::move(up);
          co_await std::move(down);
          (co_await client.send_all(std::string_view("0123456789"))).value();
          char raw[256];
          auto rec = co_await loop.recv(r1, raw, {.timeout = 5s});  // one record, whole
          REQUIRE(rec);
          REQUIRE(*rec > 10);
          const std::string_view record(raw, *rec);
          (co_await loop.send_all(r2, record.substr(0, *rec / 2))).value();
          char buf[64];
          auto cut = co_await server.recv(buf, {.timeout = 30ms});
          REQUIRE_FALSE(cut);
          CHECK(cut.error().is_timeout());
          CHECK_FALSE(server.unusable());
          (co_await loop.send_all(r2, record.substr(*rec / 2))).value();
          auto n = co_await server.recv(buf, {.timeout = 5s});
          REQUIRE_MESSAGE(n, n.error().message());
          CHECK(std::string_view(buf, *n) == "0123456789");
        };
        loop.block_on(body());
      }
      SUBCASE("a send cut mid-record by its task's scope leaves the connection unusable") {
        auto [client, server] = established(loop, sctx, cctx, Squeeze::server_sends);
        const std::string big = pattern(4 * 1024 * 1024);
        auto body = [&]() -> Task<> {
          auto r = co_await lev::with_timeout(server.send_all(big).task(), 100ms);
          REQUIRE_FALSE(r);
          CHECK(server.unusable());
          auto sd = co_await server.shutdown({.timeout = 50ms});
          REQUIRE_FALSE(sd);
          CHECK(sd.error().code == lev::tls::errc::unusable);
        };
        loop.block_on(body());
      }
      SUBCASE("a shutdown whose close_notify cannot go ends at its deadline, unusable") {
        auto [client, server] = established(loop, sctx, cctx);
        // The socket's send buffer filled behind the connection's back: the
        // close_notify waits for room that never comes.
        // (On io_uring the client's multishot recv keeps draining into the
        // loop's pool until the pool runs dry: fill until nothing moves.)
        const std::string junk(64 * 1024, 'j');
        auto pause = [&]() -> Task<> { (void)co_await loop.after(5ms); };
        for (int round = 0; round < 200; ++round) {
          std::size_t moved = 0;
          for (ssize_t n; (n = ::send(server.fd(), junk.data(), junk.size(), MSG_DONTWAIT)) > 0;)
            moved += static_cast<std::size_t>(n);
          if (moved == 0 && round > 0) break;
          loop.block_on(pause());
        }
        auto sd = loop.block_on(server.shutdown({.timeout = 50ms}).task());
        REQUIRE_FALSE(sd);
        CHECK(sd.error().is_timeout());
        CHECK(server.unusable());
      }
    });
  }

  TEST_CASE(
      "one receiver and one sender at a time; nothing before the handshake; nothing after "
      "shutdown") {
    const Context sctx = server_ctx();
    const Context cctx = client_ctx();
    Loop loop{lev::Model::proactor, lev::test::proactor_options()};
    auto [cfd, sfd] = tcp_pair();
    Connection server = Connection::server(loop, std::move(sfd), sctx);
    Connection client = Connection::client(loop, std::move(cfd), cctx, "localhost");
    char buf[16];
    auto early = loop.block_on(server.recv(buf).task());
    REQUIRE_FALSE(early);
    CHECK(early.error().code == lev::tls::errc::not_established);
    auto [hc, hs] = handshake_both(loop, client, server);
    REQUIRE(hc);
    REQUIRE(hs);
    auto body = [&]() -> Task<> {
      char a[16], b[16];
      auto won =
          co_await lev::when_any(server.recv(a, {.timeout = 50ms}).task(), server.recv(b).task());
      REQUIRE(won.index == 1);  // the second recv ended at once
      auto r = std::get<1>(won.value);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == lev::tls::errc::busy);
      (co_await client.shutdown()).value();
      auto after = co_await client.send(std::string_view("x"));
      REQUIRE_FALSE(after);
      CHECK(after.error().code == lev::tls::errc::shut_down);
      auto end = co_await server.recv(a, {.timeout = 5s});
      REQUIRE(end);
      CHECK(*end == 0);
    };
    loop.block_on(body());
  }

  TEST_CASE(
      "renegotiation is refused: the client's attempt fails, the server is not renegotiated") {
    const Context sctx = server_ctx();
    Loop loop{lev::Model::proactor, lev::test::proactor_options()};
    auto [listener, addr] = lev::test::tcp_listener();
    std::string client_error;
    bool echoed = false;
    // A plain OpenSSL client (blocking, TLS 1.2) on a thread of its own.
    std::thread raw([&, port = addr.port()] {
      SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
      SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
      SSL_CTX_load_verify_file(ctx, pki().ca.c_str());
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      SSL* ssl = SSL_new(ctx);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
        SSL_set_fd(ssl, fd);
        if (SSL_connect(ssl) == 1 && SSL_write(ssl, "ping", 4) == 4) {
          char buf[8];
          echoed = SSL_read(ssl, buf, sizeof(buf)) == 4;
          if (SSL_renegotiate(ssl) == 1 && SSL_do_handshake(ssl) != 1) {
            char e[256];
            ERR_error_string_n(ERR_get_error(), e, sizeof(e));
            client_error = e;
          }
        }
      }
      SSL_free(ssl);
      ::close(fd);
      SSL_CTX_free(ctx);
    });
    auto body = [&]() -> Task<lev::Result<std::size_t>> {
      auto acc = co_await loop.accept(listener);
      REQUIRE(acc);
      Connection server = Connection::server(loop, std::move(acc->fd), sctx);
      (co_await server.handshake({.timeout = 5s})).value();
      CHECK(server.version() == "TLSv1.2");
      char buf[16];
      auto n = co_await server.recv(buf, {.timeout = 5s});
      REQUIRE(n);
      (co_await server.send_all(std::string_view(buf, *n))).value();
      auto next = co_await server.recv(buf, {.timeout = 5s});  // sees the attempt, refuses it
      co_return next;
    };
    auto next = loop.block_on(body());
    raw.join();
    CHECK(echoed);
    CHECK_MESSAGE(client_error.find("no renegotiation") != std::string::npos, client_error);
    // The client gave up with a fatal alert: the server's next recv says so.
    REQUIRE_FALSE(next);
    CHECK(next.error().code == lev::tls::errc::protocol_error);
  }

  TEST_CASE("a lev client talks to openssl s_server (TLS 1.2 and 1.3, every engine)") {
    const Context cctx = client_ctx();
    for_each_engine([&](Loop& loop) {
      for (const char* version : {"-tls1_2", "-tls1_3"}) {
        CAPTURE(version);
        auto child = lev::Child::spawn(
            loop, {.argv = {"openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", pki().cert,
                            "-key", pki().key, "-naccept", "1", "-rev", version},
                   .in = lev::Stdio::null,
                   .out = lev::Stdio::pipe,
                   .err = lev::Stdio::null});
        REQUIRE(child);
        auto body = [&]() -> Task<> {
          lev::net::Stream out{loop, std::move(child->stdout_fd())};
          std::uint16_t port = 0;
          for (int i = 0; i < 20 && port == 0; ++i) {  // "ACCEPT 127.0.0.1:PORT"
            auto line = co_await lev::with_timeout(out.read_message(), 5s);
            REQUIRE(line);
            REQUIRE(*line);
            const std::string& l = **line;
            if (l.rfind("ACCEPT", 0) == 0)
              port = static_cast<std::uint16_t>(std::stoi(l.substr(l.rfind(':') + 1)));
          }
          REQUIRE(port != 0);
          // (g++ 12: no braced temporary inside a co_await expression)
          lev::tls::ConnectOptions opts{.timeout = 5s, .server_name = "localhost"};
          auto connecting = lev::tls::connect(loop, "127.0.0.1", port, cctx, std::move(opts));
          auto c = co_await connecting;
          REQUIRE_MESSAGE(c, c.error().message());
          CHECK(c->version() == (std::string_view(version) == "-tls1_2" ? "TLSv1.2" : "TLSv1.3"));
          (co_await c->send_all(std::string_view("hello\n"))).value();
          std::string got;
          char buf[64];
          while (got.find('\n') == std::string::npos) {
            auto n = co_await c->recv(buf, {.timeout = 5s});
            REQUIRE_MESSAGE(n, n.error().message());
            REQUIRE(*n > 0);
            got.append(buf, *n);
          }
          CHECK(got == "olleh\n");
          (co_await c->shutdown({.timeout = 5s})).value();
        };
        loop.block_on(body());
        auto done = [&]() -> Task<lev::Result<lev::ExitStatus>> {
          co_return co_await child->wait_for(5s);
        };
        auto st = loop.block_on(done());
        REQUIRE(st);
        CHECK(st->exited);
      }
    });
  }

  TEST_CASE("openssl s_client talks to a lev server (every engine)") {
    const Context sctx = server_ctx({.alpn = {"lev/1"}});
    for_each_engine([&](Loop& loop) {
      auto [listener, addr] = lev::test::tcp_listener();
      auto child = lev::Child::spawn(
          loop,
          {.argv = {"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(addr.port()),
                    "-CAfile", pki().ca, "-servername", "localhost", "-verify_return_error",
                    "-alpn", "lev/1", "-quiet"},
           .in = lev::Stdio::pipe,
           .out = lev::Stdio::pipe,
           .err = lev::Stdio::null});
      REQUIRE(child);
      auto body = [&]() -> Task<> {
        auto acc = co_await loop.accept(listener, {.timeout = 5s});
        REQUIRE(acc);
        Connection server = Connection::server(loop, std::move(acc->fd), sctx);
        REQUIRE(co_await server.handshake({.timeout = 5s}));
        CHECK(server.alpn() == "lev/1");
        CHECK(server.server_name() == "localhost");
        (co_await loop.write_all(child->stdin_fd(), std::string_view("ping from s_client\n")))
            .value();
        std::string got;
        char buf[256];
        while (got.find('\n') == std::string::npos) {
          auto n = co_await server.recv(buf, {.timeout = 5s});
          REQUIRE_MESSAGE(n, n.error().message());
          REQUIRE(*n > 0);
          got.append(buf, *n);
        }
        CHECK(got == "ping from s_client\n");
        (co_await server.send_all(std::string_view("pong from lev\n"))).value();
        (co_await server.shutdown({.timeout = 5s})).value();
        lev::net::Stream out{loop, std::move(child->stdout_fd())};
        auto line = co_await lev::with_timeout(out.read_message(), 5s);
        REQUIRE(line);
        REQUIRE(*line);
        CHECK(**line == "pong from lev");
      };
      loop.block_on(body());
      auto done = [&]() -> Task<lev::Result<lev::ExitStatus>> {
        co_return co_await child->wait_for(5s);
      };
      auto st = loop.block_on(done());
      REQUIRE(st);
      CHECK(st->exited);
    });
  }

  TEST_CASE(
      "a Stream over TLS: an Acceptor hands out TLS connections, codecs and callbacks work "
      "unchanged") {
    const Context sctx = server_ctx();
    const Context cctx = client_ctx();
    for_each_engine([&](Loop& loop) {
      auto listener = lev::net::Listener::tcp("127.0.0.1", 0).value();
      std::vector<std::string> seen;
      bool closed_cleanly = false;
      int handshakes_failed = 0;
      // The server: callback style, one reply per line.
      auto serve = [&](Connection c, lev::SocketAddress) -> Task<> {
        auto stream = std::make_shared<lev::net::Stream>(loop, std::move(c));
        stream->start({.on_message =
                           [&](lev::net::Stream& st, std::string_view line) {
                             seen.emplace_back(line);
                             (void)st.enqueue("echo: " + std::string(line));
                           },
                       .on_close = [&] { closed_cleanly = true; }});
        while (!closed_cleanly) (void)co_await loop.after(2ms);  // keep the stream for the test
        (void)co_await stream->close();
      };
      lev::net::Acceptor acc{
          loop, listener,
          lev::tls::accept_handler(
              sctx, serve,
              {.handshake_timeout = 5s,
               .on_handshake_error = [&](const lev::Error&, const lev::SocketAddress&) {
                 ++handshakes_failed;
               }})};
      loop.spawn(acc.run());
      auto client = [&]() -> Task<> {
        lev::tls::ConnectOptions opts{.timeout = 5s, .server_name = "localhost"};
        auto connecting =
            lev::tls::connect(loop, "127.0.0.1", listener.port(), cctx, std::move(opts));
        auto c = co_await connecting;
        REQUIRE_MESSAGE(c, c.error().message());
        lev::net::Stream st{loop, std::move(*c)};
        for (int i = 0; i < 50; ++i)
          (co_await st.write_message("line " + std::to_string(i))).value();
        for (int i = 0; i < 50; ++i) {
          auto m = co_await st.read_message();
          REQUIRE_MESSAGE(m, m.error().message());
          REQUIRE(*m);
          CHECK(**m == "echo: line " + std::to_string(i));
        }
        // A raw socket that speaks no TLS: the acceptor drops it.
        auto raw = lev::test::tcp_socket();
        (co_await loop.connect(raw, listener.address())).value();
        (co_await loop.send_all(raw, std::string_view("hello?\r\n\r\n"))).value();
        char buf[64];
        (void)co_await loop.recv(raw, buf, {.timeout = 5s});
        (co_await st.close()).value();
        for (int i = 0; i < 500 && !closed_cleanly; ++i) (void)co_await loop.after(2ms);
        acc.stop();
      };
      loop.block_on(client());
      CHECK(seen.size() == 50);
      CHECK(closed_cleanly);
      CHECK(handshakes_failed == 1);
    });
  }

  TEST_CASE(
      "a Stream over TLS keeps its watermarks: the writer waits while the peer does not read") {
    const Context sctx = server_ctx();
    const Context cctx = client_ctx();
    for_each_engine([&](Loop& loop) {
      auto [client, server] = established(loop, sctx, cctx, Squeeze::client_sends);
      lev::net::Stream writer{loop,
                              std::move(client),
                              {.codec = lev::net::Codec::length_prefixed(),
                               .high_watermark = 64 * 1024,
                               .low_watermark = 16 * 1024}};
      lev::net::Stream reader{
          loop, std::move(server), {.codec = lev::net::Codec::length_prefixed()}};
      const std::string msg = pattern(8 * 1024);
      std::size_t written = 0;
      std::size_t peak = 0;
      bool writer_done = false;
      auto write = [&]() -> Task<> {
        for (int i = 0; i < 400; ++i) {
          (co_await writer.write_message(msg)).value();
          ++written;
          peak = std::max(peak, writer.queued());
        }
        writer_done = true;
      };
      auto read = [&]() -> Task<std::size_t> {
        (void)co_await loop.after(50ms);  // the writer runs into its high mark first
        const std::size_t before = written;
        CHECK(before < 400);
        CHECK_FALSE(writer_done);
        std::size_t got = 0;
        while (got < 400) {
          auto m = co_await reader.read_message();
          REQUIRE_MESSAGE(m, m.error().message());
          REQUIRE(*m);
          CHECK(**m == msg);
          ++got;
        }
        co_return got;
      };
      auto both = [&]() -> Task<std::size_t> {
        auto [w, r] = co_await lev::when_all(write(), read());
        (void)w;
        co_return r;
      };
      CHECK(loop.block_on(both()) == 400);
      CHECK(writer_done);
      CHECK(peak <= 64 * 1024 + 8 * 1024 + 4);
      auto end = [&]() -> Task<> {
        (co_await writer.close()).value();
        auto eof = co_await reader.read_message();
        REQUIRE(eof);
        CHECK_FALSE(*eof);  // close_notify: a clean end
      };
      loop.block_on(end());
    });
  }

  TEST_CASE("a Stream over TLS whose peer closes without close_notify reports a truncation") {
    const Context sctx = server_ctx();
    const Context cctx = client_ctx();
    Loop loop{lev::Model::reactor};
    auto [client, server] = established(loop, sctx, cctx);
    lev::net::Stream reader{loop, std::move(client)};
    std::optional<lev::Error> failed;
    bool closed = false;
    reader.start(
        {.on_close = [&] { closed = true; }, .on_error = [&](const lev::Error& e) { failed = e; }});
    auto body = [&]() -> Task<> {
      (co_await server.send_all(std::string_view("partial line"))).value();
      ::shutdown(server.fd(), SHUT_WR);
      for (int i = 0; i < 500 && !failed && !closed; ++i) (void)co_await loop.after(2ms);
    };
    loop.block_on(body());
    CHECK_FALSE(closed);
    REQUIRE(failed);
    CHECK(failed->code == lev::tls::errc::truncated);
  }

  TEST_CASE("kTLS: the kernel's answer is probed once and named once, connections go on") {
    // In a fresh process (this one probed long ago): three connections.
    const std::string err = run_probe_child("on");
    CHECK_MESSAGE(err.find("handshake failed") == std::string::npos, err);
    CHECK_MESSAGE(err.find("probe said") != std::string::npos, err);
    std::size_t lines = 0;
    for (std::size_t at = 0; (at = err.find("lev: tls: ", at)) != std::string::npos; ++at) ++lines;
    CHECK_MESSAGE(lines == 1, err);
    if (err.find("probe said: []") == std::string::npos) {  // refused: the reason is named
      CHECK_MESSAGE(
          err.find("kTLS unavailable, TLS records stay in user space") != std::string::npos, err);
      CHECK_MESSAGE(err.find("setsockopt(TCP_ULP, \"tls\")") != std::string::npos, err);
    }
  }

  TEST_CASE("kTLS off: no probe, no line") {
    const std::string err = run_probe_child("off");
    CHECK_MESSAGE(err == "done\n", err);
  }
}
