// tls::Connection: each operation is a coroutine that steps the engine
// (tls_engine.hpp) and moves ciphertext with the loop's own recv(fd) (a
// pool buffer) and send_all, so the settlement rules, deadlines and
// cancellation of those ops are TLS's too.
//
// Sides. One task receives (recv, or the handshake), one sends (send,
// send_all, shutdown, or the handshake). Either may produce records (a
// reader answers a KeyUpdate, sends an alert); whoever has records to send
// and finds nobody sending runs the send loop, which goes on until the
// engine's output is empty; a task whose records someone else is sending
// parks until that loop ends (TurnAwaiter), so records leave in the order
// OpenSSL wrote them, and only one send is ever in flight.
#include "lev/net/tls.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "lev/log.hpp"
#include "lev/net/connect.hpp"
#include "lev/sync.hpp"
#include "net/tls_state.hpp"

namespace lev::tls {

namespace detail {
namespace {

using lev::detail::Cancel;

constexpr std::size_t kWriteChunk = 64 * 1024;  // plaintext per SSL_write: output stays bounded
constexpr Duration kAlertLimit = std::chrono::seconds(1);  // a fatal alert's send, at most
constexpr std::size_t kKeepOutput = 16 * 1024;  // output buffer kept between sends, at most

Error tls_error(errc code, const char* op, int fd, std::string_view detail = {}) {
  Error e{make_error_code(code), op, fd};
  return detail.empty() ? e : e.with_path(detail);
}

Error cancel_error(Cancel why, const char* op, int fd) {
  return Error{std::make_error_code(why == Cancel::deadline ? std::errc::timed_out
                                                            : std::errc::operation_canceled),
               op, fd};
}

// The whole operation's time limit, handed to each socket op as what is left.
struct Limit {
  Loop* loop;
  std::optional<TimePoint> end;

  Limit(Loop& l, std::optional<Duration> timeout) : loop(&l) {
    if (timeout) end = saturating_add(l.now(), std::max(*timeout, Duration::zero()));
  }
  [[nodiscard]] std::optional<Duration> left() const {
    if (!end) return std::nullopt;
    return std::max(*end - loop->now(), Duration::zero());
  }
  // At most `cap` (a fatal alert's send).
  [[nodiscard]] Limit capped(Duration cap) const {
    Limit l = *this;
    const TimePoint c = saturating_add(loop->now(), cap);
    if (!l.end || *l.end > c) l.end = c;
    return l;
  }
};

// While it lives, `w` names `a` as what the operation waits on.
template <class A>
class Watch {
 public:
  Watch(Waiting& w, A& a) noexcept : w_(w) {
    w_.fn = [](void* p, Cancel why) noexcept { static_cast<A*>(p)->cancel_for(why); };
    w_.arg = &a;
  }
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;
  ~Watch() {
    w_.fn = nullptr;
    w_.arg = nullptr;
  }

 private:
  Waiting& w_;
};

// Parks until the running send loop ends (it carries this task's records
// too). Cancelled by the task's scope or token, or by cancel_for.
class TurnAwaiter : public lev::detail::ParkedAwaiter {
 public:
  explicit TurnAwaiter(ConnState& s) noexcept : ParkedAwaiter(*s.loop, s.tx_waiters) {}
  bool await_ready() const noexcept { return false; }
  template <class P>
  void await_suspend(std::coroutine_handle<P> h) {
    park(h);
  }
  /// Cancel::none: the send loop ended; else why the wait was cut.
  Cancel await_resume() noexcept {
    if (resumed() != lev::detail::WaitStatus::cancelled) return Cancel::none;
    return why_;
  }
  void cancel_for(Cancel why) noexcept {
    if (!w_.queued) return;  // released already: the release stands
    list_->remove(w_);
    w_.status = lev::detail::WaitStatus::cancelled;
    why_ = why;
    loop_->start_cancelled(w_.op);
  }

 private:
  Cancel why_ = Cancel::requested;  // a scope or token
};

void wake_senders(ConnState& s) {
  while (lev::detail::Waiter* w = s.tx_waiters.front())
    lev::detail::release(*s.loop, s.tx_waiters, *w, lev::detail::WaitStatus::granted);
}

// Sends the engine's output until it is empty (or waits while another
// task does). A failed or cancelled send leaves records half on the wire:
// the connection is unusable from then on.
Task<Result<void>> flush(ConnState& s, Waiting& w, Limit lim, const char* op) {
  while (s.engine.output_size() > 0) {
    if (s.broken) co_return tls_error(errc::unusable, op, s.fd.get());
    if (w.pending != Cancel::none) {
      s.broken = true;
      co_return cancel_error(w.pending, op, s.fd.get());
    }
    if (s.sending) {
      TurnAwaiter turn{s};
      Watch<TurnAwaiter> watch{w, turn};
      const Cancel cut = co_await turn;
      if (cut != Cancel::none) {
        s.broken = true;  // our records are queued behind a send we no longer wait for
        co_return cancel_error(cut, op, s.fd.get());
      }
      continue;
    }
    s.sending = true;
    const std::string_view chunk = s.engine.next_output();
    auto&& tx = s.loop->send_all(s.fd, chunk, IoOptions{.timeout = lim.left()});
    Result<std::size_t> n = std::size_t{0};
    {
      Watch<std::remove_reference_t<decltype(tx)>> watch{w, tx};
      n = co_await tx;
    }
    s.sending = false;
    if (!n) {
      s.broken = true;
      wake_senders(s);
      co_return Error{n.error().code, op, s.fd.get()};
    }
    s.engine.output_sent(*n);
  }
  s.engine.trim_output(kKeepOutput);
  wake_senders(s);
  co_return Result<void>{};
}

// Receives more ciphertext into the engine: true, or false at the end of
// the socket's stream.
Task<Result<bool>> fill(ConnState& s, Waiting& w, Limit lim, const char* op) {
  if (w.pending != Cancel::none) co_return cancel_error(w.pending, op, s.fd.get());
  auto&& rx = s.loop->recv(s.fd, IoOptions{.timeout = lim.left()});
  Result<Buffer> got = Buffer{};
  {
    Watch<std::remove_reference_t<decltype(rx)>> watch{w, rx};
    got = co_await rx;
  }
  if (!got) co_return Error{got.error().code, op, s.fd.get()};
  if (got->empty()) {
    s.peer_eof = true;
    co_return false;
  }
  s.engine.feed(std::move(*got));
  co_return true;
}

// Sends what a fatal step left (an alert), briefly: the error that
// follows is what counts.
Task<> send_alert(ConnState& s, Waiting& w, const Limit& lim, const char* op) {
  if (s.engine.output_size() > 0 && !s.sending && !s.broken)
    (void)co_await flush(s, w, lim.capped(kAlertLimit), op);
  s.broken = true;
}

// Why an operation cannot start (nullopt: it can).
std::optional<Error> refuse(const ConnState& s, const char* op, bool need_established) {
  if (s.broken) return tls_error(errc::unusable, op, s.fd.get());
  if (need_established && !s.established) return tls_error(errc::not_established, op, s.fd.get());
  return std::nullopt;
}

Error handshake_error(const ConnState& s, const Failure& f) {
  if (f.verify) {
    std::string detail = s.host.empty() ? f.reason : s.host + ": " + f.reason;
    return tls_error(errc::verify_failed, "tls handshake", s.fd.get(), detail);
  }
  return tls_error(errc::handshake_failed, "tls handshake", s.fd.get(), f.reason);
}

Task<Result<void>> run_handshake(std::shared_ptr<ConnState> sp, std::optional<Duration> timeout) {
  ConnState& s = *sp;
  static constexpr const char* op = "tls handshake";
  if (s.established) co_return Result<void>{};
  if (auto e = refuse(s, op, false)) co_return *e;
  if (s.rx_busy || s.tx_busy) co_return tls_error(errc::busy, op, s.fd.get());
  s.rx_busy = s.tx_busy = true;
  s.rx_wait = {};
  Result<void> out{};
  const Limit lim(*s.loop, timeout);
  for (;;) {
    const Status st = s.engine.handshake();
    if (st == Status::failed) {
      out = handshake_error(s, s.engine.failure());
      co_await send_alert(s, s.rx_wait, lim, op);
      break;
    }
    if (auto f = co_await flush(s, s.rx_wait, lim, op); !f) {
      out = f.error();
      break;
    }
    if (st == Status::ok) {
      s.established = true;
      s.engine.trim_output(0);  // the flight is sent: an idle connection keeps none of it
      if (s.ctx->ktls) (void)ktls_unavailable();  // probed (and named) once per process
      const unsigned char* proto = nullptr;
      unsigned len = 0;
      SSL_get0_alpn_selected(s.engine.ssl(), &proto, &len);
      if (proto) s.alpn.assign(reinterpret_cast<const char*>(proto), len);
      break;
    }
    auto more = co_await fill(s, s.rx_wait, lim, op);
    if (!more) {
      out = more.error();
      break;
    }
    if (!*more) {
      out = tls_error(errc::handshake_failed, op, s.fd.get(), "the peer closed the connection");
      break;
    }
  }
  if (!out) s.broken = true;  // a handshake cut short cannot be taken up again
  s.rx_busy = s.tx_busy = false;
  co_return out;
}

Task<Result<std::size_t>> run_recv(std::shared_ptr<ConnState> sp, MutableBuffer buf,
                                   std::optional<Duration> timeout) {
  ConnState& s = *sp;
  static constexpr const char* op = "tls recv";
  if (auto e = refuse(s, op, true)) co_return *e;
  if (s.rx_busy) co_return tls_error(errc::busy, op, s.fd.get());
  if (s.peer_closed || buf.size == 0) co_return std::size_t{0};
  s.rx_busy = true;
  s.rx_wait = {};
  Result<std::size_t> out = std::size_t{0};
  const Limit lim(*s.loop, timeout);
  // Usually nothing is buffered between requests: receive first then,
  // rather than ask OpenSSL for a read that can only want more.
  bool starved = s.engine.starved() && !s.sending && s.engine.output_size() == 0;
  for (;;) {
    Step st{Status::want_read};
    if (!starved) st = s.engine.read({static_cast<char*>(buf.data), buf.size});
    starved = false;
    if (st.status == Status::failed) {
      out = tls_error(errc::protocol_error, op, s.fd.get(), s.engine.failure().reason);
      co_await send_alert(s, s.rx_wait, lim, op);
      break;
    }
    // Records the read produced (a KeyUpdate's answer): sent now unless a
    // send loop runs, which then carries them.
    if (s.engine.output_size() > 0 && !s.sending) {
      if (auto f = co_await flush(s, s.rx_wait, lim, op); !f) {
        out = f.error();
        break;
      }
    }
    if (st.status == Status::ok) {
      out = st.n;
      break;
    }
    if (st.status == Status::closed) {
      s.peer_closed = true;
      break;
    }
    if (s.peer_eof) {
      out = tls_error(errc::truncated, op, s.fd.get());
      break;
    }
    auto more = co_await fill(s, s.rx_wait, lim, op);
    if (!more) {
      out = more.error();  // a cancelled wait for bytes loses nothing: still usable
      break;
    }
    if (!*more) {
      out = tls_error(errc::truncated, op, s.fd.get());
      break;
    }
  }
  s.rx_busy = false;
  co_return out;
}

Task<Result<std::size_t>> run_send(std::shared_ptr<ConnState> sp, ConstBuffer buf, bool all,
                                   std::optional<Duration> timeout) {
  ConnState& s = *sp;
  static constexpr const char* op = "tls send";
  if (auto e = refuse(s, op, true)) co_return *e;
  if (s.tx_busy) co_return tls_error(errc::busy, op, s.fd.get());
  if (s.sent_close) co_return tls_error(errc::shut_down, op, s.fd.get());
  // Stopped before anything was encrypted: nothing happened, still usable.
  const lev::detail::CancelFrom from = co_await lev::detail::current_cancel();
  if (from.stopped()) co_return cancel_error(Cancel::requested, op, s.fd.get());
  s.tx_busy = true;
  s.tx_wait = {};
  const Limit lim(*s.loop, timeout);
  const auto* data = static_cast<const char*>(buf.data);
  std::size_t done = 0;
  Result<std::size_t> out = std::size_t{0};
  do {
    const std::size_t n = std::min(buf.size - done, kWriteChunk);
    const Step st = s.engine.write({data + done, n});
    if (st.status == Status::failed) {
      s.broken = true;
      out = tls_error(errc::protocol_error, op, s.fd.get(), s.engine.failure().reason);
      break;
    }
    if (auto f = co_await flush(s, s.tx_wait, lim, op); !f) {
      Error e = f.error();
      e.transferred = done;
      out = e;
      break;
    }
    done += n;
    out = done;
  } while (all && done < buf.size);
  s.tx_busy = false;
  co_return out;
}

Task<Result<void>> run_shutdown(std::shared_ptr<ConnState> sp, std::optional<Duration> timeout) {
  ConnState& s = *sp;
  static constexpr const char* op = "tls shutdown";
  if (auto e = refuse(s, op, true)) co_return *e;
  if (s.tx_busy) co_return tls_error(errc::busy, op, s.fd.get());
  s.tx_busy = true;
  s.tx_wait = {};
  Result<void> out{};
  const Limit lim(*s.loop, timeout);
  if (!s.sent_close) {
    s.sent_close = true;
    if (s.engine.shutdown() == Status::failed) {
      s.broken = true;
      out = tls_error(errc::protocol_error, op, s.fd.get(), s.engine.failure().reason);
    }
  }
  if (out) out = co_await flush(s, s.tx_wait, lim, op);
  s.tx_busy = false;
  co_return out;
}

}  // namespace
}  // namespace detail

// --------------------------------------------------------------- Connection

namespace {
std::shared_ptr<detail::ConnState> make_state(Loop& loop, Fd fd, const Context& ctx) {
  if (!ctx.valid()) throw std::invalid_argument("lev::tls::Connection: no context");
  SSL* ssl = SSL_new(ctx.state()->ctx);
  if (!ssl) throw std::bad_alloc();
  return std::make_shared<detail::ConnState>(loop, std::move(fd), ctx.state(), ssl);
}

bool is_ip_literal(const std::string& host) {
  in6_addr a6{};
  in_addr a4{};
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}
}  // namespace

namespace detail {
// A client connection whose sessions are kept under `key`.
Connection make_client(Loop& loop, Fd fd, const Context& ctx, std::string host, std::string key) {
  if (ctx.is_server())
    throw std::invalid_argument("lev::tls::Connection::client: a server context");
  auto st = make_state(loop, std::move(fd), ctx);
  SSL* ssl = st->engine.ssl();
  SSL_set_connect_state(ssl);
  st->host = std::move(host);
  st->session_key = std::move(key);
  SSL_set_ex_data(ssl, session_key_index(), &st->session_key);
  if (!st->host.empty()) {
    if (is_ip_literal(st->host)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), st->host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl, st->host.c_str());
      SSL_set1_host(ssl, st->host.c_str());
    }
  }
  if (!st->session_key.empty())
    if (SSL_SESSION* cached = st->ctx->take_session(st->session_key)) {
      SSL_set_session(ssl, cached);
      SSL_SESSION_free(cached);
    }
  return Connection(std::move(st));
}
}  // namespace detail

Connection Connection::client(Loop& loop, Fd fd, const Context& ctx, std::string host) {
  std::string key = host;
  return detail::make_client(loop, std::move(fd), ctx, std::move(host), std::move(key));
}

Connection Connection::server(Loop& loop, Fd fd, const Context& ctx) {
  if (!ctx.is_server())
    throw std::invalid_argument("lev::tls::Connection::server: a client context");
  auto st = make_state(loop, std::move(fd), ctx);
  SSL_set_accept_state(st->engine.ssl());
  return Connection(std::move(st));
}

Connection::~Connection() = default;

Op<void> Connection::handshake(IoOptions o) {
  return {detail::run_handshake(s_, o.timeout), &s_->rx_wait};
}
Op<std::size_t> Connection::recv(MutableBuffer buf, IoOptions o) {
  return {detail::run_recv(s_, buf, o.timeout), &s_->rx_wait};
}
Op<std::size_t> Connection::send(ConstBuffer buf, IoOptions o) {
  return {detail::run_send(s_, buf, false, o.timeout), &s_->tx_wait};
}
Op<std::size_t> Connection::send_all(ConstBuffer buf, IoOptions o) {
  return {detail::run_send(s_, buf, true, o.timeout), &s_->tx_wait};
}
Op<void> Connection::shutdown(IoOptions o) {
  return {detail::run_shutdown(s_, o.timeout), &s_->tx_wait};
}

int Connection::fd() const noexcept { return s_ ? s_->fd.get() : -1; }
bool Connection::established() const noexcept { return s_ && s_->established; }
bool Connection::unusable() const noexcept { return s_ && s_->broken; }
std::string_view Connection::alpn() const noexcept { return s_ ? std::string_view(s_->alpn) : ""; }
std::string_view Connection::server_name() const noexcept {
  if (!s_) return {};
  if (!SSL_is_server(s_->engine.ssl())) return s_->host;
  const char* n = SSL_get_servername(s_->engine.ssl(), TLSEXT_NAMETYPE_host_name);
  return n ? n : "";
}
std::string_view Connection::version() const noexcept {
  return s_ && s_->established ? SSL_get_version(s_->engine.ssl()) : "";
}
std::string_view Connection::cipher() const noexcept {
  if (!s_ || !s_->established) return {};
  const char* c = SSL_get_cipher_name(s_->engine.ssl());
  return c ? c : "";
}
bool Connection::resumed() const noexcept {
  return s_ && s_->established && SSL_session_reused(s_->engine.ssl()) == 1;
}
std::size_t Connection::buffered() const noexcept {
  return s_ ? s_->engine.input_size() + s_->engine.output_size() : 0;
}

// ------------------------------------------------------- connect / accept

Task<Result<Connection>> connect(Loop& loop, std::string host, std::uint16_t port, Context ctx,
                                 ConnectOptions options) {
  const TimePoint start = loop.now();
  const bool limited = options.timeout > Duration::zero();
  net::ConnectOptions tcp{.timeout = options.timeout};
  auto connecting = net::connect(loop, host, port, std::move(tcp));
  auto fd = co_await connecting;
  if (!fd) co_return fd.error();
  std::string name = options.server_name.empty() ? host : options.server_name;
  std::string key = name + ":" + std::to_string(port);
  Connection c = detail::make_client(loop, std::move(*fd), ctx, std::move(name), std::move(key));
  std::optional<Duration> left;
  if (limited) left = std::max(options.timeout - (loop.now() - start), Duration::zero());
  auto hs = co_await c.handshake({.timeout = left});
  if (!hs) co_return hs.error();
  co_return std::move(c);
}

namespace {
struct AcceptShared {
  Context ctx;
  Handler handler;
  AcceptOptions options;
};

// One accepted socket: the handshake, then the user's handler. The shared
// state comes by value: the frame never points into a closure.
Task<> accept_one(std::shared_ptr<AcceptShared> sh, Fd fd, SocketAddress peer) {
  Loop* loop = co_await current_loop();
  Connection c = Connection::server(*loop, std::move(fd), sh->ctx);
  std::optional<Duration> limit;
  if (sh->options.handshake_timeout > Duration::zero()) limit = sh->options.handshake_timeout;
  auto hs = co_await c.handshake({.timeout = limit});
  if (!hs) {
    if (sh->options.on_handshake_error) sh->options.on_handshake_error(hs.error(), peer);
    co_return;
  }
  Task<> serve = sh->handler(std::move(c), std::move(peer));
  co_await serve;
}
}  // namespace

std::function<Task<>(Fd, SocketAddress)> accept_handler(Context ctx, Handler handler,
                                                        AcceptOptions options) {
  auto sh = std::make_shared<AcceptShared>(
      AcceptShared{std::move(ctx), std::move(handler), std::move(options)});
  return [sh](Fd fd, SocketAddress peer) { return accept_one(sh, std::move(fd), std::move(peer)); };
}

// ------------------------------------------------------------------ kTLS

const std::string& ktls_unavailable() {
  static const std::string why = [] {
    std::string reason;
    Fd listener{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    Fd client{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (!listener || !client || ::bind(listener.get(), reinterpret_cast<sockaddr*>(&a), len) != 0 ||
        ::listen(listener.get(), 1) != 0 ||
        ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0 ||
        ::connect(client.get(), reinterpret_cast<sockaddr*>(&a), len) != 0) {
      reason = std::string("no loopback TCP socket to probe with: ") + std::strerror(errno);
    } else if (::setsockopt(client.get(), IPPROTO_TCP, TCP_ULP, "tls", 3) != 0) {
      const int err = errno;
      reason = err == ENOENT ? "the kernel has no TLS upper-layer protocol (CONFIG_TLS): "
                               "setsockopt(TCP_ULP, \"tls\"): "
                             : "setsockopt(TCP_ULP, \"tls\"): ";
      reason += std::strerror(err);
    }
    if (!reason.empty())
      log_message(LogLevel::info,
                  "tls: kTLS unavailable, TLS records stay in user space: " + reason);
    else
      log_message(LogLevel::info,
                  "tls: the kernel offers kTLS, but lev keeps TLS records in user space (its "
                  "kernel record path is not built)");
    return reason;
  }();
  return why;
}

}  // namespace lev::tls
