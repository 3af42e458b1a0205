#pragma once
// A throw-away PKI for the TLS tests, made at test time with the openssl
// command (no private key is committed): a CA, certificates it signs for
// localhost / 127.0.0.1 and for other.test, and a rogue CA nobody trusts
// with a localhost certificate of its own. Made once per process in a
// TempDir, removed at exit.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "temp_dir.hpp"

namespace lev::test {

/// Why the openssl command cannot be used here (empty: it can).
inline const std::string& openssl_missing() {
  static const std::string why = [] {
    if (std::system("openssl version >/dev/null 2>&1") != 0)
      return std::string("the openssl command is missing (Debian: apt install openssl)");
    return std::string();
  }();
  return why;
}

/// A program on PATH (`command -v`).
inline bool have_program(const char* name) {
  const std::string cmd = std::string("command -v ") + name + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Pki {
  std::string dir;
  std::string ca;                     // trusted CA (PEM)
  std::string cert, key;              // localhost, 127.0.0.1 (signed by ca)
  std::string other_cert, other_key;  // other.test (signed by ca)
  std::string rogue_cert, rogue_key;  // localhost, signed by a CA nobody trusts
};

/// The PKI, made on first use (throws std::runtime_error when openssl fails).
inline const Pki& pki() {
  static const TempDir dir("tls");  // outlives `p`: made before it
  static const Pki p = [] {
    Pki k;
    k.dir = dir.path();
    const std::string script =
        "set -e; cd '" + k.dir +
        "'\n"
        "ec='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'\n"
        "ca_ext='-addext basicConstraints=critical,CA:TRUE -addext "
        "keyUsage=critical,keyCertSign,cRLSign'\n"
        "openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj '/CN=lev test CA' $ca_ext\n"
        "openssl req -x509 $ec -keyout rogue-ca.key -out rogue-ca.pem -days 2 -subj '/CN=rogue CA' "
        "$ca_ext\n"
        "leaf() { # name san ca\n"
        "  openssl req $ec -keyout $1.key -out $1.csr -subj /CN=$1\n"
        "  printf "
        "'subjectAltName=%s\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth,"
        "clientAuth\\n' \"$2\" > $1.ext\n"
        "  openssl x509 -req -in $1.csr -CA $3.pem -CAkey $3.key -CAcreateserial -out $1.pem -days "
        "2 -extfile $1.ext\n"
        "}\n"
        "leaf localhost DNS:localhost,IP:127.0.0.1 ca\n"
        "leaf other.test DNS:other.test,DNS:*.other.test ca\n"
        "leaf rogue DNS:localhost,IP:127.0.0.1 rogue-ca\n";
    const std::string path = k.dir + "/make.sh";
    std::ofstream(path) << script;
    if (std::system(("sh '" + path + "' >'" + k.dir + "/make.log' 2>&1").c_str()) != 0)
      throw std::runtime_error("openssl could not make the test PKI: see " + k.dir + "/make.log");
    k.ca = k.dir + "/ca.pem";
    k.cert = k.dir + "/localhost.pem";
    k.key = k.dir + "/localhost.key";
    k.other_cert = k.dir + "/other.test.pem";
    k.other_key = k.dir + "/other.test.key";
    k.rogue_cert = k.dir + "/rogue.pem";
    k.rogue_key = k.dir + "/rogue.key";
    return k;
  }();
  return p;
}

}  // namespace lev::test
