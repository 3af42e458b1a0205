#include "lev/net/connect.hpp"

#include <doctest/doctest.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "lev/loop.hpp"
#include "lev/net/listen.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::for_each_engine;

TEST_SUITE("connect") {
  TEST_CASE("connect by host name: localhost is resolved off the loop thread") {
    for_each_engine([](lev::Loop& loop) {
      auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
      auto t = [&]() -> lev::Task<std::string> {
        auto addrs = co_await lev::net::resolve(loop, "localhost", l.port());
        REQUIRE(addrs);
        CHECK_FALSE(addrs->empty());
        auto fd = co_await lev::net::connect(loop, "localhost", l.port(), {.timeout = 5s});
        REQUIRE_MESSAGE(fd, fd.error().message());
        (co_await loop.send_all(*fd, std::string_view("hi"))).value();
        auto c = co_await loop.accept(l.fd());
        char buf[4];
        auto n = co_await loop.recv(c.value().fd, buf);
        co_return std::string(buf, n.value());
      };
      CHECK(loop.block_on(t()) == "hi");
    });
  }

  TEST_CASE("a port with no listener is ECONNREFUSED as a value") {
    for_each_engine([](lev::Loop& loop) {
      std::uint16_t port;
      {
        auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
        port = l.port();
      }
      auto t = [&]() -> lev::Task<> {
        auto fd = co_await lev::net::connect(loop, "127.0.0.1", port);
        REQUIRE_FALSE(fd);
        CHECK(fd.error().code == std::errc::connection_refused);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("a listener whose backlog is full drops SYNs: connect times out") {
    for_each_engine([](lev::Loop& loop) {
      auto l = lev::net::Listener::tcp("127.0.0.1", 0, {.backlog = 0}).value();
      // Fill the accept queue until a connect stays pending.
      std::vector<lev::Fd> fillers;
      bool pending = false;
      for (int i = 0; i < 16 && !pending; ++i) {
        lev::Fd c{::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
        (void)!::connect(c.get(), l.address().data(), l.address().size());
        pollfd p{c.get(), POLLOUT, 0};
        pending = ::poll(&p, 1, 100) == 0;
        fillers.push_back(std::move(c));
      }
      REQUIRE_MESSAGE(pending, "could not fill the backlog");
      auto t = [&]() -> lev::Task<> {
        auto start = loop.now();
        auto fd = co_await lev::net::connect(loop, "127.0.0.1", l.port(), {.timeout = 200ms});
        REQUIRE_FALSE(fd);
        CHECK(fd.error().code == std::errc::timed_out);
        CHECK(loop.now() - start >= 190ms);
      };
      loop.block_on(t());
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("resolve errors carry getaddrinfo's category") {
    std::error_code ec(EAI_NONAME, lev::net::resolve_category());
    CHECK(std::string(ec.category().name()) == "getaddrinfo");
    CHECK_FALSE(ec.message().empty());
  }

  TEST_CASE("connect's deadline covers a slow name lookup, which finishes on its own") {
    // Regression: the deadline was armed only after resolve() returned, so
    // with a lookup taking 3 s, connect(..., {.timeout = 200ms}) returned
    // after 3 s (and the lookup captured the caller's host by reference).
    for_each_engine([](lev::Loop& loop) {
      auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
      auto gate = std::make_shared<std::promise<void>>();
      std::shared_future<void> open = gate->get_future().share();
      auto finished = std::make_shared<std::atomic<bool>>(false);
      lev::net::ConnectOptions o;
      o.timeout = 200ms;
      o.resolver = [open, finished](const std::string& host, std::uint16_t port)
          -> lev::Result<std::vector<lev::SocketAddress>> {
        (void)open.wait_for(3s);  // a lookup that hangs until the test lets it go
        finished->store(host == "slow.invalid");
        return std::vector<lev::SocketAddress>{*lev::SocketAddress::ip("127.0.0.1", port)};
      };
      auto t = [&]() -> lev::Task<lev::Result<lev::Fd>> {
        co_return co_await lev::net::connect(loop, "slow.invalid", l.port(), std::move(o));
      };
      auto fd = loop.block_on(t());
      const bool lookup_done_first = finished->load();
      gate->set_value();
      REQUIRE_FALSE(fd);
      CHECK(fd.error().code == std::errc::timed_out);
      CHECK(fd.error().message().find("slow.invalid") != std::string::npos);
      CHECK_FALSE(lookup_done_first);  // it returned while the lookup still ran
      // The abandoned lookup ends by itself, with its own copy of the host.
      for (int i = 0; i < 2000 && !finished->load(); ++i) std::this_thread::sleep_for(1ms);
      CHECK(finished->load());
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a host that cannot be resolved is named in the error") {
    // Regression (issue 22, item 5): an unknown host said "resolve: Name or
    // service not known", without the host.
    for_each_engine([](lev::Loop& loop) {
      lev::net::ConnectOptions o;
      o.resolver = [](const std::string&,
                      std::uint16_t) -> lev::Result<std::vector<lev::SocketAddress>> {
        return lev::Error{std::error_code(EAI_NONAME, lev::net::resolve_category()), "resolve"};
      };
      auto t = [&]() -> lev::Task<> {
        auto addrs = co_await lev::net::resolve(loop, "nosuch.invalid", 80, o.resolver);
        REQUIRE_FALSE(addrs);
        CHECK(addrs.error().message() ==
              "resolve(nosuch.invalid): " + std::string(::gai_strerror(EAI_NONAME)));
        auto fd = co_await lev::net::connect(loop, "other.invalid", 80, std::move(o));
        REQUIRE_FALSE(fd);
        CHECK(fd.error().code == std::error_code(EAI_NONAME, lev::net::resolve_category()));
        CHECK(fd.error().message() ==
              "resolve(other.invalid): " + std::string(::gai_strerror(EAI_NONAME)));
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("a resolver's answer and errors reach connect") {
    for_each_engine([](lev::Loop& loop) {
      auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
      lev::net::ConnectOptions good;
      good.resolver = [](const std::string&, std::uint16_t port)
          -> lev::Result<std::vector<lev::SocketAddress>> {
        return std::vector<lev::SocketAddress>{*lev::SocketAddress::ip("127.0.0.1", port)};
      };
      lev::net::ConnectOptions throwing;
      throwing.resolver = [](const std::string&, std::uint16_t)
          -> lev::Result<std::vector<lev::SocketAddress>> { throw std::runtime_error("no"); };
      auto t = [&]() -> lev::Task<> {
        auto fd = co_await lev::net::connect(loop, "service.invalid", l.port(), std::move(good));
        CHECK(fd);
        auto bad = co_await lev::net::connect(loop, "service.invalid", l.port(), std::move(throwing));
        REQUIRE_FALSE(bad);
        CHECK(bad.error().code == std::error_code(EAI_FAIL, lev::net::resolve_category()));
      };
      loop.block_on(t());
    });
  }
}
