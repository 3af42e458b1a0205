#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// TLS 1.2 / 1.3 over a connected socket, on OpenSSL 3, on every engine.
///
///     auto ctx = lev::tls::Context::client({}).value();   // the system's CAs, verification on
///     auto c = co_await lev::tls::connect(loop, "example.com", 443, ctx, {.timeout = 5s});
///     if (!c) { std::puts(c.error().message().c_str()); co_return; }  // names the host and why
///     (void)co_await c->send_all("GET / HTTP/1.0\r\n\r\n");
///     char buf[4096];
///     auto n = co_await c->recv(buf, {.timeout = 5s});    // 0: the peer's close_notify
///
/// OpenSSL never touches the socket: it reads ciphertext from, and writes
/// records to, memory of the connection's own, and the connection moves
/// those bytes with the loop's ordinary recv and send. So every engine
/// (io_uring, epoll in both models, the fake) runs TLS, and deadlines,
/// stop tokens, a task's scope (with_timeout, when_any, JoinHandle::abort,
/// a task group) and lev::IdleDeadline cancel a TLS operation exactly as
/// they cancel the socket operation it waits on.
///
/// Concurrency: one receiving operation (recv) and one sending operation
/// (send, send_all, shutdown) may run at the same time, from two tasks;
/// a second of the same kind fails with errc::busy. handshake() runs
/// alone, first.
///
/// Cancellation (docs/cancellation.md, "TLS"): a cancelled or timed-out
/// handshake, send, send_all or shutdown leaves the connection unusable
/// (part of a record may be on the wire; every later operation fails with
/// errc::unusable: close the socket). A cancelled or timed-out recv that
/// was only waiting for bytes leaves it usable: what arrived stays
/// buffered, and the next recv goes on from there.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "lev/address.hpp"
#include "lev/buffer.hpp"
#include "lev/clock.hpp"
#include "lev/error.hpp"
#include "lev/fd.hpp"
#include "lev/loop.hpp"
#include "lev/task.hpp"

namespace lev::tls {

/// Errors of the TLS layer (category "tls"). Socket errors (a reset, a
/// timeout, a cancel) keep their own codes.
enum class errc {
  verify_failed =
      1,  ///< the peer's certificate was refused (the error's text says why, and the host)
  handshake_failed,  ///< the handshake failed: an alert, no shared version or cipher, garbage
  protocol_error,    ///< a bad record after the handshake (garbage, a failed decryption)
  truncated,         ///< the peer closed the socket without close_notify
  unusable,          ///< an earlier operation failed or was cancelled mid-record
  not_established,   ///< recv / send / shutdown before the handshake succeeded
  busy,              ///< a receiving (or sending) operation is already running
  shut_down,         ///< send after shutdown(): the close_notify is gone
  bad_config,        ///< a certificate, key or CA bundle could not be used
};
/// The category of tls::errc codes (name "tls").
const std::error_category& category() noexcept;
/// Makes tls::errc values usable as std::error_code.
inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), category()};
}

}  // namespace lev::tls

/// \cond detail
template <>
struct std::is_error_code_enum<lev::tls::errc> : std::true_type {};
/// \endcond

namespace lev::tls {

/// A protocol version (the lowest and highest a context accepts).
enum class Version {
  tls1_2,  ///< TLS 1.2
  tls1_3,  ///< TLS 1.3
};

/// A certificate chain (leaf first) and its private key, from PEM files or
/// from PEM text in memory.
struct Identity {
  std::string chain_file{};  ///< PEM file: the certificate, then its intermediates
  std::string key_file{};    ///< PEM file: the private key
  std::string chain_pem{};   ///< or the chain as PEM text (used when chain_file is empty)
  std::string key_pem{};     ///< or the key as PEM text (used when key_file is empty)

  /// From files.
  static Identity files(std::string chain, std::string key) {
    return {std::move(chain), std::move(key), {}, {}};
  }
  /// From PEM text.
  static Identity pem(std::string chain, std::string key) {
    return {{}, {}, std::move(chain), std::move(key)};
  }
  /// Something is set.
  [[nodiscard]] bool empty() const noexcept { return chain_file.empty() && chain_pem.empty(); }
};

/// A certificate a server shows to clients that ask for `name` by SNI.
struct NamedIdentity {
  /// A host name ("api.example.com") or a wildcard one level deep
  /// ("*.example.com"); compared without regard to case.
  std::string name{};
  Identity identity{};  ///< what is shown for that name
};

/// How a server context is set up.
struct ServerConfig {
  /// The certificate shown when the client sends no SNI, or a name no
  /// entry of `by_name` matches. Required.
  Identity identity{};
  /// Certificates chosen by the client's SNI, first match wins.
  std::vector<NamedIdentity> by_name{};
  /// ALPN protocols in the server's order of preference ("h2",
  /// "http/1.1"); the first one the client also offers is chosen. None in
  /// common, or a client offering none: the handshake goes on without ALPN
  /// (Connection::alpn() is empty).
  std::vector<std::string> alpn{};
  Version min_version = Version::tls1_2;  ///< the lowest version accepted
  Version max_version = Version::tls1_3;  ///< the highest version accepted
  /// Session resumption with tickets (stateless: nothing kept per session
  /// on the server). TLS 1.3 servers send `tickets` tickets after each
  /// full handshake.
  bool session_tickets = true;
  unsigned tickets = 2;  ///< TLS 1.3 tickets per full handshake
  /// Ask for kTLS (see ktls_unavailable()).
  bool ktls = true;
  /// OpenSSL cipher strings; empty = OpenSSL's defaults.
  std::string ciphers{};       ///< TLS 1.2 cipher list
  std::string ciphersuites{};  ///< TLS 1.3 cipher suites
};

/// How a client context is set up.
struct ClientConfig {
  /// Trusted CAs: a PEM bundle file, or PEM text; neither = the system's
  /// default store (OpenSSL's default paths).
  std::string ca_file{};
  std::string ca_pem{};  ///< PEM text of trusted CA certificates
  /// Verify the server's chain and, when the connection names a host,
  /// that the certificate is for it. Off only for tests you control.
  bool verify_peer = true;
  /// A client certificate, for servers that ask for one.
  std::optional<Identity> identity{};
  std::vector<std::string> alpn{};        ///< ALPN protocols offered, in order
  Version min_version = Version::tls1_2;  ///< the lowest version accepted
  Version max_version = Version::tls1_3;  ///< the highest version accepted
  /// Resume sessions: tickets the server sends are kept per host (and
  /// port, when connect() made the connection) and offered on the next
  /// connection to it (each TLS 1.3 ticket once).
  bool session_resumption = true;
  /// Ask for kTLS (see ktls_unavailable()).
  bool ktls = true;
  std::string ciphers{};       ///< TLS 1.2 cipher list; empty = OpenSSL's defaults
  std::string ciphersuites{};  ///< TLS 1.3 cipher suites; empty = OpenSSL's defaults
};

namespace detail {
struct ContextState;
struct ConnState;
/// What an operation waits on now, for IdleDeadline (cancel_for).
struct Waiting {
  void (*fn)(void* awaiter, lev::detail::Cancel why) noexcept = nullptr;
  void* arg = nullptr;
  lev::detail::Cancel pending = lev::detail::Cancel::none;  // asked while nothing waited

  void cancel(lev::detail::Cancel why) noexcept {
    if (fn)
      fn(arg, why);
    else if (pending == lev::detail::Cancel::none)
      pending = why;
  }
};
}  // namespace detail

/// Certificates, trust and protocol settings shared by many connections
/// (an OpenSSL SSL_CTX). Cheap to copy (a shared handle); usable from
/// several threads' loops at once.
class Context {
 public:
  /// A server context. errc::bad_config names the file (or "pem") and
  /// OpenSSL's reason when a certificate or key cannot be used, or when
  /// the key does not match its certificate.
  static Result<Context> server(ServerConfig config);
  /// A client context (errc::bad_config as for server()).
  static Result<Context> client(ClientConfig config);

  /// No context (valid() is false).
  Context() = default;
  /// A context is held.
  [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(s_); }
  /// Made by server().
  [[nodiscard]] bool is_server() const noexcept;
  /// Client sessions kept for resumption now (tests, monitoring).
  [[nodiscard]] std::size_t cached_sessions() const noexcept;

  /// For the runtime.
  [[nodiscard]] const std::shared_ptr<detail::ContextState>& state() const noexcept { return s_; }

 private:
  explicit Context(std::shared_ptr<detail::ContextState> s) noexcept : s_(std::move(s)) {}
  std::shared_ptr<detail::ContextState> s_;
};

/// What a TLS operation returns: `co_await` it for a `Result<T>`.
/// Bounded by `{.timeout}` over the whole operation, cancelled with its
/// task (scope or stop token), by `.stop_on(token)`, and by an
/// lev::IdleDeadline guarding it (`co_await idle(conn.recv(buf))`).
template <class T>
class [[nodiscard]] Op {
 public:
  /// For the runtime: the operation's coroutine, and what it waits on.
  Op(Task<Result<T>> task, detail::Waiting* waiting) noexcept
      : task_(std::move(task)), waiting_(waiting) {}
  /// Moves the operation (before it is awaited).
  Op(Op&&) noexcept = default;
  Op(const Op&) = delete;
  Op& operator=(const Op&) = delete;

  /// Cancelled (errc::operation_canceled) when `token` is stopped.
  Op stop_on(std::stop_token token) && noexcept {
    task_ = std::move(task_).with_stop_token(std::move(token));
    return std::move(*this);
  }

  /// The operation as a plain Task (for when_all, when_any, spawn).
  Task<Result<T>> task() && noexcept { return std::move(task_); }

  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    return typename Task<Result<T>>::Awaiter{task_.handle()}.await_suspend(h);
  }
  Result<T> await_resume() {
    return typename Task<Result<T>>::Awaiter{task_.handle()}.await_resume();
  }
  /// Cancels what the operation waits on now (IdleDeadline: `why` =
  /// Cancel::deadline, and the result reads errc::timed_out).
  void cancel_for(lev::detail::Cancel why) noexcept { waiting_->cancel(why); }

 private:
  Task<Result<T>> task_;
  detail::Waiting* waiting_;
};

/// One TLS connection over a connected socket it owns. Made by client()
/// or server(), then handshake(); or by tls::connect / accept_handler,
/// which hand it over established. Move-only; the operations it started
/// keep its state alive, but the Connection must outlive their use of the
/// socket (destroying it closes the socket). Loop thread only.
class Connection {
 public:
  /// The client side on the connected socket `fd`. `host` is the name the
  /// server is asked for (SNI) and that its certificate must carry (an IP
  /// address is checked as one, and sent without SNI); empty: no SNI and
  /// no name check (the chain is still verified when the context says
  /// so). Sessions for resumption are kept under `host` (tls::connect
  /// adds the port).
  static Connection client(Loop& loop, Fd fd, const Context& ctx, std::string host);
  /// The server side on the accepted socket `fd`.
  static Connection server(Loop& loop, Fd fd, const Context& ctx);

  /// No connection.
  Connection() = default;
  /// Moves the connection; the source is left empty.
  Connection(Connection&&) noexcept = default;
  /// Releases this connection (as the destructor does), then takes the other.
  Connection& operator=(Connection&&) noexcept = default;
  /// Closes the socket (no close_notify: call shutdown() first for one).
  ~Connection();

  /// Runs the handshake. Errors: errc::verify_failed (the text names the
  /// host and OpenSSL's reason: "example.com: certificate has expired"),
  /// errc::handshake_failed (an alert from the peer, garbage, nothing in
  /// common), errc::truncated (the peer closed), a socket error, or
  /// timed_out / operation_canceled (the connection is then unusable).
  /// Succeeds at once when already done.
  Op<void> handshake(IoOptions o = {});
  /// Decrypted bytes into `buf`; 0: the peer's close_notify (a clean end,
  /// and every later recv gives 0 too). The peer closing without one is
  /// errc::truncated; a bad record errc::protocol_error.
  Op<std::size_t> recv(MutableBuffer buf, IoOptions o = {});
  /// Encrypts up to 64 KiB of `buf` and sends the records: bytes taken.
  Op<std::size_t> send(ConstBuffer buf, IoOptions o = {});
  /// Encrypts and sends every byte of `buf` or fails (`transferred`: bytes
  /// whose records were all sent first).
  Op<std::size_t> send_all(ConstBuffer buf, IoOptions o = {});
  /// Sends close_notify (after anything still queued); the socket stays
  /// open (close it, or keep receiving the peer's close_notify: recv gives
  /// 0). Later sends fail with errc::shut_down.
  Op<void> shutdown(IoOptions o = {});

  /// A connection is held.
  [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(s_); }
  /// The socket, still owned (-1 when none).
  [[nodiscard]] int fd() const noexcept;
  /// The handshake has succeeded.
  [[nodiscard]] bool established() const noexcept;
  /// Failed or cancelled mid-record: only closing is left.
  [[nodiscard]] bool unusable() const noexcept;
  /// The ALPN protocol chosen ("" when none).
  [[nodiscard]] std::string_view alpn() const noexcept;
  /// The name the client asked for by SNI ("" when none): the host on a
  /// client, what the client sent on a server.
  [[nodiscard]] std::string_view server_name() const noexcept;
  /// "TLSv1.3", "TLSv1.2" (after the handshake).
  [[nodiscard]] std::string_view version() const noexcept;
  /// The cipher suite ("TLS_AES_128_GCM_SHA256").
  [[nodiscard]] std::string_view cipher() const noexcept;
  /// The handshake resumed a session (a ticket) instead of a full one.
  [[nodiscard]] bool resumed() const noexcept;
  /// Bytes buffered by this connection now (received and not yet
  /// decrypted, encrypted and not yet sent): what an idle connection holds.
  [[nodiscard]] std::size_t buffered() const noexcept;

  /// For the runtime (Stream over TLS).
  [[nodiscard]] const std::shared_ptr<detail::ConnState>& state() const noexcept { return s_; }
  /// For the runtime: a connection over `s`.
  explicit Connection(std::shared_ptr<detail::ConnState> s) noexcept : s_(std::move(s)) {}

 private:
  std::shared_ptr<detail::ConnState> s_;
};

/// How tls::connect tries.
struct ConnectOptions {
  /// For the whole call: lookup, TCP connect and handshake; zero = none.
  Duration timeout = std::chrono::seconds(30);
  /// The name to verify and send by SNI; empty = `host` itself.
  std::string server_name{};
};

/// net::connect to `host:port`, then the client handshake (`host`, or
/// options.server_name, is verified and sent by SNI): an established
/// connection, or the first error (resolution, connect, verification...).
Task<Result<Connection>> connect(Loop& loop, std::string host, std::uint16_t port, Context ctx,
                                 ConnectOptions options = {});

/// What an accept_handler's handler gets: an established connection.
using Handler = std::function<Task<>(Connection, SocketAddress)>;

/// How accept_handler handshakes.
struct AcceptOptions {
  /// The handshake's limit (a client that stalls it is dropped); zero = none.
  Duration handshake_timeout = std::chrono::seconds(10);
  /// Called for each failed handshake (not called: silently dropped).
  std::function<void(const Error&, const SocketAddress&)> on_handshake_error{};
};

/// A net::Acceptor handler that runs the server handshake on each accepted
/// socket under `options.handshake_timeout` and hands the established
/// connection to `handler`; a failed handshake closes the socket.
///
///     lev::net::Acceptor acc{loop, listener, lev::tls::accept_handler(ctx, serve)};
std::function<Task<>(Fd, SocketAddress)> accept_handler(Context ctx, Handler handler,
                                                        AcceptOptions options = {});

/// Whether the kernel can take over the record layer (kTLS: TCP_ULP "tls")
/// on this machine: empty when it can, else why not ("the kernel has no
/// TLS upper-layer protocol (CONFIG_TLS): ..."). Probed once per process,
/// on a loopback TCP connection, by the first handshake of a context with
/// `ktls` set (or by this call); what it found is logged once (lev/log.hpp,
/// info). lev keeps the records in user space either way for now: its
/// kernel path (the keys handed over after the handshake, records of other
/// types sent with a control message, never with zero-copy send) is not
/// built, so a kernel that has kTLS is named in that one line too.
const std::string& ktls_unavailable();

}  // namespace lev::tls
