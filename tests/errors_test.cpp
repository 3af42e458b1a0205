// Bad input comes back as a value that names the operation and the fd.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <string>
#include <system_error>

#include "lev/loop.hpp"
#include "lev/net/listen.hpp"
#include "support.hpp"

using lev::test::Engine;
using lev::test::for_each_engine;

namespace {
constexpr int kBadFd = 987654;
}  // namespace

TEST_SUITE("errors") {
  TEST_CASE("an invalid fd gives EBADF with the operation's name and fd in the message") {
    for_each_engine([](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        std::array<char, 8> buf;
        auto r = co_await loop.recv(kBadFd, buf);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == std::errc::bad_file_descriptor);
        CHECK(r.error().message() == "recv(fd 987654): Bad file descriptor");
        auto w = co_await loop.write(kBadFd, std::string_view("x"));
        CHECK(w.error().message().rfind("write(fd 987654)", 0) == 0);
        auto c = co_await loop.close(kBadFd);
        CHECK(c.error().code == std::errc::bad_file_descriptor);
        CHECK(std::string(c.error().op) == "close");
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("value() on an error throws std::system_error carrying the message") {
    for_each_engine([](lev::Loop& loop) {
      auto t = [&]() -> lev::Task<> {
        std::array<char, 8> buf;
        auto r = co_await loop.read(kBadFd, buf);
        CHECK_THROWS_WITH_AS(r.value(), doctest::Contains("read(fd 987654)"), std::system_error);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("a zero-length read returns 0 bytes without error") {
    for_each_engine([](lev::Loop& loop) {
      auto [r, w] = lev::test::pipe_pair();
      auto t = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await loop.read(r, lev::MutableBuffer{});
      };
      auto n = loop.block_on(t());
      REQUIRE(n);
      CHECK(*n == 0);
    });
  }

  TEST_CASE("recv on a closed socket fails, recv after the peer closed is EOF") {
    for_each_engine([](lev::Loop& loop) {
      auto [c, d] = lev::test::socket_pair();
      d.reset();
      auto [a, b] = lev::test::socket_pair();
      int closed = a.release();
      ::close(closed);  // nothing may open an fd before the recv below
      b.reset();
      auto t = [&]() -> lev::Task<> {
        std::array<char, 8> buf;
        auto r = co_await loop.recv(closed, buf);
        CHECK_FALSE(r);
        CHECK(r.error().code == std::errc::bad_file_descriptor);
        auto eof = co_await loop.recv(c, buf);
        REQUIRE(eof);
        CHECK(*eof == 0);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("sending to a peer that closed is EPIPE or ECONNRESET, never a SIGPIPE death") {
    for_each_engine([](lev::Loop& loop) {
      struct sigaction sa {};
      ::sigaction(SIGPIPE, nullptr, &sa);
      CHECK((sa.sa_handler == SIG_IGN));  // the loop ignored it (it was default)
      auto [a, b] = lev::test::socket_pair();
      b.reset();
      auto [r, w] = lev::test::pipe_pair();
      r.reset();
      auto t = [&]() -> lev::Task<> {
        auto s = co_await loop.send(a, std::string_view("nobody listens"));
        REQUIRE_FALSE(s);
        CHECK((s.error().code == std::errc::broken_pipe ||
               s.error().code == std::errc::connection_reset));
        auto wr = co_await loop.write(w, std::string_view("nobody reads"));
        REQUIRE_FALSE(wr);
        CHECK(wr.error().code == std::errc::broken_pipe);
        std::string big(1 << 20, 'z');
        auto all = co_await loop.send_all(a, big);
        CHECK_FALSE(all);
        CHECK(all.error().transferred == 0);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("send_all reports how many bytes went out before the peer vanished") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::string big(4 << 20, 'q');
      lev::Result<std::size_t> result = std::size_t{0};
      auto sender = [&]() -> lev::Task<> { result = co_await loop.send_all(a, big); };
      auto closer = [&]() -> lev::Task<> {
        std::array<char, 4096> buf;
        (void)co_await loop.recv(b, buf);  // take some, then vanish
        b.reset();
      };
      loop.spawn(closer());
      loop.block_on(sender());
      REQUIRE_FALSE(result);
      CHECK(result.error().transferred > 0);
      CHECK(result.error().transferred < big.size());
      CHECK(result.error().message().find("after") != std::string::npos);
    });
  }

  TEST_CASE("connect to a port with no listener is ECONNREFUSED as a value") {
    for_each_engine([](lev::Loop& loop) {
      lev::SocketAddress addr;
      {
        auto [l, a] = lev::test::tcp_listener();
        addr = a;
      }  // closed: nothing listens there now
      auto t = [&]() -> lev::Task<> {
        lev::Fd s = lev::test::tcp_socket();
        auto r = co_await loop.connect(s, addr);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == std::errc::connection_refused);
        CHECK(std::string(r.error().op) == "connect");
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("accept on a socket that is not listening is EINVAL as a value") {
    for_each_engine([](lev::Loop& loop) {
      lev::Fd s = lev::test::tcp_socket();
      auto t = [&]() -> lev::Task<> {
        auto r = co_await loop.accept(s);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == std::errc::invalid_argument);
      };
      loop.block_on(t());
    });
  }

  // Regression: value() on a failed bind threw "bind(fd 6): Address already in
  // use: Address already in use": raise() gave std::system_error the whole
  // message(), and system_error appends the code's message once more.
  TEST_CASE("value() on a failed bind says what went wrong once") {
    auto [taken, addr] = lev::test::tcp_listener();
    auto second = lev::net::Listener::tcp("127.0.0.1", addr.port());
    REQUIRE_FALSE(second);
    const std::string reason = std::system_category().message(EADDRINUSE);
    try {
      (void)second.value();
      FAIL("value() did not throw");
    } catch (const std::system_error& e) {
      const std::string what = e.what();
      CHECK(e.code() == std::errc::address_in_use);
      CHECK(what == second.error().message());
      CHECK(what.rfind("bind(fd ", 0) == 0);
      CHECK(what.find(reason) == what.size() - reason.size());
      CHECK(what.find(reason) == what.rfind(reason));
    }
  }

  TEST_CASE("what() of a raised error reads like message(), bytes transferred included") {
    const auto e = lev::Error::from_errno(EPIPE, "send", 7, 12);
    CHECK(e.message() == "send(fd 7) after 12 bytes: Broken pipe");
    CHECK_THROWS_WITH_AS(e.raise(), "send(fd 7) after 12 bytes: Broken pipe", std::system_error);
    const auto bare = lev::Error::from_errno(EBADF, "close");
    CHECK(bare.message() == "close: Bad file descriptor");
    CHECK_THROWS_WITH_AS(bare.raise(), "close: Bad file descriptor", std::system_error);
  }

  // Last in this file (doctest runs a file's cases in order): it fills the
  // process-wide store of path texts.
  TEST_CASE("an error names its path; the store of path texts is bounded and then names the op alone") {
    const auto e = lev::Error::from_errno(ENOENT, "openat").with_path("/srv/missing");
    CHECK(e.message() == "openat(/srv/missing): No such file or directory");
    CHECK(lev::Error::from_errno(ENOENT, "openat").with_path("/srv/missing").path == e.path);
    const lev::Error copy = e;  // a plain copy: the text is the store's
    CHECK(copy.message() == e.message());
    int named = 0;
    lev::Error last;
    for (int i = 0; i < 400; ++i) {  // 400 x 4 KiB: past the 1 MiB bound
      last = lev::Error::from_errno(EACCES, "statx").with_path(std::string(4096, 'a') + std::to_string(i));
      if (last.path) ++named;
    }
    CHECK(named > 200);  // those that fit
    CHECK(named < 400);
    CHECK(last.path == nullptr);
    CHECK(last.message() == "statx: Permission denied");
    CHECK(lev::Error::from_errno(ENOENT, "openat").with_path("/srv/missing").path == e.path);
  }
}
