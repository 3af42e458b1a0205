// The TLS examples as users run them: tls_echo's server and client,
// http_hello --tls-cert/--tls-key under curl --cacert and openssl s_client,
// on both engine models; and idle TLS connections held against them, with
// the server's memory per connection. Needs the openssl and curl commands
// (exit 77, saying which, when one is missing).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "examples_support.hpp"
#include "lev/lev.hpp"
#include "lev/net/tls.hpp"
#include "tls_support.hpp"

using namespace std::chrono_literals;
using namespace lev::examples_test;
using lev::test::pki;

namespace {

const bool g_tools_checked = [] {
  std::string missing = lev::test::openssl_missing();
  if (missing.empty() && !lev::test::have_program("curl"))
    missing = "the curl command is missing (Debian: apt install curl)";
  if (!missing.empty()) {
    std::fprintf(stderr, "tls_examples_test: skipped: %s\n", missing.c_str());
    std::_Exit(77);
  }
  return true;
}();

// Runs a shell command line; its stdout and exit code.
Run shell(const std::string& line) { return run({"/bin/sh", "-c", line}, 20s); }

// Holds `n` TLS connections to 127.0.0.1:port open and idle (handshake
// done) while `during()` runs; false when one could not be made.
template <class F>
bool hold_idle(const std::string& port, int n, F during) {
  lev::Loop loop{lev::Model::reactor};
  const auto ctx = lev::tls::Context::client({.ca_file = pki().ca}).value();
  std::vector<lev::tls::Connection> held;
  bool ok = true;
  auto open_all = [&]() -> lev::Task<> {
    for (int i = 0; i < n; ++i) {
      lev::tls::ConnectOptions o{.timeout = 10s, .server_name = "localhost"};
      auto connecting = lev::tls::connect(
          loop, "127.0.0.1", static_cast<std::uint16_t>(std::stoi(port)), ctx, std::move(o));
      auto c = co_await connecting;
      if (!c) {
        MESSAGE(c.error().message());
        ok = false;
        co_return;
      }
      held.push_back(std::move(*c));
    }
  };
  loop.block_on(open_all());
  if (ok) during();
  held.clear();
  return ok;
}

}  // namespace

TEST_SUITE("examples") {
  TEST_CASE(
      "tls_echo: its client and server on both models; a wrong name and an unknown CA refused") {
    for (const char* model : {"proactor", "reactor"}) {
      CAPTURE(model);
      auto [srv, port] = start_server({example_path("tls_echo"), "server", "--cert", pki().cert,
                                       "--key", pki().key, "--port", "0", "--model", model},
                                      pki().dir + "/tls_echo.err");
      auto ok = run({example_path("tls_echo"), "client", "--port", port, "--ca", pki().ca,
                     "--count", "3", "--message", "hi there", "--model", model});
      CHECK(ok.code == 0);
      CHECK(ok.out == "hi there\nhi there\nhi there\n");
      auto wrong = shell(example_path("tls_echo") + " client --port " + port + " --ca " + pki().ca +
                         " --host wrong.test 2>&1");
      CHECK(wrong.code == 1);
      CHECK_MESSAGE(wrong.out.find("wrong.test: hostname mismatch") != std::string::npos,
                    wrong.out);
      auto unknown = shell(example_path("tls_echo") + " client --port " + port + " --ca " +
                           pki().other_cert + " 2>&1");
      CHECK(unknown.code == 1);
      CHECK_MESSAGE(unknown.out.find("localhost: unable to get local issuer certificate") !=
                        std::string::npos,
                    unknown.out);
      auto sc = shell(
          "(printf 'from s_client\\n'; sleep 0.5) | openssl s_client -connect 127.0.0.1:" + port +
          " -CAfile " + pki().ca +
          " -servername localhost -verify_return_error -quiet 2>/dev/null");
      CHECK(sc.out == "from s_client\n");
      CHECK(stop_server(srv) == 0);
      const std::string err = slurp(pki().dir + "/tls_echo.err");
      CHECK(count_of(err, "lev: tls: ") <= 1);  // the kTLS probe's one line, at most
    }
  }

  TEST_CASE("http_hello --tls-cert/--tls-key serves HTTPS to curl --cacert on both models") {
    for (const char* model : {"proactor", "reactor"}) {
      CAPTURE(model);
      auto [srv, port] = start_server({example_path("http_hello"), "--port", "0", "--model", model,
                                       "--tls-cert", pki().cert, "--tls-key", pki().key});
      const std::string url = "https://localhost:" + port + "/";
      auto keep = shell("curl -sS --cacert " + pki().ca + " " + url + " " + url + "again");
      CHECK(keep.code == 0);
      CHECK(keep.out == "Hello, World!Hello, World!");
      auto closing = shell("curl -sS --cacert " + pki().ca + " -H 'Connection: close' " + url);
      CHECK(closing.code == 0);
      CHECK(closing.out == "Hello, World!");
      auto insecure = shell("curl -sS " + url + " 2>&1");  // no --cacert: the test CA is unknown
      CHECK(insecure.code != 0);
      auto plain =
          shell("curl -sS -m 5 http://localhost:" + port + "/ 2>&1");  // HTTP to an HTTPS port
      CHECK(plain.code != 0);
      auto still = shell("curl -sS --cacert " + pki().ca + " " + url);
      CHECK(still.out == "Hello, World!");
      CHECK(stop_server(srv) == 0);
    }
  }

  TEST_CASE("idle TLS connections: the servers hold them with bounded memory each") {
    constexpr int kIdle = 300;
    struct Row {
      std::vector<std::string> argv;
      const char* name;
    };
    for (const Row& row :
         {Row{{example_path("tls_echo"), "server", "--cert", pki().cert, "--key", pki().key},
              "tls_echo"},
          Row{{example_path("http_hello"), "--tls-cert", pki().cert, "--tls-key", pki().key},
              "http_hello --tls"}}) {
      const std::string name = row.name;
      CAPTURE(name);
      std::vector<std::string> argv = row.argv;
      argv.insert(argv.end(), {"--port", "0"});
      auto [srv, port] = start_server(argv);
      const long before = rss_kib(srv.pid);
      long during = 0;
      REQUIRE(hold_idle(port, kIdle, [&] {
        ::usleep(100'000);  // the last handshakes settle on the server
        during = rss_kib(srv.pid);
      }));
      const double per = static_cast<double>(during - before) / kIdle;
      MESSAGE(name << ": " << kIdle << " idle TLS connections, " << per << " KiB of RSS each");
      CHECK(per < 80.0);
      auto after = shell("curl -sS --cacert " + pki().ca + " https://localhost:" + port + "/ 2>&1");
      if (name == "http_hello --tls") CHECK(after.out == "Hello, World!");
      CHECK(stop_server(srv) == 0);
    }
  }
}
