// The TLS examples as users run them: tls_echo's server and client,
// http_hello --tls-cert/--tls-key under curl --cacert and openssl s_client,
// on both engine models; and idle TLS connections held against them, with
// the server's memory per connection. Needs the openssl and curl commands
// (exit 77, saying which, when one is missing).
#include <doctest/doctest.h>
#include <unistd.h>

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

// RSS per idle TLS connection a server may take. Under AddressSanitizer
// (CI's sanitizer build) its shadow memory and quarantine make about 380
// KiB of each; the bound stays finite there, to catch a per-connection leak.
#if defined(__SANITIZE_ADDRESS__)
constexpr double kMaxKibPerIdleConnection = 1024.0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr double kMaxKibPerIdleConnection = 1024.0;
#else
constexpr double kMaxKibPerIdleConnection = 80.0;
#endif
#else
constexpr double kMaxKibPerIdleConnection = 80.0;
#endif

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

// nginx with TLS on the test PKI's localhost certificate, on a free port
// (nginx is not required: the case that needs it is skipped without it).
bool have_nginx() {
  static const bool yes = [] {
    const bool found = lev::test::have_program("nginx") || ::access("/usr/sbin/nginx", X_OK) == 0;
    if (!found)
      std::fprintf(stderr,
                   "tls_examples_test: nginx is missing (Debian: apt install nginx-light): "
                   "its case is skipped\n");
    return found;
  }();
  return yes;
}

struct Nginx {
  Child proc;
  std::uint16_t port = 0;
};

Nginx start_nginx() {
  Nginx n;
  {
    lev::Fd probe{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    REQUIRE(::bind(probe.get(), reinterpret_cast<sockaddr*>(&a), len) == 0);
    REQUIRE(::getsockname(probe.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0);
    n.port = ntohs(a.sin_port);
  }
  const std::string d = pki().dir;
  const std::string conf = d + "/nginx.conf";
  std::FILE* f = std::fopen(conf.c_str(), "w");
  REQUIRE(f);
  std::fprintf(f,
               "worker_processes 1; master_process off; daemon off;\n"
               "error_log %s/nginx-error.log; pid %s/nginx.pid;\n"
               "events { worker_connections 64; }\n"
               "http { access_log off; client_body_temp_path %s/body; proxy_temp_path %s/proxy;\n"
               "  fastcgi_temp_path %s/fastcgi; uwsgi_temp_path %s/uwsgi; scgi_temp_path %s/scgi;\n"
               "  server { listen 127.0.0.1:%u ssl; ssl_certificate %s; ssl_certificate_key %s;\n"
               "    location / { default_type text/plain; return 200 \"Hello from nginx\"; } } }\n",
               d.c_str(), d.c_str(), d.c_str(), d.c_str(), d.c_str(), d.c_str(), d.c_str(), n.port,
               pki().cert.c_str(), pki().key.c_str());
  std::fclose(f);
  n.proc = start({"/usr/sbin/nginx", "-c", conf, "-p", d}, {}, d + "/nginx.stderr");
  for (int i = 0; i < 200; ++i) {  // until it listens
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(n.port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    ::close(fd);
    if (up) break;
    ::usleep(20'000);
  }
  return n;
}

}  // namespace

TEST_SUITE("examples") {
  TEST_CASE(
      "a lev client verifies nginx's certificate, refuses a wrong name, and fetches over HTTPS" *
      doctest::skip(!have_nginx())) {
    Nginx nginx = start_nginx();
    lev::Loop loop{lev::Model::proactor, {.backend = "auto"}};  // epoll where io_uring is refused
    const auto ctx = lev::tls::Context::client({.ca_file = pki().ca}).value();
    auto body = [&]() -> lev::Task<> {
      lev::tls::ConnectOptions good{.timeout = 5s, .server_name = "localhost"};
      auto connecting = lev::tls::connect(loop, "127.0.0.1", nginx.port, ctx, std::move(good));
      auto c = co_await connecting;
      REQUIRE_MESSAGE(c, c.error().message());
      (co_await c->send_all(
           std::string_view("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")))
          .value();
      std::string reply;
      char buf[4096];
      for (int i = 0; i < 100; ++i) {
        auto n = co_await c->recv(buf, {.timeout = 5s});
        if (!n || *n == 0) break;  // nginx may close without close_notify after Connection: close
        reply.append(buf, *n);
      }
      CHECK(reply.rfind("HTTP/1.1 200 OK", 0) == 0);
      CHECK(reply.find("Hello from nginx") != std::string::npos);
      lev::tls::ConnectOptions bad{.timeout = 5s, .server_name = "wrong.test"};
      auto refusing = lev::tls::connect(loop, "127.0.0.1", nginx.port, ctx, std::move(bad));
      auto refused = co_await refusing;
      REQUIRE_FALSE(refused);
      CHECK(refused.error().code == lev::tls::errc::verify_failed);
      CHECK_MESSAGE(
          refused.error().message().find("wrong.test: hostname mismatch") != std::string::npos,
          refused.error().message());
    };
    loop.block_on(body());
    ::kill(nginx.proc.pid, SIGTERM);
    CHECK(wait_exit(nginx.proc.pid, 10s) == 0);
    ::close(nginx.proc.out);
  }

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
          " -servername localhost -verify_return_error -brief 2>/dev/null");
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
      CHECK(per < kMaxKibPerIdleConnection);
      auto after = shell("curl -sS --cacert " + pki().ca + " https://localhost:" + port + "/ 2>&1");
      if (name == "http_hello --tls") CHECK(after.out == "Hello, World!");
      CHECK(stop_server(srv) == 0);
    }
  }
}
