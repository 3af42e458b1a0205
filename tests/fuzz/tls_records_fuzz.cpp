// libFuzzer target: lev's TLS record plumbing, the bytes between OpenSSL's
// BIO of ours and the loop's socket ops, on the fake backend (a simulated
// kernel between two descriptors, tests/fake_wire.hpp).
//
// Mode 0 (byte 0 even): the rest of the input is what a hostile client
// sends to a lev server, handed over at fuzzer-chosen splits, then EOF.
// The server must end (an error, a truncation or the clean end), never
// hang or crash, with nothing left live on the loop and every pool buffer
// back.
// Mode 1 (byte 0 odd): a lev client and server talk through the wire (the
// client sends the input's plaintext, the server echoes it); splits come
// from bytes 1..8, and bytes 9..11 may flip one byte of the client's
// ciphertext. What each side receives must be a prefix of what the other
// sent (all of it when nothing was flipped): TLS may fail, it never hands
// out wrong bytes.
//
// Built with clang's -fsanitize=fuzzer by scripts/fuzz.sh; the ordinary
// build runs the seed corpus and generated inputs through it
// (tests/fuzz/replay.cpp).
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "../fake_wire.hpp"
#include "../tls_keys.hpp"
#include "lev/fake.hpp"
#include "lev/loop.hpp"
#include "lev/net/tls.hpp"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tls_records_fuzz: %s\n", what);
    std::abort();
  }
}

struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return s >> 33;
  }
};

lev::FakeBackend::Options fake_options() {
  lev::FakeBackend::Options o;
  o.detect_blocking = false;
  return o;
}

// Rounds of the loop, with the wire pumped before each, until `done()`;
// when nothing moves for a while, both ends are closed (a stalled
// conversation must end through EOF), and if even that does not end it:
// false.
template <class Done>
bool drive(lev::Loop& loop, lev::test::FakeWire& wire, Done done) {
  int idle = 0;
  for (int i = 0; i < 400000; ++i) {
    if (done()) return true;
    const bool moved = wire.pump();
    const std::size_t ran = loop.run_once();
    idle = moved || ran ? 0 : idle + 1;
    if (idle > 4) {
      if (wire.a_closed && wire.b_closed) return done();
      wire.a_closed = wire.b_closed = true;
      idle = 0;
    }
  }
  return done();
}

void hostile_client(std::string_view bytes, Rng rng) {
  auto fake = std::make_shared<lev::FakeBackend>(fake_options());
  int sv[2];
  check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
  ::close(sv[0]);  // the client end is only a number: the test plays it
  {
    lev::Loop loop{lev::Model::proactor,
                   {.backend = fake, .recv_buffer_count = 8, .recv_buffer_size = 512}};
    lev::test::FakeWire wire{*fake, -2, sv[1], {}, {}};
    wire.to_b.assign(bytes);
    wire.a_closed = true;  // after its bytes, the client's end of stream
    wire.plan = [&rng](std::size_t w) { return 1 + rng.next() % w; };
    lev::tls::Connection server =
        lev::tls::Connection::server(loop, lev::Fd{sv[1]}, lev::test::memory_tls().server);
    bool done = false;
    auto serve = [&]() -> lev::Task<> {
      if (co_await server.handshake()) {
        char buf[300];
        for (int i = 0; i < 10000; ++i) {
          auto n = co_await server.recv(buf);
          if (!n || *n == 0) break;
        }
      }
      done = true;
    };
    loop.spawn(serve());
    check(drive(loop, wire, [&] { return done; }), "the server never ended on a hostile client");
    check(loop.live_op_count() == 0, "operations left live");
    check(loop.recv_buffer_stats().in_use == 0, "pool buffers not given back");
  }
}

void conversation(std::string_view plain, Rng rng, std::uint16_t flip_at, std::uint8_t flip_mask) {
  auto fake = std::make_shared<lev::FakeBackend>(fake_options());
  int a[2], b[2];
  check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a) == 0, "socketpair");
  check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b) == 0, "socketpair");
  ::close(a[1]);
  ::close(b[1]);
  const bool flips = flip_at != 0xffff && flip_mask != 0;
  {
    lev::Loop loop{lev::Model::proactor,
                   {.backend = fake, .recv_buffer_count = 16, .recv_buffer_size = 1024}};
    lev::test::FakeWire wire{*fake, a[0], b[0], {}, {}};
    wire.plan = [&rng](std::size_t w) { return 1 + rng.next() % w; };
    std::size_t seen = 0;  // client bytes that entered the wire so far
    wire.tamper = [&](std::string& bytes, bool towards_b) {
      if (!towards_b) return;
      if (flips && flip_at >= seen && flip_at < seen + bytes.size())
        bytes[flip_at - seen] ^= static_cast<char>(flip_mask);
      seen += bytes.size();
    };
    lev::tls::Connection client =
        lev::tls::Connection::client(loop, lev::Fd{a[0]}, lev::test::memory_tls().client, "fuzz");
    lev::tls::Connection server =
        lev::tls::Connection::server(loop, lev::Fd{b[0]}, lev::test::memory_tls().server);
    std::string at_server, at_client;
    bool server_ok = false, client_ok = false, server_done = false, client_done = false;
    auto serve = [&]() -> lev::Task<> {
      if (co_await server.handshake()) {
        char buf[700];
        for (;;) {
          auto n = co_await server.recv(buf);
          if (!n) break;
          if (*n == 0) {
            server_ok = static_cast<bool>(co_await server.shutdown());
            break;
          }
          at_server.append(buf, *n);
          if (!co_await server.send_all(std::string_view(buf, *n))) break;
        }
      }
      server_done = true;
    };
    auto talk = [&]() -> lev::Task<> {
      if (co_await client.handshake()) {
        std::size_t sent = 0;
        char buf[900];
        while (sent < plain.size()) {
          const std::size_t piece =
              std::min<std::size_t>(1 + rng.next() % 2000, plain.size() - sent);
          if (!co_await client.send_all(plain.substr(sent, piece))) break;
          sent += piece;
          while (at_client.size() < sent) {  // the echo of what was sent
            auto n = co_await client.recv(buf);
            if (!n || *n == 0) break;
            at_client.append(buf, *n);
          }
          if (at_client.size() < sent) break;
        }
        if (sent == plain.size() && co_await client.shutdown()) {
          auto end = co_await client.recv(buf);
          client_ok = end && *end == 0;
        }
      }
      client_done = true;
    };
    loop.spawn(serve());
    loop.spawn(talk());
    check(drive(loop, wire, [&] { return server_done && client_done; }),
          "the conversation never ended");
    check(plain.substr(0, at_server.size()) == at_server, "the server got bytes nobody sent");
    check(plain.substr(0, at_client.size()) == at_client, "the client got bytes nobody sent");
    if (!flips) {
      check(client_ok && server_ok, "an untouched conversation failed");
      check(at_server == plain && at_client == plain, "an untouched conversation lost bytes");
    }
    check(loop.live_op_count() == 0, "operations left live");
    check(loop.recv_buffer_stats().in_use == 0, "pool buffers not given back");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 12) return 0;
  std::uint64_t seed = 0;
  for (int i = 1; i <= 8; ++i) seed = seed << 8 | data[i];
  const std::string_view rest(reinterpret_cast<const char*>(data) + 12, size - 12);
  if (data[0] % 2 == 0) {
    hostile_client({reinterpret_cast<const char*>(data) + 9, size - 9}, Rng{seed});
  } else {
    const auto flip_at = static_cast<std::uint16_t>(data[9] << 8 | data[10]);
    conversation(rest.substr(0, 8192), Rng{seed}, flip_at, data[11]);
  }
  return 0;
}
