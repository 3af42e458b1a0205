#pragma once
// The record plumbing of a TLS connection: one OpenSSL SSL object between
// two byte buffers of ours. OpenSSL reads ciphertext from `input` and
// writes records to `output` through a BIO of this file's; it never sees a
// socket. Synchronous and free of I/O: the connection's coroutines
// (tls.cpp) move the bytes between these buffers and the socket with the
// loop's recv and send, and the fuzz target drives it directly.

#include <openssl/ssl.h>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "lev/buffer.hpp"

namespace lev::tls::detail {

/// What a step of the engine came to.
enum class Status {
  ok,         ///< done (handshake, shutdown) or bytes moved (read, write)
  want_read,  ///< more ciphertext is needed: receive, feed, step again
  closed,     ///< read: the peer's close_notify (a clean end)
  failed,     ///< fatal: see Engine::failure()
};

/// One step's outcome: a status and the plaintext bytes moved.
struct Step {
  Status status;
  std::size_t n = 0;
};

/// Why the engine failed, as OpenSSL said it.
struct Failure {
  bool verify = false;   ///< the peer's certificate was refused
  std::string reason{};  ///< OpenSSL's reason ("wrong version number", "certificate has expired")
};

class Engine {
 public:
  /// Takes ownership of `ssl` and connects it to this engine's buffers.
  explicit Engine(SSL* ssl);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  ~Engine();

  // ---- ciphertext in: a pool buffer received, then a copy of its rest --
  /// Hands `received` to OpenSSL's next reads. Requires input_empty().
  void feed(Buffer received) noexcept;
  /// Copies `bytes` in (the fuzz target, tests).
  void feed_copy(std::string_view bytes);
  /// Nothing received is waiting to be read by OpenSSL.
  [[nodiscard]] bool input_empty() const noexcept { return spill_.size() == spos_ && cur_.empty(); }
  /// Bytes received and not yet read by OpenSSL.
  [[nodiscard]] std::size_t input_size() const noexcept {
    return spill_.size() - spos_ + cur_.size();
  }

  // ---- ciphertext out: records OpenSSL wrote, not yet sent ----------------
  /// The next bytes to send; stays valid (and unchanged) until
  /// output_sent(), however much OpenSSL writes meanwhile.
  [[nodiscard]] std::string_view next_output();
  /// `n` bytes of next_output() went out.
  void output_sent(std::size_t n) noexcept { opos_ += n; }
  /// Bytes waiting to be sent.
  [[nodiscard]] std::size_t output_size() const noexcept {
    return sending_.size() - opos_ + out_.size();
  }
  /// With nothing left to send, gives back output buffers of more than
  /// `keep` bytes (0: all of them): an idle connection holds no memory for
  /// the handshake's flight or the last large send.
  void trim_output(std::size_t keep) noexcept {
    if (output_size() != 0) return;
    opos_ = 0;
    sending_.clear();  // all of it was sent
    if (sending_.capacity() > keep) std::string().swap(sending_);
    if (out_.capacity() > keep) std::string().swap(out_);
  }

  // ---- TLS -----------------------------------------------------------------
  Status handshake();
  /// Decrypts into `buf` (ok with n > 0, closed, want_read or failed).
  Step read(std::span<char> buf);
  /// Encrypts all of `buf` into output (ok with n = buf.size(), or failed).
  Step write(std::span<const char> buf);
  /// Queues close_notify (ok, or failed).
  Status shutdown();
  /// What the last `failed` step was.
  [[nodiscard]] const Failure& failure() const noexcept { return failure_; }
  [[nodiscard]] SSL* ssl() const noexcept { return ssl_; }
  /// Nothing to read without receiving first: no ciphertext waiting here
  /// and none buffered (or decrypted) inside OpenSSL. A read now could
  /// only say want_read.
  [[nodiscard]] bool starved() const noexcept {
    return input_empty() && SSL_has_pending(ssl_) == 0;
  }

  // The BIO's side (tls_engine.cpp).
  int bio_read(char* out, int len) noexcept;
  void bio_write(const char* data, int len);

 private:
  Status fail(int ret);
  void park_input();

  SSL* ssl_;
  Buffer cur_;         // the pool buffer being read
  std::string spill_;  // bytes of a pool buffer OpenSSL left unread, copied out
  std::size_t spos_ = 0;
  std::string out_;      // OpenSSL appends records here
  std::string sending_;  // what the socket send reads (unchanged while a send runs)
  std::size_t opos_ = 0;
  Failure failure_;
};

/// The library's BIO method (made once).
BIO_METHOD* bio_method();
/// OpenSSL's reason for the oldest error queued, and clears the queue.
std::string take_ssl_error();

}  // namespace lev::tls::detail
