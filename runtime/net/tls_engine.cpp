#include "net/tls_engine.hpp"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <cstring>
#include <new>

namespace lev::tls::detail {

namespace {

Engine& engine_of(BIO* b) noexcept { return *static_cast<Engine*>(BIO_get_data(b)); }

int on_bio_write(BIO* b, const char* data, int len) {
  BIO_clear_retry_flags(b);
  try {
    engine_of(b).bio_write(data, len);
  } catch (const std::bad_alloc&) {
    return -1;
  }
  return len;
}

int on_bio_read(BIO* b, char* out, int len) {
  BIO_clear_retry_flags(b);
  const int n = engine_of(b).bio_read(out, len);
  if (n == 0) {  // nothing received yet: not an end, a wait
    BIO_set_retry_read(b);
    return -1;
  }
  return n;
}

long on_bio_ctrl(BIO* b, int cmd, long, void*) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;  // what OpenSSL wrote is ours to send: flushed as far as it is concerned
    case BIO_CTRL_PENDING:
      return static_cast<long>(engine_of(b).input_size());
    default:
      return 0;  // no kTLS, no fd, nothing else
  }
}

int on_bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

int on_bio_destroy(BIO*) { return 1; }

}  // namespace

BIO_METHOD* bio_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "lev tls buffers");
    if (!m) throw std::bad_alloc();
    BIO_meth_set_write(m, on_bio_write);
    BIO_meth_set_read(m, on_bio_read);
    BIO_meth_set_ctrl(m, on_bio_ctrl);
    BIO_meth_set_create(m, on_bio_create);
    BIO_meth_set_destroy(m, on_bio_destroy);
    return m;
  }();
  return method;
}

std::string take_ssl_error() {
  std::string reason;
  unsigned long e = ERR_get_error();
  if (e != 0) {
    const char* r = ERR_reason_error_string(e);
    if (ERR_SYSTEM_ERROR(e)) {
      reason = std::strerror(ERR_GET_REASON(e));
    } else if (r) {
      reason = r;
    } else {
      char buf[256];
      ERR_error_string_n(e, buf, sizeof(buf));
      reason = buf;
    }
  }
  ERR_clear_error();
  return reason;
}

Engine::Engine(SSL* ssl) : ssl_(ssl) {
  BIO* bio = BIO_new(bio_method());
  if (!bio) {
    SSL_free(ssl);
    throw std::bad_alloc();
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // one BIO both ways; the SSL owns it (one reference)
  // OpenSSL takes whatever was received in one read (not a record header,
  // then its body), so a pool buffer is normally consumed whole.
  SSL_set_read_ahead(ssl_, 1);
}

Engine::~Engine() { SSL_free(ssl_); }

void Engine::feed(Buffer received) noexcept { cur_ = std::move(received); }

void Engine::feed_copy(std::string_view bytes) {
  if (spos_ == spill_.size()) {
    spill_.clear();
    spos_ = 0;
  }
  spill_.append(bytes);
}

int Engine::bio_read(char* out, int len) noexcept {
  if (len <= 0) return 0;
  const auto want = static_cast<std::size_t>(len);
  std::size_t n = 0;
  if (spos_ < spill_.size()) {
    n = std::min(want, spill_.size() - spos_);
    std::memcpy(out, spill_.data() + spos_, n);
    spos_ += n;
    if (spos_ == spill_.size()) {
      spill_.clear();
      spos_ = 0;
    }
  }
  if (n < want && !cur_.empty()) {
    const std::size_t k = std::min(want - n, cur_.size());
    std::memcpy(out + n, cur_.data(), k);
    cur_.remove_prefix(k);
    n += k;
    if (cur_.empty()) cur_.reset();  // back to the pool at once
  }
  return static_cast<int>(n);
}

void Engine::bio_write(const char* data, int len) {
  out_.append(data, static_cast<std::size_t>(len));
}

std::string_view Engine::next_output() {
  if (opos_ == sending_.size()) {
    sending_.clear();
    opos_ = 0;
    sending_.swap(out_);  // both keep their capacity
  }
  return {sending_.data() + opos_, sending_.size() - opos_};
}

// A pool buffer OpenSSL did not read to its end is copied out and given
// back: a connection never holds one of the loop's buffers between steps.
void Engine::park_input() {
  if (cur_.empty()) return;
  feed_copy(cur_.view());
  cur_.reset();
}

Status Engine::fail(int ret) {
  const int err = SSL_get_error(ssl_, ret);
  switch (err) {
    case SSL_ERROR_WANT_READ:
      return Status::want_read;
    case SSL_ERROR_ZERO_RETURN:
      return Status::closed;
    default:
      break;
  }
  failure_ = {};
  const long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK && (SSL_get_verify_mode(ssl_) & SSL_VERIFY_PEER)) {
    failure_.verify = true;
    failure_.reason = X509_verify_cert_error_string(verify);
    ERR_clear_error();
  } else {
    failure_.reason = take_ssl_error();
    if (failure_.reason.empty())
      failure_.reason = err == SSL_ERROR_WANT_WRITE ? "unexpected write wait" : "unexpected end";
  }
  return Status::failed;
}

Status Engine::handshake() {
  ERR_clear_error();
  const int r = SSL_do_handshake(ssl_);
  Status s = r == 1 ? Status::ok : fail(r);
  park_input();
  return s;
}

Step Engine::read(std::span<char> buf) {
  ERR_clear_error();
  std::size_t n = 0;
  const int r = SSL_read_ex(ssl_, buf.data(), buf.size(), &n);
  Step s{r == 1 ? Status::ok : fail(r), n};
  park_input();
  return s;
}

Step Engine::write(std::span<const char> buf) {
  ERR_clear_error();
  std::size_t n = 0;
  const int r = SSL_write_ex(ssl_, buf.data(), buf.size(), &n);
  if (r == 1) return {Status::ok, n};
  Status s = fail(r);
  // Writing never waits for the peer (renegotiation is refused), and our
  // BIO takes every byte: any other outcome is fatal.
  if (s != Status::failed) {
    failure_.reason = "TLS write wanted to read";
    s = Status::failed;
  }
  return {s, 0};
}

Status Engine::shutdown() {
  ERR_clear_error();
  const int r = SSL_shutdown(ssl_);
  if (r >= 0) return Status::ok;  // 0: sent, the peer's not seen yet; 1: both
  Status s = fail(r);
  return s == Status::want_read ? Status::ok : Status::failed;
}

}  // namespace lev::tls::detail
