#include "lev/net/listen.hpp"

#include <doctest/doctest.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "lev/log.hpp"
#include "lev/loop.hpp"
#include "lev/net/stream.hpp"
#include "lev/when.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::for_each_engine;

namespace {
// Handler: replies "echo: <line>" per line.
lev::Task<> line_echo(lev::Loop& loop, lev::Fd fd) {
  lev::net::Stream s{loop, std::move(fd)};
  for (;;) {
    auto m = co_await s.read_message();
    if (!m || !*m) break;
    if (!co_await s.write_message("echo: " + **m)) break;
  }
  (void)co_await s.close();
}

lev::Task<std::string> ask(lev::Loop& loop, const lev::SocketAddress& to, std::string line) {
  lev::Fd c{::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  (co_await loop.connect(c, to)).value();
  lev::net::Stream s{loop, std::move(c)};
  (co_await s.write_message(line)).value();
  auto reply = (co_await s.read_message()).value();
  (void)co_await s.close();
  co_return reply.value_or("<eof>");
}

// Awaits `t`, then records that it ended.
lev::Task<> watch_end(lev::Task<> t, bool& ended) {
  co_await std::move(t);
  ended = true;
}

// Runs the loop for `d` (bounded, also while an accept stays pending).
void pump(lev::Loop& loop, std::chrono::milliseconds d) {
  auto wait = [&]() -> lev::Task<> { (void)co_await loop.after(d); };
  loop.block_on(wait());
}

// Runs the loop until `done` (or 5 s: a loaded sanitizer build may take
// more than a fixed few milliseconds to see a cancel complete).
void pump_until(lev::Loop& loop, const bool& done) {
  auto wait = [&]() -> lev::Task<> {
    for (int i = 0; i < 5000 && !done; ++i) (void)co_await loop.after(1ms);
  };
  loop.block_on(wait());
}

void serve_and_ask(lev::Loop& loop, const lev::net::Listener& l) {
  lev::net::Acceptor acc{
      loop, l, [&](lev::Fd fd, lev::SocketAddress) { return line_echo(loop, std::move(fd)); }};
  loop.spawn(acc.run());
  auto t = [&]() -> lev::Task<std::vector<std::string>> {
    std::vector<std::string> replies;
    for (int i = 0; i < 3; ++i)
      replies.push_back(co_await ask(loop, l.address(), "hi " + std::to_string(i)));
    acc.stop();
    co_return replies;
  };
  CHECK(loop.block_on(t()) == std::vector<std::string>{"echo: hi 0", "echo: hi 1", "echo: hi 2"});
  loop.run();                  // the accept loop ends after stop()
  CHECK(acc.accepted() >= 3);  // a unix liveness probe may count as one more
  CHECK(loop.live_op_count() == 0);
}
}  // namespace

TEST_SUITE("listen") {
  TEST_CASE("TCP on 127.0.0.1 with port 0 reports the port and serves an accept loop") {
    for_each_engine([](lev::Loop& loop) {
      auto l = lev::net::Listener::tcp("127.0.0.1", 0);
      REQUIRE(l);
      CHECK(l->port() != 0);
      serve_and_ask(loop, *l);
    });
  }

  TEST_CASE("IPv6 loopback") {
    auto l = lev::net::Listener::tcp("::1", 0);
    if (!l) {
      MESSAGE("skipped: no ::1 here: " << l.error().message());
      return;
    }
    for_each_engine([&](lev::Loop& loop) { serve_and_ask(loop, *l); });
  }

  TEST_CASE("a unix socket path, a stale socket file replaced, a live one refused") {
    for_each_engine([](lev::Loop& loop) {
      const lev::test::TempDir dir("listen");
      const std::string path = dir.file("s.sock");
      {  // leave a stale socket file behind
        lev::Fd s{::socket(AF_UNIX, SOCK_STREAM, 0)};
        auto a = *lev::SocketAddress::unix_path(path);
        REQUIRE(::bind(s.get(), a.data(), a.size()) == 0);
      }
      auto l = lev::net::Listener::unix_socket(path);
      REQUIRE_MESSAGE(l, l.error().message());
      auto again = lev::net::Listener::unix_socket(path);
      REQUIRE_FALSE(again);
      CHECK(again.error().code == std::errc::address_in_use);
      serve_and_ask(loop, *l);
    });
  }

  TEST_CASE("bad addresses are errors that name the problem") {
    auto l = lev::net::Listener::tcp("not-an-ip", 0);
    REQUIRE_FALSE(l);
    CHECK(l.error().code == std::errc::invalid_argument);
    auto taken = lev::net::Listener::tcp("127.0.0.1", 0);
    REQUIRE(taken);
    auto dup = lev::net::Listener::tcp("127.0.0.1", taken->port(), {.reuse_addr = false});
    REQUIRE_FALSE(dup);
    CHECK(std::string(dup.error().op) == "bind");
  }

  TEST_CASE("EMFILE in the accept loop: it backs off and keeps serving") {
    for (const auto& engine : lev::test::real_engines()) {
      CAPTURE(engine.name);
      std::string out = lev::test::run_in_child([engine] {
        lev::set_log_handler([](lev::LogLevel level, std::string_view text) {
          std::fprintf(stderr, "hook %s: %.*s\n", lev::to_string(level),
                       static_cast<int>(text.size()), text.data());
        });
        lev::Loop loop{engine.model, lev::test::options_for(engine)};
        auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
        std::vector<lev::Fd> clients;
        for (int i = 0; i < 3; ++i) {
          clients.emplace_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
          (void)!::connect(clients.back().get(), l.address().data(), l.address().size());
        }
        std::vector<lev::Fd> spare;  // fds to give back later
        for (int i = 0; i < 3; ++i) spare.emplace_back(::dup(0));
        rlimit rl{};
        ::getrlimit(RLIMIT_NOFILE, &rl);
        // a little room for the loop's own fds (epoll registers lazily)
        rlimit low{static_cast<rlim_t>(lev::test::open_fd_count() + 1), rl.rlim_max};
        ::setrlimit(RLIMIT_NOFILE, &low);
        lev::Fd filler{::dup(0)};  // now no fd is left for accept
        int served = 0;
        lev::net::Acceptor acc{loop, l, [&](lev::Fd, lev::SocketAddress) -> lev::Task<> {
                                 ++served;
                                 co_return;
                               }};
        loop.spawn(acc.run());
        auto wait = [&](auto d) -> lev::Task<> { (void)co_await loop.after(d); };
        loop.block_on(wait(60ms));
        const std::size_t errors = acc.resource_errors();
        spare.clear();  // fds are free again
        loop.block_on(wait(1500ms));
        acc.stop();
        loop.run();
        std::fprintf(stderr, "\nRESULT errors=%s served=%d\n", errors > 0 ? "yes" : "no", served);
      });
      INFO(out);
      CHECK(out.find("hook warning: accept on fd ") != std::string::npos);  // through the log hook
      CHECK(out.find("backing off") != std::string::npos);
      CHECK(out.find("RESULT errors=yes served=3") != std::string::npos);
    }
  }

  TEST_CASE("one multishot accept serves a burst of connections on io_uring; peers are reported" *
            lev::test::needs_uring()) {
    lev::Loop loop{lev::Model::proactor};
    auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
    std::vector<std::uint16_t> peers;
    lev::net::Acceptor acc{loop, l, [&](lev::Fd fd, lev::SocketAddress peer) -> lev::Task<> {
                             peers.push_back(peer.port());
                             (void)co_await loop.close(fd);
                           }};
    loop.spawn(acc.run());
    constexpr int kConns = 100;
    std::vector<std::uint16_t> locals;
    auto clients = [&]() -> lev::Task<> {
      std::vector<lev::Fd> held;
      for (int i = 0; i < kConns; ++i) {
        lev::Fd c{::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
        (co_await loop.connect(c, l.address())).value();
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        ::getsockname(c.get(), reinterpret_cast<sockaddr*>(&ss), &len);
        locals.push_back(lev::SocketAddress(reinterpret_cast<sockaddr*>(&ss), len).port());
        held.push_back(std::move(c));
      }
      while (acc.accepted() < static_cast<std::size_t>(kConns)) (void)co_await loop.after(1ms);
      acc.stop();
    };
    loop.block_on(clients());
    loop.run();
    CHECK(acc.accepted() == static_cast<std::size_t>(kConns));
    if (loop.features().multishot_accept) CHECK(acc.multishot_arms() == 1);
    std::sort(peers.begin(), peers.end());
    std::sort(locals.begin(), locals.end());
    CHECK(peers == locals);
    CHECK(loop.live_op_count() == 0);
  }

  TEST_CASE("a loop destroyed with connections queued in a multishot accept closes them" *
            lev::test::needs_uring()) {
    const std::size_t before = lev::test::open_fd_count();
    auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
    std::vector<int> clients;
    {
      lev::Loop loop{lev::Model::proactor};
      lev::net::Acceptor acc{loop, l,
                             [&](lev::Fd, lev::SocketAddress) -> lev::Task<> { co_return; }};
      loop.spawn(acc.run());
      loop.run_once();  // armed
      for (int i = 0; i < 5; ++i) {
        int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(::connect(c, l.address().data(), l.address().size()) == 0);
        clients.push_back(c);
      }
      loop.run_once();  // the connections arrive; some may wait for the consumer
    }
    for (int c : clients) ::close(c);
    CHECK(lev::test::open_fd_count() == before + 1);  // the listener only
  }
  // ---- issue 16: Acceptor lifetime, handler captures, throwing handlers, unix probes

  TEST_CASE("an acceptor destroyed right after stop() leaves its run() nothing freed to read") {
    // Regression: stop() only requested the cancel; run() resumed later and
    // read stopping_ / pending_ of the dead Acceptor (ASan:
    // heap-use-after-free; multishot path on io_uring, single on epoll).
    for_each_engine([](lev::Loop& loop) {
      auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
      auto acc = std::make_unique<lev::net::Acceptor>(
          loop, l, [](lev::Fd, lev::SocketAddress) -> lev::Task<> { co_return; });
      bool ended = false;
      loop.spawn(watch_end(acc->run(), ended));
      pump(loop, 5ms);  // the accept is pending
      acc->stop();
      acc.reset();  // as the header's own usage allows
      pump_until(loop, ended);
      CHECK(ended);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("an acceptor destroyed without stop() stops, and its run() ends") {
    for_each_engine([](lev::Loop& loop) {
      auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
      auto acc = std::make_unique<lev::net::Acceptor>(
          loop, l, [](lev::Fd, lev::SocketAddress) -> lev::Task<> { co_return; });
      bool ended = false;
      loop.spawn(watch_end(acc->run(), ended));
      pump(loop, 5ms);
      acc.reset();
      pump_until(loop, ended);
      CHECK(ended);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a task that owns an acceptor and awaits its run() is destroyed with the loop") {
    // Regression (CI, echo_server under ASan): ~Loop destroyed the task's
    // frame; the awaited run() went first and freed its accept op, then
    // ~Acceptor cancelled that op through a pointer into the freed frame.
    for (const bool multishot : {true, false}) {
      CAPTURE(multishot);
      if (multishot && !lev::test::has_uring()) continue;  // the multishot accept is io_uring's
      auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
      const std::size_t before = lev::test::open_fd_count();
      auto owner = [&l](lev::Loop& loop) -> lev::Task<> {
        lev::net::Acceptor acc{loop, l,
                               [](lev::Fd, lev::SocketAddress) -> lev::Task<> { co_return; }};
        co_await acc.run();
      };
      {
        lev::Loop loop{multishot ? lev::Model::proactor : lev::Model::reactor};
        loop.spawn(owner(loop));
        pump(loop, 5ms);  // the accept is pending; the loop goes with the task suspended
      }
      CHECK(lev::test::open_fd_count() == before);
    }
  }

  TEST_CASE("a handler's captures outlive the acceptor while its connection is served") {
    // Regression: each handler coroutine was made by calling the Acceptor's
    // std::function, so a capturing lambda's captures lived in the
    // Acceptor; a connection still served after the Acceptor was destroyed
    // read freed memory (ASan: heap-use-after-free).
    for_each_engine([](lev::Loop& loop) {
      auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
      const std::string greeting(64, 'g');
      auto acc = std::make_unique<lev::net::Acceptor>(
          loop, l, [&loop, greeting](lev::Fd fd, lev::SocketAddress) -> lev::Task<> {
            char buf[16];
            auto n = co_await loop.recv(fd, buf);  // waits while the Acceptor goes away
            if (n && *n > 0) (void)co_await loop.send_all(fd, std::string_view(greeting));
          });
      bool ended = false;
      loop.spawn(watch_end(acc->run(), ended));
      auto client = [&]() -> lev::Task<std::string> {
        lev::Fd c = lev::test::tcp_socket();
        (co_await loop.connect(c, l.address())).value();
        for (int i = 0; i < 1000 && acc->accepted() == 0; ++i) (void)co_await loop.after(1ms);
        (void)co_await loop.after(5ms);  // the handler waits in its recv
        acc->stop();
        for (int i = 0; i < 1000 && !ended; ++i) (void)co_await loop.after(1ms);
        acc.reset();  // run() has ended; the connection is still being served
        (co_await loop.send_all(c, std::string_view("go"))).value();
        std::string got;
        char buf[128];
        while (got.size() < 64) {
          auto n = co_await loop.recv(c, buf);
          if (!n || *n == 0) break;
          got.append(buf, *n);
        }
        co_return got;
      };
      CHECK(loop.block_on(client()) == greeting);
      loop.run();
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a handler that throws before returning its task is reported and accepting goes on") {
    // Regression: the exception escaped run(), which ended; later clients
    // sat in the backlog.
    for (const auto& engine : lev::test::real_engines()) {
      INFO("engine: " << engine.name);
      std::string out = lev::test::run_in_child([engine] {
        lev::Loop loop{engine.model, lev::test::options_for(engine)};
        auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
        int calls = 0;
        lev::net::Acceptor acc{loop, l, [&](lev::Fd fd, lev::SocketAddress) -> lev::Task<> {
                                 if (calls++ == 0) throw std::runtime_error("no frame for you");
                                 return line_echo(loop, std::move(fd));  // a plain function
                               }};
        loop.spawn(acc.run());
        auto clients = [&]() -> lev::Task<std::string> {
          lev::Fd first = lev::test::tcp_socket();
          (co_await loop.connect(first, l.address())).value();
          char one[1];
          auto n = co_await loop.recv(first, one);  // closed by the failed handler
          if (!n || *n != 0) co_return "first connection not closed";
          auto second = co_await lev::with_timeout(loop, ask(loop, l.address(), "still there?"), 2s);
          co_return second ? *second : second.error().message();
        };
        std::string reply = loop.block_on(clients());
        acc.stop();
        loop.run();
        std::fprintf(stderr, "\nRESULT %s\n", reply.c_str());
      });
      CHECK(out.find("no frame for you") != std::string::npos);  // reported
      CHECK(out.find("RESULT echo: still there?") != std::string::npos);
    }
  }

  TEST_CASE("a live unix socket whose backlog is full is refused at once, not waited on") {
    // Regression: the stale-socket probe used a blocking connect, which
    // hung while the live server's backlog was full.
    const lev::test::TempDir dir("listen-full");
    const std::string path = dir.file("s.sock");
    auto l = lev::net::Listener::unix_socket(path, {.backlog = 1}).value();
    std::vector<lev::Fd> fillers;
    bool full = false;
    for (int i = 0; i < 64 && !full; ++i) {
      lev::Fd c{::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
      full = ::connect(c.get(), l.address().data(), l.address().size()) != 0 && errno == EAGAIN;
      fillers.push_back(std::move(c));
    }
    REQUIRE_MESSAGE(full, "could not fill the backlog");
    std::string out = lev::test::run_in_child([&path] {
      ::alarm(5);  // the old probe blocked here for good
      auto again = lev::net::Listener::unix_socket(path);
      const char* what = again                                              ? "replaced"
                         : again.error().code == std::errc::address_in_use ? "in use"
                                                                            : "other error";
      std::fprintf(stderr, "\nRESULT %s\n", what);
      if (again) (void)again->fd();
    });
    CHECK(out.find("RESULT in use") != std::string::npos);
    struct stat st {};
    CHECK(::lstat(path.c_str(), &st) == 0);  // the live server keeps its file
  }

  TEST_CASE("move-assigning a unix listener removes the socket file it held") {
    // Decided (issue 16): a Listener assigned over closes its socket and
    // removes its file, as its destructor does. Before, the old path was
    // overwritten and its file left behind.
    const lev::test::TempDir dir("listen-move");
    const std::string base = dir.file("l");
    auto a = lev::net::Listener::unix_socket(base + "-a.sock").value();
    auto b = lev::net::Listener::unix_socket(base + "-b.sock").value();
    struct stat st {};
    a = std::move(b);
    CHECK(::lstat((base + "-a.sock").c_str(), &st) != 0);
    CHECK(::lstat((base + "-b.sock").c_str(), &st) == 0);
    { lev::net::Listener moved = std::move(a); }
    CHECK(::lstat((base + "-b.sock").c_str(), &st) != 0);
  }
}
