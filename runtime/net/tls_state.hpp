#pragma once
// What a tls::Context and a tls::Connection hold (shared by tls.cpp,
// tls_context.cpp and stream.cpp).

#include <openssl/ssl.h>

#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lev/detail/waiter.hpp"
#include "lev/fd.hpp"
#include "lev/net/tls.hpp"
#include "net/tls_engine.hpp"

namespace lev::tls::detail {

/// An SSL_CTX and what its callbacks need.
struct ContextState {
  SSL_CTX* ctx = nullptr;
  bool server = false;
  bool ktls = false;  // the config asked for kTLS: the first handshake probes
  // Server: contexts chosen by SNI (name lower-cased; "*.x" a wildcard).
  std::vector<std::pair<std::string, SSL_CTX*>> by_name;
  std::vector<unsigned char> alpn;  // wire format: the server's preferences, the client's offer
  // Client: sessions to resume, by host (and port), oldest first.
  mutable std::mutex mu;
  std::unordered_map<std::string, std::deque<SSL_SESSION*>> sessions;
  std::size_t session_count = 0;

  ContextState() = default;
  ContextState(const ContextState&) = delete;
  ContextState& operator=(const ContextState&) = delete;
  ~ContextState();

  /// Client: a kept session for `key` (the caller frees it), or nullptr.
  SSL_SESSION* take_session(const std::string& key);
  /// Client: keeps `s` (its reference) for `key`.
  void keep_session(const std::string& key, SSL_SESSION* s);
};

/// The SSL ex_data slot that holds a client connection's session key.
int session_key_index();

/// One connection: the socket, the engine, and who uses which side.
struct ConnState {
  Loop* loop = nullptr;
  Fd fd;
  std::shared_ptr<ContextState> ctx;
  Engine engine;
  std::string host;         // client: SNI and the verified name
  std::string session_key;  // client: where its sessions are kept
  std::string alpn;         // chosen (after the handshake)
  bool established = false;
  bool broken = false;               // failed or cancelled mid-record: errc::unusable from now on
  bool peer_closed = false;          // close_notify received: recv gives 0
  bool peer_eof = false;             // the socket ended without close_notify: errc::truncated
  bool sent_close = false;           // shutdown() queued close_notify
  bool rx_busy = false;              // a recv (or the handshake) runs
  bool tx_busy = false;              // a send, send_all or shutdown (or the handshake) runs
  bool sending = false;              // someone runs the socket send loop
  lev::detail::WaitList tx_waiters;  // tasks whose records the running send loop carries
  Waiting rx_wait;                   // what the receiving operation waits on now
  Waiting tx_wait;                   // what the sending operation waits on now

  ConnState(Loop& l, Fd f, std::shared_ptr<ContextState> c, SSL* ssl)
      : loop(&l), fd(std::move(f)), ctx(std::move(c)), engine(ssl) {}
  ConnState(const ConnState&) = delete;
  ConnState& operator=(const ConnState&) = delete;
};

}  // namespace lev::tls::detail
