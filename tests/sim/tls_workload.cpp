// The simulation's TLS workload: a lev::tls client and server over a
// simulated connection (records split however the simulated kernel likes,
// partial sends, resets, cancels, stops, deadlines, teardowns). The client
// sends a pattern in pieces while it reads the echo; the server echoes.
// Checked: every plaintext byte either side receives is the one sent at
// that place (a receive cut by its deadline, half a record in, loses
// nothing: the server retries such receives), no side receives more than
// the other sent, the end of stream comes only after the other side's
// close_notify, and the workload ends.
#include <array>
#include <memory>
#include <string>
#include <utility>

#include "../tls_keys.hpp"
#include "lev/net/tls.hpp"
#include "lev/when.hpp"
#include "sim.hpp"

namespace lev::sim {

namespace {

char byte_at(std::uint64_t i) noexcept { return static_cast<char>('A' + (i * 5 + i / 11) % 26); }

struct Seen {
  World* w;
  const char* who;
  std::uint64_t pos = 0;
  void take(std::string_view got) {
    for (char c : got) {
      if (c != byte_at(pos)) {
        w->fail(std::string(who) + ": plaintext byte " + std::to_string(pos) +
                " is not the one sent");
        return;
      }
      ++pos;
    }
  }
};

struct StopOnParent {
  std::shared_ptr<std::stop_source> to;
  void operator()() const noexcept { to->request_stop(); }
};

// The simulated kernel never corrupts, truncates or forges bytes: an error
// of the TLS layer itself (not a reset, a cancel, a deadline, or the
// connection made unusable by one) is lev's fault.
void no_tls_fault(World& w, const char* where, const Result<std::size_t>& r) {
  if (r || r.error().code.category() != tls::category() || r.error().code == tls::errc::unusable)
    return;
  w.fail(std::string("tls: ") + where + ": " + r.error().message());
}
void no_tls_fault(World& w, const char* where, const Result<void>& r) {
  if (r) return;
  no_tls_fault(w, where, Result<std::size_t>(r.error()));
}

std::optional<Duration> maybe_deadline(World& w, double p) {
  if (!w.rng->chance(p)) return std::nullopt;
  const auto max_ms = std::chrono::duration_cast<std::chrono::milliseconds>(w.max_wait).count();
  return std::chrono::milliseconds(w.rng->between(1, static_cast<std::uint64_t>(max_ms)));
}

}  // namespace

Task<> tls_echo(World& w) {
  FrameToken frame;
  auto [c, s] = w.connect_pair();
  auto stop = std::make_shared<std::stop_source>();
  w.stoppable(stop);
  const std::stop_token parent = co_await current_stop_token();
  std::stop_callback<StopOnParent> link(parent, StopOnParent{stop});
  tls::Connection client =
      tls::Connection::client(*w.loop, std::move(c), test::memory_tls().client, "sim");
  tls::Connection server =
      tls::Connection::server(*w.loop, std::move(s), test::memory_tls().server);
  const std::uint64_t total = w.rng->between(1, 20000);
  std::uint64_t client_sent = 0, server_sent = 0;
  Seen server_in{&w, "tls server"}, client_in{&w, "tls client"};
  bool client_closing = false, server_closing = false;

  auto handshake = [&](tls::Connection& conn) -> Task<bool> {
    FrameToken f;
    auto op = conn.handshake({.timeout = maybe_deadline(w, 0.2)}).stop_on(stop->get_token());
    auto r = co_await std::move(op);
    w.resumed("tls handshake");
    no_tls_fault(w, "handshake", r);
    if (!r) stop->request_stop();
    if (!r && !conn.unusable()) w.fail("tls: a failed handshake left the connection usable");
    co_return static_cast<bool>(r);
  };
  auto server_side = [&]() -> Task<> {
    FrameToken f;
    std::array<char, 700> buf{};
    for (int timeouts = 0; timeouts < 50;) {
      auto op = server.recv(buf, {.timeout = maybe_deadline(w, 0.3)}).stop_on(stop->get_token());
      auto n = co_await std::move(op);
      w.resumed("tls server recv");
      no_tls_fault(w, "server recv", n);
      if (!n && n.error().is_timeout() && !server.unusable()) {
        ++timeouts;  // a receive cut by its deadline loses nothing: try again
        continue;
      }
      if (!n) break;
      if (*n == 0) {
        if (!client_closing) w.fail("tls server: close_notify before the client shut down");
        server_closing = true;
        auto sd = server.shutdown().stop_on(stop->get_token());
        auto r = co_await std::move(sd);
        w.resumed("tls server shutdown");
        // No close_notify went out: the client, waiting for it, stops.
        if (!r) stop->request_stop();
        co_return;
      }
      server_in.take({buf.data(), *n});
      auto send =
          server.send_all(std::string_view(buf.data(), *n), {.timeout = maybe_deadline(w, 0.2)})
              .stop_on(stop->get_token());
      auto r = co_await std::move(send);
      w.resumed("tls server send_all");
      no_tls_fault(w, "server send_all", r);
      if (!r) {
        if (!server.unusable() && r.error().transferred != 0)
          w.fail("tls server: a send cut mid-way left the connection usable");
        break;
      }
      server_sent += *r;
    }
    stop->request_stop();  // a failed connection: the other side stops too
  };
  auto client_send = [&]() -> Task<> {
    FrameToken f;
    while (client_sent < total) {
      const std::size_t n = std::min<std::uint64_t>(w.rng->between(1, 3000), total - client_sent);
      std::string piece(n, '\0');
      for (std::size_t i = 0; i < n; ++i) piece[i] = byte_at(client_sent + i);
      auto send =
          client.send_all(piece, {.timeout = maybe_deadline(w, 0.2)}).stop_on(stop->get_token());
      auto r = co_await std::move(send);
      w.resumed("tls client send_all");
      no_tls_fault(w, "client send_all", r);
      if (!r) {
        stop->request_stop();
        co_return;
      }
      client_sent += *r;
    }
    client_closing = true;
    auto sd = client.shutdown().stop_on(stop->get_token());
    if (!co_await std::move(sd)) stop->request_stop();
    w.resumed("tls client shutdown");
  };
  auto client_recv = [&]() -> Task<> {
    FrameToken f;
    std::array<char, 500> buf{};
    for (;;) {
      auto op = client.recv(buf).stop_on(stop->get_token());
      auto n = co_await std::move(op);
      w.resumed("tls client recv");
      no_tls_fault(w, "client recv", n);
      if (!n) {
        stop->request_stop();
        break;
      }
      if (*n == 0) {
        if (!server_closing) w.fail("tls client: close_notify before the server shut down");
        break;
      }
      client_in.take({buf.data(), *n});
    }
  };

  // Each side goes on as soon as its own handshake is done, as programs
  // do: a TLS 1.3 server's handshake ends by sending its session tickets,
  // which a client that waited for the server (reading nothing) would
  // never let through a small socket buffer.
  auto client_side = [&]() -> Task<> {
    FrameToken f;
    if (!co_await handshake(client)) co_return;
    auto cs = client_send();
    auto cr = client_recv();
    co_await when_all(std::move(cs), std::move(cr));
    w.resumed("when_all");
  };
  auto server_all = [&]() -> Task<> {
    FrameToken f;
    if (!co_await handshake(server)) co_return;
    co_await server_side();
    w.resumed("server side");
  };
  // The connection as a program bounds it: stopped after a minute. Both
  // ends share the loop's receive pool, and with a pool of 2-3 buffers one
  // end's unread multishot buffers can leave none for the other end's recv
  // while each waits for the other to read (a pool run dry makes recvs
  // wait; lev does not share a pool out per connection): the stop ends that.
  auto bound = [&]() -> Task<> {
    FrameToken f;
    if (co_await w.loop->sleep_for(std::chrono::seconds(60))) stop->request_stop();
    w.resumed("tls bound");
  };
  auto both = [&]() -> Task<> {
    FrameToken f;
    co_await when_all(client_side(), server_all());
  };
  (void)co_await when_any(both(), bound());
  w.resumed("when_all");
  if (client_in.pos > server_sent) w.fail("tls client received more than the server sent");
  if (server_in.pos > client_sent) w.fail("tls server received more than the client sent");
}

}  // namespace lev::sim
