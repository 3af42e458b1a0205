#pragma once
// TLS for the example servers: the --tls-cert / --tls-key flags, and a
// wrapper that serves any plain-socket handler over TLS. The handler runs
// unchanged on one end of a socket pair; a pump carries the bytes between
// the other end and the TLS connection (lev::tls over the loop's own ops).
//
//     example::TlsArgs tls;
//     tls.add_to(cli);                       // --tls-cert FILE --tls-key FILE
//     ...
//     return example::run_server("name", args, tls.wrap(serve));
//
// A handler written against tls::Connection itself saves the socket pair's
// copies (examples/tls_echo.cpp, bench/https_hello.cpp).

#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <utility>

#include "common.hpp"
#include "lev/net/tls.hpp"

namespace example {

/// Carries decrypted bytes from `c` to `plain` until the peer's end, then
/// shuts `plain`'s write side (the handler reads EOF).
inline lev::Task<> tls_to_plain(lev::Loop& loop, lev::tls::Connection& c, lev::FdRef plain) {
  char buf[4096];  // an idle connection holds its frame: keep it small
  for (;;) {
    auto n = co_await c.recv(buf);
    if (!n || *n == 0) break;
    if (!co_await loop.send_all(plain, std::string_view(buf, *n))) break;
  }
  (void)co_await loop.shutdown(plain, lev::Shutdown::write);
}

/// Carries the handler's bytes from `plain` into `c` until the handler
/// closes its end, then sends close_notify.
inline lev::Task<> plain_to_tls(lev::Loop& loop, lev::tls::Connection& c, lev::FdRef plain) {
  for (;;) {
    auto got = co_await loop.recv(plain);
    if (!got || got->empty()) break;
    if (!co_await c.send_all(*got)) co_return;
  }
  (void)co_await c.shutdown({.timeout = std::chrono::seconds(5)});
}

/// One TLS session: the handshake (bounded by `handshake_timeout`), then
/// `serve(loop, fd)` on a socket pair the pumps connect to the session.
template <class Serve>
lev::Task<> tls_session(lev::Loop& loop, lev::Fd fd, lev::tls::Context ctx,
                        Millis handshake_timeout, const Serve& serve) {
  lev::tls::Connection c = lev::tls::Connection::server(loop, std::move(fd), ctx);
  if (!co_await c.handshake({.timeout = handshake_timeout})) co_return;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) co_return;
  lev::Fd inner{sv[0]}, outer{sv[1]};
  auto app = loop.spawn(serve(loop, std::move(inner)));
  auto down = loop.spawn(tls_to_plain(loop, c, outer));
  co_await plain_to_tls(loop, c, outer);  // until the handler closes its end
  down.abort();                           // the client may keep its side open
  co_await std::move(down);
  co_await std::move(app);
}

/// --tls-cert / --tls-key: when given, the server speaks TLS.
struct TlsArgs {
  std::string cert;
  std::string key;
  Millis handshake_timeout{std::chrono::seconds(10)};

  void add_to(Cli& cli) {
    cli.text("--tls-cert", cert,
             "serve TLS with this certificate chain (PEM file; with --tls-key)");
    cli.text("--tls-key", key, "the certificate's private key (PEM file)");
  }
  [[nodiscard]] bool enabled() const { return !cert.empty() || !key.empty(); }

  /// `serve` as it is without TLS flags; else a handler that runs it over
  /// TLS. Exits 2 (usage) when only one of the flags is given, 1 when the
  /// certificate or key cannot be used (the reason on stderr).
  template <class Serve>
  auto wrap(Serve& serve) const {
    lev::tls::Context ctx;
    if (enabled()) {
      if (cert.empty() || key.empty()) {
        std::fprintf(stderr, "--tls-cert and --tls-key go together\n");
        std::exit(2);
      }
      auto made = lev::tls::Context::server({.identity = lev::tls::Identity::files(cert, key)});
      if (!made) {
        std::fprintf(stderr, "%s\n", made.error().message().c_str());
        std::exit(1);
      }
      ctx = std::move(*made);
    }
    return [ctx, &serve, limit = handshake_timeout](lev::Loop& loop, lev::Fd fd) -> lev::Task<> {
      if (!ctx.valid()) return serve(loop, std::move(fd));
      return tls_session(loop, std::move(fd), ctx, limit, serve);
    };
  }
};

}  // namespace example
