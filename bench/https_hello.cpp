// HTTPS "Hello, World!" on lev::tls, for bench/compare.py against nginx:
// every request (a head ending in a blank line; bodies are not expected)
// gets the same 200; "Connection: close" is honoured (the reply, then
// close_notify, then the socket closes), so that wrk -H 'Connection: close'
// measures a handshake per request.
//   https_hello --cert FILE --key FILE [--port N] [--model M] [--backend B]
//               [--ciphersuites LIST] [--tls13-only]
// First line on stdout: "listening on 127.0.0.1:PORT"; SIGINT/SIGTERM stop it.
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "common.hpp"
#include "lev/deadline.hpp"
#include "lev/lev.hpp"
#include "lev/net/tls.hpp"

namespace {

constexpr std::string_view kHello =
    "HTTP/1.1 200 OK\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
    "Hello, World!";
constexpr std::string_view kHelloClose =
    "HTTP/1.1 200 OK\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
    "Connection: close\r\n\r\nHello, World!";

bool asks_close(std::string_view head) {
  for (std::size_t at = head.find(':'); at != std::string_view::npos; at = head.find(':', at + 1)) {
    const std::size_t line = head.rfind('\n', at);
    std::string_view name = head.substr(line + 1, at - line - 1);
    if (name.size() != 10) continue;
    std::string lower(name);
    for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    if (lower != "connection") continue;
    const std::size_t end = head.find('\r', at);
    std::string value(head.substr(at + 1, end - at - 1));
    for (char& c : value) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    if (value.find("close") != std::string::npos) return true;
  }
  return false;
}

lev::Task<> serve(lev::Loop& loop, lev::Fd fd, const lev::tls::Context& ctx) {
  lev::tls::Connection c = lev::tls::Connection::server(loop, std::move(fd), ctx);
  if (!co_await c.handshake({.timeout = std::chrono::seconds(10)})) co_return;
  // One timer per connection for its limits (60 s without progress, as
  // nginx's keepalive and send timeouts), not one per operation.
  lev::IdleDeadline idle{loop, std::chrono::seconds(60)};
  char in[4096];
  std::size_t used = 0;
  std::string out;
  bool close = false;
  while (!close) {
    auto n = co_await idle(c.recv(std::span(in + used, sizeof(in) - used)));
    if (!n || *n == 0) co_return;
    used += *n;
    std::size_t pos = 0;
    for (;;) {
      const std::string_view rest(in + pos, used - pos);
      const std::size_t end = rest.find("\r\n\r\n");
      if (end == std::string_view::npos) break;
      close = asks_close(rest.substr(0, end + 2));
      out += close ? kHelloClose : kHello;
      pos += end + 4;
      if (close) break;
    }
    if (pos == 0 && used == sizeof(in)) co_return;  // a head larger than the buffer
    std::memmove(in, in + pos, used - pos);
    used -= pos;
    if (!out.empty()) {
      if (!co_await idle(c.send_all(out))) co_return;
      out.clear();
    }
  }
  (void)co_await c.shutdown({.timeout = std::chrono::seconds(5)});
}

}  // namespace

int main(int argc, char** argv) try {
  example::ServerArgs args;
  std::string cert, key, suites;
  bool tls13_only = false;
  example::Cli cli{"https_hello", "HTTPS \"Hello, World!\" on lev::tls (a bench server)."};
  args.add_to(cli);
  cli.text("--cert", cert, "certificate chain (PEM file)");
  cli.text("--key", key, "its private key (PEM file)");
  cli.text("--ciphersuites", suites, "TLS 1.3 cipher suites (OpenSSL's list; empty: its default)");
  cli.flag("--tls13-only", tls13_only, "refuse TLS 1.2");
  cli.parse(argc, argv);
  args.loop.check(cli);
  if (cert.empty() || key.empty()) cli.fail("--cert and --key are required");
  lev::tls::ServerConfig config{};
  config.identity = lev::tls::Identity::files(cert, key);
  config.ciphersuites = suites;
  if (tls13_only) config.min_version = lev::tls::Version::tls1_3;
  auto ctx = lev::tls::Context::server(std::move(config));
  if (!ctx) {
    std::fprintf(stderr, "https_hello: %s\n", ctx.error().message().c_str());
    return 1;
  }
  return example::run_server("https_hello", args, [&](lev::Loop& loop, lev::Fd fd) {
    return serve(loop, std::move(fd), *ctx);
  });
} catch (const std::exception& e) {
  std::fprintf(stderr, "https_hello: %s\n", e.what());
  return 1;
}
