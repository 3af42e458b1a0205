#pragma once
// The test's side of the conformance suite's TLS rows (forms_tls.hpp):
// OpenSSL over memory BIOs at the other end of the connection's socket,
// its bytes moved with plain nonblocking syscalls (never through the
// engine under test), so that a row chooses what reaches the wire and
// when: nothing yet, half a record, or an end without close_notify.
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "../tls_keys.hpp"
#include "conformance/world.hpp"

namespace lev::conformance {

/// The peer's OpenSSL contexts, from memory_tls()'s certificate: a server
/// that sends no session ticket (nothing unasked for after the handshake),
/// a client that verifies nothing (its peer is lev, in this process).
/// Made once per process, never freed.
inline SSL_CTX* peer_context(bool server) {
  static SSL_CTX* const srv = [] {
    SSL_CTX* c = SSL_CTX_new(TLS_server_method());
    const test::MemoryTls& k = test::memory_tls();
    BIO* cert = BIO_new_mem_buf(k.cert_pem.data(), static_cast<int>(k.cert_pem.size()));
    BIO* key = BIO_new_mem_buf(k.key_pem.data(), static_cast<int>(k.key_pem.size()));
    X509* x = PEM_read_bio_X509(cert, nullptr, nullptr, nullptr);
    EVP_PKEY* pk = PEM_read_bio_PrivateKey(key, nullptr, nullptr, nullptr);
    const bool ok =
        c && x && pk && SSL_CTX_use_certificate(c, x) == 1 && SSL_CTX_use_PrivateKey(c, pk) == 1;
    X509_free(x);
    EVP_PKEY_free(pk);
    BIO_free(cert);
    BIO_free(key);
    if (!ok) throw std::runtime_error("conformance: the TLS peer's server context");
    SSL_CTX_set_num_tickets(c, 0);
    return c;
  }();
  static SSL_CTX* const cli = [] {
    SSL_CTX* c = SSL_CTX_new(TLS_client_method());
    if (!c) throw std::runtime_error("conformance: the TLS peer's client context");
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
    return c;
  }();
  return server ? srv : cli;
}

/// One end of a TLS connection, driven by step(): what the socket holds
/// goes into OpenSSL (after `skip` bytes of filler), OpenSSL goes on
/// (the handshake, then reading), and what it wrote goes out.
class TlsPeer {
 public:
  TlsPeer(Fd fd, bool server) : fd_(std::move(fd)), ssl_(SSL_new(peer_context(server))) {
    if (!ssl_) throw std::runtime_error("conformance: SSL_new");
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(in, -1);  // empty: "want more", not an end
    SSL_set_bio(ssl_, in, out);
    if (server)
      SSL_set_accept_state(ssl_);
    else
      SSL_set_connect_state(ssl_);
  }
  TlsPeer(const TlsPeer&) = delete;
  TlsPeer& operator=(const TlsPeer&) = delete;
  ~TlsPeer() { SSL_free(ssl_); }

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  /// `n` more bytes ahead in the socket are filler: dropped unread.
  void skip(std::size_t n) noexcept { skip_ += n; }

  /// Moves what can move now; whether anything did.
  bool step() {
    bool moved = receive();
    if (!SSL_is_init_finished(ssl_) && !failed_) {
      ERR_clear_error();
      const int r = SSL_do_handshake(ssl_);
      if (r <= 0 && SSL_get_error(ssl_, r) != SSL_ERROR_WANT_READ) fail("handshake");
    }
    if (SSL_is_init_finished(ssl_)) moved |= read_plaintext();
    moved |= flush();
    return moved;
  }
  [[nodiscard]] bool established() const noexcept { return SSL_is_init_finished(ssl_) == 1; }
  /// The plaintext read so far.
  [[nodiscard]] const std::string& plaintext() const noexcept { return plain_; }
  /// The connection's close_notify has arrived.
  [[nodiscard]] bool got_close_notify() const noexcept { return close_notify_; }
  /// What went wrong on this side ("" when nothing).
  [[nodiscard]] const std::string& error() const noexcept { return error_; }

  /// The records carrying `data`, not sent (send_raw sends bytes of them).
  std::string records(std::string_view data) {
    flush();  // what OpenSSL wrote before goes first
    ERR_clear_error();
    if (SSL_write(ssl_, data.data(), static_cast<int>(data.size())) !=
        static_cast<int>(data.size()))
      throw std::runtime_error("conformance: the TLS peer's SSL_write failed");
    std::string out;
    char buf[4096];
    for (int n; (n = BIO_read(SSL_get_wbio(ssl_), buf, sizeof(buf))) > 0;)
      out.append(buf, static_cast<std::size_t>(n));
    return out;
  }
  /// Bytes onto the wire (after anything still waiting to go).
  void send_raw(std::string_view bytes) {
    outbox_.append(bytes);
    flush();
  }
  /// The socket's end, without close_notify.
  void end_without_close_notify() { ::shutdown(fd_.get(), SHUT_WR); }
  /// Bytes read off the socket by someone else (a reader thread), in order.
  void take(std::string_view raw) {
    const std::size_t drop = std::min(skip_, raw.size());
    skip_ -= drop;
    raw.remove_prefix(drop);
    if (!raw.empty()) BIO_write(SSL_get_rbio(ssl_), raw.data(), static_cast<int>(raw.size()));
  }

 private:
  void fail(const char* what) {
    failed_ = true;
    char e[256];
    ERR_error_string_n(ERR_get_error(), e, sizeof(e));
    error_ = std::string("the TLS peer's ") + what + " failed: " + e;
  }
  bool receive() {
    bool moved = false;
    char buf[16384];
    for (int i = 0; i < 64; ++i) {
      const ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), MSG_DONTWAIT);
      if (n <= 0) break;
      moved = true;
      take(std::string_view(buf, static_cast<std::size_t>(n)));
    }
    return moved;
  }
  bool read_plaintext() {
    bool moved = false;
    char buf[16384];
    while (!failed_ && !close_notify_) {
      ERR_clear_error();
      const int n = SSL_read(ssl_, buf, sizeof(buf));
      if (n > 0) {
        plain_.append(buf, static_cast<std::size_t>(n));
        moved = true;
        continue;
      }
      const int e = SSL_get_error(ssl_, n);
      if (e == SSL_ERROR_ZERO_RETURN) {
        close_notify_ = moved = true;
      } else if (e != SSL_ERROR_WANT_READ) {
        fail("read");
      }
      break;
    }
    return moved;
  }
  bool flush() {
    char buf[4096];
    for (int n; (n = BIO_read(SSL_get_wbio(ssl_), buf, sizeof(buf))) > 0;)
      outbox_.append(buf, static_cast<std::size_t>(n));
    bool moved = false;
    while (!outbox_.empty()) {
      const ssize_t n =
          ::send(fd_.get(), outbox_.data(), outbox_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n <= 0) break;
      outbox_.erase(0, static_cast<std::size_t>(n));
      moved = true;
    }
    return moved;
  }

  Fd fd_;
  SSL* ssl_;
  std::size_t skip_ = 0;
  std::string outbox_, plain_, error_;
  bool close_notify_ = false, failed_ = false;
};

}  // namespace lev::conformance
