#include "lev/net/tls.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

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
}
