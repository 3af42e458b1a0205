// tls::Context: an SSL_CTX set up from a config (certificates from files
// or PEM text, trust, versions, ALPN, SNI, tickets), and the client's
// session cache for resumption.
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <string>

#include "lev/net/tls.hpp"
#include "net/tls_state.hpp"

namespace lev::tls {

const std::error_category& category() noexcept {
  struct Category final : std::error_category {
    const char* name() const noexcept override { return "tls"; }
    std::string message(int v) const override {
      switch (static_cast<errc>(v)) {
        case errc::verify_failed:
          return "TLS peer certificate verification failed";
        case errc::handshake_failed:
          return "TLS handshake failed";
        case errc::protocol_error:
          return "TLS protocol error";
        case errc::truncated:
          return "TLS connection truncated: the peer closed without close_notify";
        case errc::unusable:
          return "TLS connection unusable after a failed or cancelled operation";
        case errc::not_established:
          return "TLS handshake not done";
        case errc::busy:
          return "another TLS operation of this kind is running on the connection";
        case errc::shut_down:
          return "TLS connection shut down (close_notify sent)";
        case errc::bad_config:
          return "TLS configuration rejected";
      }
      return "unknown TLS error " + std::to_string(v);
    }
  };
  static const Category c;
  return c;
}

namespace detail {

namespace {

constexpr std::size_t kSessionsPerKey = 4;
constexpr std::size_t kSessionsMax = 4096;

Error config_error(std::string_view what, const std::string& reason) {
  std::string text(what);
  text += ": ";
  text += reason.empty() ? "unusable" : reason;
  return Error{make_error_code(errc::bad_config), "tls context"}.with_path(text);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// "*.example.com" matches "a.example.com", not "example.com" nor "a.b.example.com".
bool name_matches(const std::string& pattern, const std::string& name) {
  if (pattern.size() > 2 && pattern[0] == '*' && pattern[1] == '.') {
    const std::size_t dot = name.find('.');
    return dot != std::string::npos && dot > 0 &&
           name.compare(dot, std::string::npos, pattern, 1) == 0;
  }
  return pattern == name;
}

Result<std::vector<unsigned char>> alpn_wire(const std::vector<std::string>& protocols) {
  std::vector<unsigned char> wire;
  for (const std::string& p : protocols) {
    if (p.empty() || p.size() > 255)
      return config_error("alpn", "a protocol name must be 1 to 255 bytes");
    wire.push_back(static_cast<unsigned char>(p.size()));
    wire.insert(wire.end(), p.begin(), p.end());
  }
  return wire;
}

Result<void> use_identity(SSL_CTX* ctx, const Identity& id) {
  if (!id.chain_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, id.chain_file.c_str()) != 1)
      return config_error(id.chain_file, take_ssl_error());
  } else {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(id.chain_pem.data(), static_cast<int>(id.chain_pem.size())), &BIO_free);
    X509* leaf = bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr;
    if (!leaf) return config_error("certificate pem", take_ssl_error());
    const int ok = SSL_CTX_use_certificate(ctx, leaf);
    X509_free(leaf);
    if (ok != 1) return config_error("certificate pem", take_ssl_error());
    SSL_CTX_clear_chain_certs(ctx);
    while (X509* c = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
      if (SSL_CTX_add0_chain_cert(ctx, c) != 1) {
        X509_free(c);
        return config_error("certificate pem", take_ssl_error());
      }
    ERR_clear_error();  // the end of the text reads as "no start line"
  }
  if (!id.key_file.empty()) {
    if (SSL_CTX_use_PrivateKey_file(ctx, id.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
      return config_error(id.key_file, take_ssl_error());
  } else {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(id.key_pem.data(), static_cast<int>(id.key_pem.size())), &BIO_free);
    EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
    if (!key) return config_error("key pem", take_ssl_error());
    const int ok = SSL_CTX_use_PrivateKey(ctx, key);
    EVP_PKEY_free(key);
    if (ok != 1) return config_error("key pem", take_ssl_error());
  }
  if (SSL_CTX_check_private_key(ctx) != 1)
    return config_error(id.key_file.empty() ? "key pem" : id.key_file,
                        "the key does not match the certificate");
  return {};
}

// What every context of ours has: versions, ciphers, no renegotiation,
// buffers released when idle.
Result<SSL_CTX*> new_ctx(bool server, Version min, Version max, const std::string& ciphers,
                         const std::string& suites) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx) return config_error("SSL_CTX_new", take_ssl_error());
  SSL_CTX_set_min_proto_version(ctx, min == Version::tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, max == Version::tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               (server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
  // An idle connection keeps no record buffers; no partial write is
  // reported (our BIO takes every byte).
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (!ciphers.empty() && SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1) {
    SSL_CTX_free(ctx);
    return config_error("ciphers " + ciphers, take_ssl_error());
  }
  if (!suites.empty() && SSL_CTX_set_ciphersuites(ctx, suites.c_str()) != 1) {
    SSL_CTX_free(ctx);
    return config_error("ciphersuites " + suites, take_ssl_error());
  }
  return ctx;
}

int on_alpn_select(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                   unsigned inlen, void* arg) {
  const auto& prefs = static_cast<ContextState*>(arg)->alpn;
  for (std::size_t i = 0; i < prefs.size(); i += 1u + prefs[i]) {
    const unsigned len = prefs[i];
    for (unsigned j = 0; j < inlen; j += 1u + in[j]) {
      if (in[j] == len && j + 1 + len <= inlen &&
          std::equal(in + j + 1, in + j + 1 + len, &prefs[i + 1])) {
        *out = &prefs[i + 1];
        *outlen = static_cast<unsigned char>(len);
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_NOACK;  // nothing in common: go on without ALPN
}

int on_servername(SSL* ssl, int*, void* arg) {
  const auto& st = *static_cast<ContextState*>(arg);
  const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!sni) return SSL_TLSEXT_ERR_OK;
  const std::string name = lower(sni);
  for (const auto& [pattern, ctx] : st.by_name)
    if (name_matches(pattern, name)) {
      SSL_set_SSL_CTX(ssl, ctx);
      break;
    }
  return SSL_TLSEXT_ERR_OK;
}

int on_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* key = static_cast<const std::string*>(SSL_get_ex_data(ssl, session_key_index()));
  auto* st = static_cast<ContextState*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (!key || !st || key->empty()) return 0;
  st->keep_session(*key, session);
  return 1;  // the reference is ours now
}

// The server side of a context: its identity, ALPN and tickets.
Result<void> setup_server(SSL_CTX* ctx, ContextState& st, const ServerConfig& c,
                          const Identity& id) {
  if (auto r = use_identity(ctx, id); !r) return r;
  SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const unsigned char*>("lev"), 3);
  // Stateless tickets only: nothing is kept per session on the server.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (c.session_tickets) {
    SSL_CTX_set_num_tickets(ctx, c.tickets);
  } else {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  if (!st.alpn.empty()) SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, &st);
  return {};
}

}  // namespace

int session_key_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

ContextState::~ContextState() {
  for (auto& [key, list] : sessions)
    for (SSL_SESSION* s : list) SSL_SESSION_free(s);
  for (auto& [name, c] : by_name) SSL_CTX_free(c);
  if (ctx) SSL_CTX_free(ctx);
}

SSL_SESSION* ContextState::take_session(const std::string& key) {
  const std::lock_guard<std::mutex> lock(mu);
  auto it = sessions.find(key);
  while (it != sessions.end() && !it->second.empty()) {
    SSL_SESSION* s = it->second.front();
    it->second.pop_front();
    --session_count;
    if (it->second.empty()) sessions.erase(it), it = sessions.end();
    if (SSL_SESSION_is_resumable(s)) return s;
    SSL_SESSION_free(s);
  }
  return nullptr;
}

void ContextState::keep_session(const std::string& key, SSL_SESSION* s) {
  const std::lock_guard<std::mutex> lock(mu);
  if (session_count >= kSessionsMax && !sessions.empty()) {  // full: forget one host's
    auto victim = sessions.begin();
    for (SSL_SESSION* old : victim->second) SSL_SESSION_free(old);
    session_count -= victim->second.size();
    sessions.erase(victim);
  }
  auto& list = sessions[key];
  list.push_back(s);
  ++session_count;
  if (list.size() > kSessionsPerKey) {
    SSL_SESSION_free(list.front());
    list.pop_front();
    --session_count;
  }
}

}  // namespace detail

Result<Context> Context::server(ServerConfig c) {
  if (c.identity.empty())
    return detail::config_error("server", "a server context needs a certificate (identity)");
  auto st = std::make_shared<detail::ContextState>();
  st->server = true;
  st->ktls = c.ktls;
  auto wire = detail::alpn_wire(c.alpn);
  if (!wire) return wire.error();
  st->alpn = std::move(*wire);
  auto ctx = detail::new_ctx(true, c.min_version, c.max_version, c.ciphers, c.ciphersuites);
  if (!ctx) return ctx.error();
  st->ctx = *ctx;
  if (auto r = detail::setup_server(st->ctx, *st, c, c.identity); !r) return r.error();
  for (const NamedIdentity& n : c.by_name) {
    auto named = detail::new_ctx(true, c.min_version, c.max_version, c.ciphers, c.ciphersuites);
    if (!named) return named.error();
    st->by_name.emplace_back(detail::lower(n.name), *named);
    if (auto r = detail::setup_server(*named, *st, c, n.identity); !r) return r.error();
  }
  if (!st->by_name.empty()) {
    SSL_CTX_set_tlsext_servername_callback(st->ctx, detail::on_servername);
    SSL_CTX_set_tlsext_servername_arg(st->ctx, st.get());
  }
  return Context(std::move(st));
}

Result<Context> Context::client(ClientConfig c) {
  auto st = std::make_shared<detail::ContextState>();
  st->ktls = c.ktls;
  auto wire = detail::alpn_wire(c.alpn);
  if (!wire) return wire.error();
  st->alpn = std::move(*wire);
  auto ctx = detail::new_ctx(false, c.min_version, c.max_version, c.ciphers, c.ciphersuites);
  if (!ctx) return ctx.error();
  st->ctx = *ctx;
  SSL_CTX* x = st->ctx;
  if (!c.ca_file.empty()) {
    if (SSL_CTX_load_verify_file(x, c.ca_file.c_str()) != 1)
      return detail::config_error(c.ca_file, detail::take_ssl_error());
  } else if (!c.ca_pem.empty()) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(c.ca_pem.data(), static_cast<int>(c.ca_pem.size())), &BIO_free);
    X509_STORE* store = SSL_CTX_get_cert_store(x);
    int added = 0;
    while (X509* cert = bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr) {
      X509_STORE_add_cert(store, cert);
      X509_free(cert);
      ++added;
    }
    ERR_clear_error();
    if (added == 0) return detail::config_error("ca pem", "no certificate in the text");
  } else if (c.verify_peer && SSL_CTX_set_default_verify_paths(x) != 1) {
    return detail::config_error("the system's CA store", detail::take_ssl_error());
  }
  SSL_CTX_set_verify(x, c.verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  if (c.identity)
    if (auto r = detail::use_identity(x, *c.identity); !r) return r.error();
  if (!st->alpn.empty() &&
      SSL_CTX_set_alpn_protos(x, st->alpn.data(), static_cast<unsigned>(st->alpn.size())) != 0)
    return detail::config_error("alpn", detail::take_ssl_error());
  if (c.session_resumption) {
    SSL_CTX_set_session_cache_mode(x, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_set_app_data(x, st.get());
    SSL_CTX_sess_set_new_cb(x, detail::on_new_session);
  } else {
    SSL_CTX_set_session_cache_mode(x, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(x, SSL_OP_NO_TICKET);
  }
  return Context(std::move(st));
}

bool Context::is_server() const noexcept { return s_ && s_->server; }

std::size_t Context::cached_sessions() const noexcept {
  if (!s_) return 0;
  const std::lock_guard<std::mutex> lock(s_->mu);
  return s_->session_count;
}

}  // namespace lev::tls
