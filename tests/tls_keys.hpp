#pragma once
// TLS contexts for code that cannot run the openssl command (the fuzz
// target, the simulation, the conformance matrix): a throw-away P-256 key
// and self-signed certificate made in memory once per process; the client
// does not verify (its peer is the server in the same process), kTLS is
// not asked for.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <string>
#include <utility>

#include "lev/net/tls.hpp"

namespace lev::test {

struct MemoryTls {
  lev::tls::Context server, client;
  // The server's certificate and key, for a peer of its own (conformance).
  std::string cert_pem, key_pem;
};

inline const MemoryTls& memory_tls() {
  static const MemoryTls k = [] {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600L * 24 * 365);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("lev test"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_sign(cert, key, EVP_sha256());
    auto pem = [](auto write) {
      BIO* b = BIO_new(BIO_s_mem());
      write(b);
      char* data = nullptr;
      const long n = BIO_get_mem_data(b, &data);
      std::string out(data, static_cast<std::size_t>(n));
      BIO_free(b);
      return out;
    };
    const std::string cert_pem = pem([&](BIO* b) { PEM_write_bio_X509(b, cert); });
    const std::string key_pem = pem(
        [&](BIO* b) { PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr); });
    X509_free(cert);
    EVP_PKEY_free(key);
    MemoryTls out;
    lev::tls::ServerConfig sc{};
    sc.identity = lev::tls::Identity::pem(cert_pem, key_pem);
    sc.ktls = false;
    out.server = lev::tls::Context::server(std::move(sc)).value();
    lev::tls::ClientConfig cc{};
    cc.verify_peer = false;
    cc.session_resumption = false;
    cc.ktls = false;
    out.client = lev::tls::Context::client(std::move(cc)).value();
    out.cert_pem = cert_pem;
    out.key_pem = key_pem;
    return out;
  }();
  return k;
}

}  // namespace lev::test
