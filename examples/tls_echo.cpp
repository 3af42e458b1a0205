// An echo server and client over TLS (lev::tls on the loop's own ops).
//   tls_echo server --cert FILE --key FILE [--port N] [--model M] [--backend B]
//   tls_echo client --port N [--host NAME] [--ca FILE] [--insecure]
//                   [--message TEXT] [--count N] [--timeout T]
// The server prints "listening on 127.0.0.1:PORT" first and echoes every
// connection until the client's close_notify; SIGINT/SIGTERM stop it.
// The client connects to 127.0.0.1:PORT, verifies the certificate for
// --host (against --ca, or the system's CAs), sends --message --count
// times (a line each), prints each echoed line and the session's version,
// cipher and ALPN on stderr, and exits 0; 1 on any error, which it names.
#include <cstdio>
#include <cstring>
#include <string>

#include "common.hpp"
#include "lev/lev.hpp"
#include "lev/net/tls.hpp"

namespace {

lev::Task<> echo(lev::tls::Connection c, lev::SocketAddress) {
  char buf[4096];  // an idle connection holds its frame: keep it small
  for (;;) {
    auto n = co_await c.recv(buf, {.timeout = std::chrono::seconds(60)});
    if (!n || *n == 0) break;  // an error, or the client's close_notify
    if (!co_await c.send_all(std::string_view(buf, *n), {.timeout = std::chrono::seconds(60)}))
      co_return;
  }
  (void)co_await c.shutdown({.timeout = std::chrono::seconds(5)});
}

int server(int argc, char** argv) {
  example::ServerArgs args;
  std::string cert, key;
  example::Cli cli{"tls_echo server", "Echoes every TLS connection."};
  args.add_to(cli);
  cli.text("--cert", cert, "certificate chain (PEM file)");
  cli.text("--key", key, "its private key (PEM file)");
  cli.parse(argc, argv);
  args.loop.check(cli);
  if (cert.empty() || key.empty()) cli.fail("--cert and --key are required");
  auto ctx = lev::tls::Context::server({.identity = lev::tls::Identity::files(cert, key)});
  if (!ctx) {
    std::fprintf(stderr, "tls_echo: %s\n", ctx.error().message().c_str());
    return 1;
  }
  auto handler = lev::tls::accept_handler(
      *ctx, echo, {.on_handshake_error = [](const lev::Error& e, const lev::SocketAddress& peer) {
        std::fprintf(stderr, "tls_echo: %s: %s\n", peer.to_string().c_str(), e.message().c_str());
      }});
  return example::run_server("tls_echo", args, [&](lev::Loop&, lev::Fd fd) {
    return handler(std::move(fd), lev::SocketAddress{});
  });
}

lev::Task<int> talk(lev::Loop& loop, const lev::tls::Context& ctx, std::string host,
                    std::uint16_t port, std::string message, long count, example::Millis timeout) {
  lev::tls::ConnectOptions opts{.timeout = timeout, .server_name = host};
  auto connecting = lev::tls::connect(loop, "127.0.0.1", port, ctx, std::move(opts));
  auto c = co_await connecting;
  if (!c) {
    std::fprintf(stderr, "tls_echo: %s\n", c.error().message().c_str());
    co_return 1;
  }
  std::fprintf(stderr, "tls_echo: %.*s, %.*s, alpn '%.*s'\n", static_cast<int>(c->version().size()),
               c->version().data(), static_cast<int>(c->cipher().size()), c->cipher().data(),
               static_cast<int>(c->alpn().size()), c->alpn().data());
  const std::string line = message + "\n";
  std::string got;
  char buf[4096];
  for (long i = 0; i < count; ++i) {
    if (auto s = co_await c->send_all(line, {.timeout = timeout}); !s) {
      std::fprintf(stderr, "tls_echo: %s\n", s.error().message().c_str());
      co_return 1;
    }
    while (got.find('\n') == std::string::npos) {
      auto n = co_await c->recv(buf, {.timeout = timeout});
      if (!n || *n == 0) {
        std::fprintf(stderr, "tls_echo: %s\n",
                     n ? "the server closed the connection" : n.error().message().c_str());
        co_return 1;
      }
      got.append(buf, *n);
    }
    const std::size_t nl = got.find('\n');
    std::printf("%s\n", got.substr(0, nl).c_str());
    got.erase(0, nl + 1);
  }
  std::fflush(stdout);
  (void)co_await c->shutdown({.timeout = timeout});
  co_return 0;
}

int client(int argc, char** argv) {
  std::uint16_t port = 0;
  std::string host = "localhost", ca, message = "hello over TLS";
  bool insecure = false;
  long count = 1;
  example::Millis timeout = std::chrono::seconds(5);
  example::LoopArgs loop_args;
  example::Cli cli{"tls_echo client", "Sends lines to a TLS echo server on 127.0.0.1."};
  cli.port("--port", port, "the server's port");
  cli.text("--host", host, "the name its certificate must carry (sent by SNI)");
  cli.text("--ca", ca, "trusted CA certificates (PEM file; default: the system's)");
  cli.flag("--insecure", insecure, "do not verify the certificate (tests you control only)");
  cli.text("--message", message, "the line to send");
  cli.integer("--count", count, 1, 1'000'000, "how many times");
  cli.duration("--timeout", timeout, false, std::chrono::hours(1),
               "for connecting, and per operation");
  loop_args.add_to(cli);
  cli.parse(argc, argv);
  loop_args.check(cli);
  if (port == 0) cli.fail("--port is required");
  auto ctx = lev::tls::Context::client({.ca_file = ca, .verify_peer = !insecure});
  if (!ctx) {
    std::fprintf(stderr, "tls_echo: %s\n", ctx.error().message().c_str());
    return 1;
  }
  lev::Loop loop{loop_args.loop_model(), loop_args.options()};
  return loop.block_on(talk(loop, *ctx, host, port, message, count, timeout));
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string_view mode = argc > 1 ? argv[1] : "";
  if (mode == "server") return server(argc - 1, argv + 1);
  if (mode == "client") return client(argc - 1, argv + 1);
  std::fprintf(stderr,
               "usage: tls_echo server --cert FILE --key FILE [options]\n"
               "       tls_echo client --port N [--host NAME] [--ca FILE] [options]\n"
               "(tls_echo server --help, tls_echo client --help for the options)\n");
  return mode == "--help" || mode == "-h" ? 0 : 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "tls_echo: %s\n", e.what());
  return 1;
}
