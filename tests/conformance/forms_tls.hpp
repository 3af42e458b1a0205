#pragma once
// The forms of lev::tls::Connection's operations (lev/net/tls.hpp): the
// handshake (waiting for the peer's flight, or holding its own), recv
// (waiting for a record, with half a record in, or the peer ending without
// close_notify), send, send_all and shutdown (their records held by a full
// socket; or send_all held at its second chunk). lev's side is a
// tls::Connection on the row's loop over a socketpair; the other side is a
// TlsPeer (tls_peer.hpp) the row moves only once it released the op. On
// the fake, the form's "kernel" (kernel()) does the socket ops' syscalls
// when the row feeds it, so the same bytes cross the same socket on every
// engine.
//
// What a cancel leaves is checked against docs/cancellation.md's TLS rows
// (cancelled_wrong): a recv that only waited for bytes leaves the
// connection usable and loses nothing (again(): the next recv gets the
// record, half a record included); a handshake, send, send_all or shutdown
// leaves it unusable (every later operation: tls::errc::unusable), with
// `transferred` counting only bytes whose records were all sent; a send
// stopped before it encrypted anything (stop_before) leaves it usable.
// A TLS operation owns no fd a user closes (the Connection does): no
// close-and-reuse rows.
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "conformance/form_base.hpp"
#include "conformance/matrix.hpp"
#include "conformance/tls_peer.hpp"
#include "lev/fake.hpp"
#include "lev/loop.hpp"
#include "lev/net/tls.hpp"

namespace lev::conformance {

/// A tls::Connection (lev's side) and its TlsPeer (the test's side) over a
/// socketpair. prepare() makes the connection on the row's loop, on the
/// thread that runs it (and establishes it, for the forms after the
/// handshake); the peer moves only once the row released the op.
template <class Self>
struct TlsForm : FormBase {
  static constexpr bool pends = true;
  Fd lev_end;  // until prepare() hands it to the connection
  int lev_fd = -1;
  std::optional<TlsPeer> peer;
  tls::Connection conn;
  bool released = false;
  std::size_t transferred = 0;        // of the last error
  std::optional<Result<void>> setup;  // prepare()'s handshake, when it ran one

  TlsForm(Env& e, bool peer_is_server) : FormBase(e) {
    auto [a, b] = make_socketpair(SOCK_STREAM);
    lev_fd = a.get();
    lev_end = std::move(a);
    peer.emplace(std::move(b), peer_is_server);
  }
  Self& self() { return static_cast<Self&>(*this); }

  void connect(Loop& loop, bool lev_is_client) {
    const test::MemoryTls& k = test::memory_tls();
    if (lev_is_client)
      conn = tls::Connection::client(loop, std::move(lev_end), k.client, "");
    else
      conn = tls::Connection::server(loop, std::move(lev_end), k.server);
  }
  static Task<> keep(Task<Result<void>> t, std::optional<Result<void>>& out) {
    auto r = co_await std::move(t);
    out = std::move(r);
  }
  static Task<> establish_task(Loop& loop, TlsForm& f, FakeBackend* fake) {
    Task<Result<void>> hs = f.conn.handshake({.timeout = std::chrono::seconds(2)}).task();
    loop.spawn(keep(std::move(hs), f.setup));
    for (int i = 0; i < 2500 && !(f.setup && f.peer->established()); ++i) {
      if (f.setup && !*f.setup) break;
      f.peer->step();
      if (fake) f.kernel(*fake);
      // Loop rounds first (the socket's bytes are there at once), then 1 ms naps.
      (void)co_await loop.after(i < 100 ? Duration::zero() : std::chrono::milliseconds(1));
    }
  }
  /// A client connection on `loop`, its handshake done on both sides.
  void establish(Loop& loop, FakeBackend* fake) {
    connect(loop, true);
    loop.block_on(establish_task(loop, *this, fake));
    if (!setup || !*setup || !peer->established())
      throw std::runtime_error(
          "the setup's handshake failed: " +
          (setup && !*setup ? setup->error().message() : "unfinished; " + peer->error()));
  }
  /// The connection's direction of the socket full of filler (the peer
  /// drops it): its records wait until the peer reads.
  void fill() {
    int small = 4096;
    ::setsockopt(lev_fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    const std::string chunk(1024, kFiller);
    std::size_t put = 0;
    for (std::size_t piece : {chunk.size(), std::size_t{1}})
      for (int i = 0; i < 4096; ++i) {
        const ssize_t n = ::send(lev_fd, chunk.data(), piece, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0) break;
        put += static_cast<std::size_t>(n);
      }
    peer->skip(put);
  }

  /// The fake's kernel: the syscalls of the connection's pending socket ops.
  void kernel(FakeBackend& f) {
    const std::vector<detail::OpBase*> ops = f.pending();  // a copy: completing changes it
    for (detail::OpBase* op : ops) {
      if (op->fd != lev_fd) continue;
      if (op->kind == detail::OpKind::send) {
        const ssize_t n = ::send(lev_fd, op->buf, op->len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0)
          f.complete(*op, static_cast<int>(n));
        else if (errno != EAGAIN && errno != EWOULDBLOCK)
          f.complete(*op, -errno);
      } else if (op->kind == detail::OpKind::recv) {
        std::array<char, 16384> buf;
        const ssize_t n = ::recv(lev_fd, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT);
        if (n < 0) {
          if (errno != EAGAIN && errno != EWOULDBLOCK) f.complete(*op, -errno);
          continue;
        }
        f.complete_with_data(*op, std::string_view(buf.data(), static_cast<std::size_t>(n)));
        if (op->res > 0) (void)!::recv(lev_fd, buf.data(), static_cast<std::size_t>(op->res), 0);
      }
    }
  }

  // ---- the row's hooks (rows.hpp) -------------------------------------------
  /// Each round a row waits: the peer goes on once released.
  void step() {
    if (released) peer->step();
  }
  void fake_pump(FakeBackend& f) {
    if (!released) self().unblock();
    kernel(f);
    peer->step();
    kernel(f);
  }
  /// Lets go of the socket (io_uring: the connection's multishot recv).
  void quiesce() { conn = tls::Connection(); }

  /// The outcome, keeping the error's `transferred`.
  template <class R>
  Outcome outcome_keeping(const R& r, std::string wrong = {}) {
    if (!r) transferred = r.error().transferred;
    return outcome_of(r, std::move(wrong));
  }
  /// docs/cancellation.md: a recv that only waited for bytes (or a send
  /// stopped before it encrypted anything) leaves it usable.
  [[nodiscard]] std::string usable_wrong() const {
    return conn.unusable() ? "cancelled before anything of it was on the wire, yet the connection "
                             "is unusable (docs/cancellation.md: still usable, nothing lost)"
                           : "";
  }
  /// docs/cancellation.md: cut while its records were written or sent, the
  /// connection is unusable: every later operation fails at once.
  std::string unusable_wrong(Loop& loop) {
    if (!conn.unusable())
      return "cancelled mid-record, yet the connection is not marked unusable "
             "(docs/cancellation.md: unusable)";
    std::array<char, 8> b{};
    auto later = loop.block_on(conn.recv(b).task());
    if (!later && later.error().code == tls::errc::unusable) return {};
    return "after the cancel a recv gave \"" + (later ? "ok" : later.error().message()) +
           "\", want tls::errc::unusable";
  }
  /// docs/cancellation.md on send and send_all: stopped before anything
  /// was encrypted, still usable; afterwards unusable.
  std::string send_cancelled_wrong(Loop& loop, Event ev) {
    return ev == Event::stop_before ? usable_wrong() : unusable_wrong(loop);
  }
  /// Steps the peer while bytes move (what the connection sent is in the
  /// socket by the time its op settled: no waiting).
  void peer_settle() {
    for (int i = 0; i < 64 && peer->step(); ++i) {
    }
  }
};

// ---- the handshake -----------------------------------------------------------

/// The client's handshake: its ClientHello goes, then it waits for the
/// server's flight, which the peer sends once released. With kServer, the
/// server's: the ClientHello is in, its own flight waits on a full socket
/// until the peer reads (the fake: its first receive waits).
template <bool kServer>
struct TlsHandshakeFormOf : TlsForm<TlsHandshakeFormOf<kServer>> {
  using Base = TlsForm<TlsHandshakeFormOf<kServer>>;
  struct Desc {
    static constexpr const char* name = "tls handshake";
  };
  static constexpr const char* name =
      kServer ? "tls handshake (server, its flight held)" : "tls handshake (client)";
  static constexpr bool effect_known = true;
  explicit TlsHandshakeFormOf(Env& e) : Base(e, !kServer) {}
  void prepare(Loop& loop, FakeBackend*) {
    this->connect(loop, !kServer);
    if constexpr (kServer) {
      this->peer->step();  // the ClientHello
      this->fill();
    }
  }
  auto make(Loop&, Timeout t) { return this->conn.handshake({.timeout = t}); }
  Outcome outcome(Result<void>& r) {
    return this->outcome_keeping(r,
                                 r && !this->conn.established() ? "ok, but not established" : "");
  }
  void unblock() {
    this->released = true;
    this->peer->step();
  }
  /// The peer finished too: it has the client's Finished (kServer: the
  /// server's whole flight, and answered it).
  bool effect() {
    this->peer_settle();
    return this->peer->established();
  }
  std::string cancelled_wrong(Loop& loop, Event) { return this->unusable_wrong(loop); }
};
using TlsHandshakeForm = TlsHandshakeFormOf<false>;
using TlsServerHandshakeForm = TlsHandshakeFormOf<true>;

// ---- recv -----------------------------------------------------------------------

/// recv on an established connection until the peer sends a record; with
/// `kHalf`, half of that record is in before the op starts.
template <bool kHalf>
struct TlsRecvFormOf : TlsForm<TlsRecvFormOf<kHalf>> {
  using Base = TlsForm<TlsRecvFormOf<kHalf>>;
  struct Desc {
    static constexpr const char* name = "tls recv";
  };
  static constexpr const char* name = kHalf ? "tls recv (half a record in)" : "tls recv";
  static constexpr bool again = true, effect_known = true;
  static constexpr std::string_view kPayload = "decrypted-payload";
  std::string record;  // kHalf: its second half waits for unblock()
  bool sent = false;
  std::array<char, 64> buf{};
  explicit TlsRecvFormOf(Env& e) : Base(e, true) {}
  void prepare(Loop& loop, FakeBackend* fake) {
    this->establish(loop, fake);
    if (kHalf) {
      record = this->peer->records(kPayload);
      this->peer->send_raw(std::string_view(record).substr(0, record.size() / 2));
    }
  }
  auto make(Loop&, Timeout t) { return this->conn.recv(buf, {.timeout = t}); }
  Outcome outcome(Result<std::size_t>& r) {
    std::string wrong;
    if (r && std::string_view(buf.data(), *r) != kPayload)
      wrong = "received \"" + std::string(buf.data(), *r) + "\"";
    return this->outcome_keeping(r, wrong);
  }
  void unblock() {
    this->released = true;
    if (std::exchange(sent, true)) return;
    if (kHalf)
      this->peer->send_raw(std::string_view(record).substr(record.size() / 2));
    else
      this->peer->send_raw(this->peer->records(kPayload));
  }
  /// The connection took the record's bytes off the socket.
  bool effect() { return sent && available(this->lev_fd) == 0; }
  std::string cancelled_wrong(Loop&, Event) { return this->usable_wrong(); }
};
using TlsRecvForm = TlsRecvFormOf<false>;
using TlsRecvHalfRecordForm = TlsRecvFormOf<true>;

/// recv until the peer ends the socket without close_notify: the value
/// the op should give is tls::errc::truncated (a recv cancelled before
/// that stays usable, and the next one sees the truncation).
struct TlsRecvTruncatedForm : TlsForm<TlsRecvTruncatedForm> {
  struct Desc {
    static constexpr const char* name = "tls recv";
  };
  static constexpr const char* name = "tls recv (the peer ends without close_notify)";
  static constexpr bool again = true;
  std::array<char, 64> buf{};
  explicit TlsRecvTruncatedForm(Env& e) : TlsForm(e, true) {}
  void prepare(Loop& loop, FakeBackend* fake) { establish(loop, fake); }
  auto make(Loop&, Timeout t) { return conn.recv(buf, {.timeout = t}); }
  Outcome outcome(Result<std::size_t>& r) {
    if (!r && r.error().code == tls::errc::truncated) {
      Outcome o;
      o.settled = o.ok = true;
      o.text = "truncated, as it should";
      return o;
    }
    if (r) {
      Outcome o = outcome_of(
          r, *r == 0 ? "a clean end (0), want tls::errc::truncated"
                     : "received " + std::to_string(*r) + " bytes, want tls::errc::truncated");
      return o;
    }
    return outcome_keeping(r);
  }
  void unblock() {
    released = true;
    peer->end_without_close_notify();
  }
  std::string cancelled_wrong(Loop&, Event) { return usable_wrong(); }
};

// ---- send, send_all, shutdown ----------------------------------------------------

/// send (`kAll`: send_all of two 64 KiB chunks' worth) on an established
/// connection whose socket is full until the peer reads.
template <bool kAll>
struct TlsSendFormOf : TlsForm<TlsSendFormOf<kAll>> {
  using Base = TlsForm<TlsSendFormOf<kAll>>;
  struct Desc {
    static constexpr const char* name = kAll ? "tls send_all" : "tls send";
  };
  static constexpr const char* name = kAll ? "tls send_all" : "tls send";
  static constexpr bool effect_known = true;
  std::string data = std::string(kAll ? 64 * 1024 + 1000 : 1000, kAll ? 'A' : 'S');
  explicit TlsSendFormOf(Env& e) : Base(e, true) {}
  void prepare(Loop& loop, FakeBackend* fake) {
    this->establish(loop, fake);
    this->fill();
  }
  auto make(Loop&, Timeout t) {
    if constexpr (kAll)
      return this->conn.send_all(data, {.timeout = t});
    else
      return this->conn.send(data, {.timeout = t});
  }
  Outcome outcome(Result<std::size_t>& r) {
    return this->outcome_keeping(r, r && *r != data.size() ? "sent " + std::to_string(*r) : "");
  }
  void unblock() {
    this->released = true;
    this->peer->step();
  }
  bool effect() {
    this->peer_settle();
    return !this->peer->plaintext().empty();
  }
  std::string effect_wrong() {
    this->peer_settle();
    const std::string& got = this->peer->plaintext();
    return got == data ? "" : "the peer decrypted " + std::to_string(got.size()) + " bytes";
  }
  std::string cancelled_wrong(Loop& loop, Event ev) {
    std::string w = this->send_cancelled_wrong(loop, ev);
    if (w.empty() && this->transferred != 0)
      w = "transferred " + std::to_string(this->transferred) +
          ", but none of its records could go (the socket was full)";
    return w;
  }
};
using TlsSendForm = TlsSendFormOf<false>;
using TlsSendAllForm = TlsSendFormOf<true>;

/// send_all of two 64 KiB chunks whose peer reads the first chunk's records
/// only (a thread of its own, until released): advance() runs the loop
/// until the op is held at its second chunk (a deadline of a few ms may
/// end it before). Cut there: unusable, `transferred` the first chunk; in
/// every row `transferred` counts exactly the chunks whose records all
/// reached the peer.
struct TlsSendAllSecondChunkForm : TlsForm<TlsSendAllSecondChunkForm> {
  struct Desc {
    static constexpr const char* name = "tls send_all";
  };
  static constexpr const char* name = "tls send_all (its second chunk held)";
  static constexpr bool effect_known = true;
  static constexpr std::size_t kChunk = 64 * 1024;  // what lev encrypts at a time
  // One chunk's records under TLS 1.3: four of 16 KiB, each with a 5-byte
  // header, its inner content type and a 16-byte tag.
  static constexpr std::size_t kChunkRecords = 4 * (16384 + 5 + 1 + 16);
  std::string data = std::string(2 * kChunk, 'C');
  /// Reads the first chunk's records off the peer's socket, then stops.
  struct Reader {
    std::atomic<bool> stop{false}, done{false};
    std::string got;  // read by others only after finish()
    std::thread thread;
    Reader() = default;
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;
    ~Reader() { finish(); }
    void start(int fd) {
      thread = std::thread([this, fd] {
        std::array<char, 16384> buf;
        while (!stop.load() && got.size() < kChunkRecords) {
          pollfd p{fd, POLLIN, 0};
          if (::poll(&p, 1, 5) <= 0) continue;
          const std::size_t want = std::min(buf.size(), kChunkRecords - got.size());
          const ssize_t n = ::recv(fd, buf.data(), want, MSG_DONTWAIT);
          if (n == 0) break;
          if (n > 0) got.append(buf.data(), static_cast<std::size_t>(n));
        }
        done.store(true);
      });
    }
    void finish() {
      stop.store(true);
      if (thread.joinable()) thread.join();
    }
  } reader;

  explicit TlsSendAllSecondChunkForm(Env& e) : TlsForm(e, true) {}
  void prepare(Loop& loop, FakeBackend* fake) {
    establish(loop, fake);
    if (conn.version() != "TLSv1.3")
      throw std::runtime_error("the chunk's record size assumes TLS 1.3, got " +
                               std::string(conn.version()));
    int room = 16384;  // the second chunk's records do not fit
    ::setsockopt(lev_fd, SOL_SOCKET, SO_SNDBUF, &room, sizeof(room));
    reader.start(peer->fd());
  }
  static Task<> advance_task(Loop& loop, TlsSendAllSecondChunkForm& f, FakeBackend* fake) {
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (!f.reader.done.load() && !f.conn.unusable() &&
           std::chrono::steady_clock::now() < limit) {
      if (fake) f.kernel(*fake);
      (void)co_await loop.after(std::chrono::milliseconds(1));
    }
    for (int i = 0; i < 3; ++i) {  // the second chunk's send goes as far as it can
      if (fake) f.kernel(*fake);
      (void)co_await loop.after(std::chrono::milliseconds(1));
    }
  }
  void advance(Loop& loop, FakeBackend* fake) { loop.block_on(advance_task(loop, *this, fake)); }
  auto make(Loop&, Timeout t) { return conn.send_all(data, {.timeout = t}); }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_keeping(r, r && *r != data.size() ? "sent " + std::to_string(*r) : "");
  }
  void unblock() {
    if (std::exchange(released, true)) return;
    reader.finish();
    peer->take(reader.got);
    peer->step();
  }
  bool effect() {
    peer_settle();
    return peer->plaintext().size() == data.size();
  }
  std::string effect_wrong() {
    return peer->plaintext() == data
               ? ""
               : "the peer decrypted " + std::to_string(peer->plaintext().size()) + " bytes";
  }
  std::string cancelled_wrong(Loop& loop, Event ev) {
    std::string w = send_cancelled_wrong(loop, ev);
    unblock();
    peer_settle();
    const std::size_t got = peer->plaintext().size();
    const std::size_t whole = got - got % kChunk;
    if (w.empty() && transferred != whole)
      w = "transferred " + std::to_string(transferred) + ", but the peer got all the records of " +
          std::to_string(whole) +
          " bytes (docs/cancellation.md: the bytes whose records were "
          "all sent)";
    const bool held = ev == Event::stop_pending || ev == Event::abort_pending ||
                      ev == Event::with_timeout_stopped;
    if (w.empty() && held && transferred != kChunk)
      w = "cancelled while held at its second chunk, yet transferred " +
          std::to_string(transferred) + " (want the first chunk, " + std::to_string(kChunk) + ")";
    return w;
  }
};

/// shutdown on an established connection: its close_notify waits on a
/// full socket until the peer reads.
struct TlsShutdownForm : TlsForm<TlsShutdownForm> {
  struct Desc {
    static constexpr const char* name = "tls shutdown";
  };
  static constexpr const char* name = "tls shutdown (close_notify)";
  static constexpr bool effect_known = true;
  explicit TlsShutdownForm(Env& e) : TlsForm(e, true) {}
  void prepare(Loop& loop, FakeBackend* fake) {
    establish(loop, fake);
    fill();
  }
  auto make(Loop&, Timeout t) { return conn.shutdown({.timeout = t}); }
  Outcome outcome(Result<void>& r) { return outcome_keeping(r); }
  void unblock() {
    released = true;
    peer->step();
  }
  bool effect() {
    peer_settle();
    return peer->got_close_notify();
  }
  std::string cancelled_wrong(Loop& loop, Event) { return unusable_wrong(loop); }
};

/// The TLS family's forms (conformance_test.cpp adds them to the op kinds').
using TlsForms = std::tuple<TlsHandshakeForm, TlsServerHandshakeForm, TlsRecvForm,
                            TlsRecvHalfRecordForm, TlsRecvTruncatedForm, TlsSendForm,
                            TlsSendAllForm, TlsSendAllSecondChunkForm, TlsShutdownForm>;

}  // namespace lev::conformance
