// Cancellation by std::stop_token, and work handed to a loop from other
// threads (Loop::post, Loop::stop). Real engines unless the fake's virtual
// clock is the point.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <optional>
#include <stop_token>
#include <thread>
#include <vector>

#include "lev/loop.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::for_each_engine;

TEST_SUITE("cancel") {
  TEST_CASE("a stop request cancels an in-flight recv, which completes with operation_canceled") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::stop_source src;
      std::array<std::byte, 16> buf{};
      auto reader = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await loop.recv(a, buf).stop_on(src.get_token());
      };
      auto stopper = [&]() -> lev::Task<> {
        (void)co_await loop.after(5ms);
        src.request_stop();
      };
      loop.spawn(stopper());
      auto r = loop.block_on(reader());
      REQUIRE_FALSE(r);
      CHECK(r.error().is_cancelled());
      CHECK(r.error().message().find("recv") != std::string::npos);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("stop_on wraps accept, connect and readable; an accept through it keeps its peer") {
    for_each_engine([](lev::Loop& loop) {
      auto [listener, addr] = lev::test::tcp_listener();
      lev::Fd client = lev::test::tcp_socket();
      std::stop_source src;
      // Completions through the wrapper: the awaiter was moved into it before
      // it started, and the accepted peer is still the client's address.
      std::optional<lev::Result<void>> connected;
      auto connector = [&]() -> lev::Task<> {
        connected.emplace(co_await loop.connect(client, addr).stop_on(src.get_token()));
      };
      auto acceptor = [&]() -> lev::Task<lev::Result<lev::Accepted>> {
        co_return co_await loop.accept(listener).stop_on(src.get_token());
      };
      loop.spawn(connector());
      auto got = loop.block_on(acceptor());
      while (!connected) loop.run_once();
      REQUIRE(*connected);
      REQUIRE(got);
      sockaddr_storage local{};
      socklen_t len = sizeof(local);
      ::getsockname(client.get(), reinterpret_cast<sockaddr*>(&local), &len);
      CHECK(got->peer.port() ==
            lev::SocketAddress(reinterpret_cast<sockaddr*>(&local), len).port());

      // Stops through the wrapper: accept, and readable with a time limit
      // (on io_uring a linked timeout) end cancelled, not timed out.
      std::stop_source stop_accept, stop_read;
      auto [a, b] = lev::test::socket_pair();
      auto waiting_accept = [&]() -> lev::Task<lev::Result<lev::Accepted>> {
        co_return co_await loop.accept(listener).stop_on(stop_accept.get_token());
      };
      auto waiting_read = [&]() -> lev::Task<lev::Result<unsigned>> {
        co_return co_await loop.readable(a, 10s).stop_on(stop_read.get_token());
      };
      auto stopper = [&]() -> lev::Task<> {
        (void)co_await loop.after(5ms);
        stop_accept.request_stop();
        stop_read.request_stop();
      };
      loop.spawn(stopper());
      std::optional<lev::Result<unsigned>> read;
      auto reader = [&]() -> lev::Task<> { read.emplace(co_await waiting_read()); };
      loop.spawn(reader());
      auto refused = loop.block_on(waiting_accept());
      while (!read) loop.run_once();
      REQUIRE_FALSE(refused);
      CHECK(refused.error().is_cancelled());
      REQUIRE_FALSE(*read);
      CHECK(read->error().is_cancelled());
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a task's token reaches every operation it awaits, also through nested tasks") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::stop_source src;
      std::array<std::byte, 16> buf{};
      int cancelled = 0;
      auto inner = [&]() -> lev::Task<> {
        auto r = co_await loop.recv(a, buf);  // no explicit token
        if (!r && r.error().is_cancelled()) ++cancelled;
        auto t = co_await loop.after(10s);  // already stopped: never armed
        if (!t && t.error().is_cancelled()) ++cancelled;
      };
      auto outer = [&]() -> lev::Task<> {
        auto tok = co_await lev::current_stop_token();
        CHECK(tok.stop_possible());
        co_await inner();
      };
      auto stopper = [&]() -> lev::Task<> {
        (void)co_await loop.after(5ms);
        src.request_stop();
      };
      loop.spawn(stopper());
      loop.block_on(outer().with_stop_token(src.get_token()));
      CHECK(cancelled == 2);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a token stopped before the operation starts never reaches the backend") {
    auto fake = std::make_shared<lev::FakeBackend>();
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    std::stop_source src;
    src.request_stop();
    std::array<std::byte, 4> buf{};
    auto t = [&]() -> lev::Task<lev::Result<std::size_t>> {
      co_return co_await loop.recv(3, buf).stop_on(src.get_token());
    };
    auto r = loop.block_on(t());
    REQUIRE_FALSE(r);
    CHECK(r.error().is_cancelled());
    CHECK(fake->submit_count() == 0);
    CHECK(loop.live_op_count() == 0);
  }

  TEST_CASE("a result that wins the race with the stop request is delivered, not dropped") {
    auto fake = std::make_shared<lev::FakeBackend>();
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    std::stop_source src;
    std::array<std::byte, 8> buf{};
    std::optional<lev::Result<std::size_t>> got;
    auto t = [&]() -> lev::Task<> {
      got.emplace(co_await loop.recv(3, buf).stop_on(src.get_token()));
    };
    loop.spawn(t());
    loop.run_once();
    auto* op = fake->find(lev::detail::OpKind::recv);
    REQUIRE(op);
    fake->complete_with_data(*op, "abc");  // the kernel finished first
    src.request_stop();                    // then the stop arrives
    loop.run_once();
    REQUIRE(got);
    REQUIRE(*got);
    CHECK(**got == 3);
  }

  TEST_CASE("a stop requested from another thread cancels a recv in flight") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::stop_source src;
      std::array<std::byte, 16> buf{};
      std::atomic<bool> started{false};
      auto reader = [&]() -> lev::Task<lev::Result<std::size_t>> {
        started = true;
        co_return co_await loop.recv(a, buf).stop_on(src.get_token());
      };
      std::thread other([&] {
        while (!started) std::this_thread::sleep_for(1ms);
        std::this_thread::sleep_for(10ms);
        src.request_stop();
      });
      auto r = loop.block_on(reader());
      other.join();
      REQUIRE_FALSE(r);
      CHECK(r.error().is_cancelled());
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("stop requests racing completions from another thread: each op settles exactly once") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      constexpr int kRounds = 200;
      int delivered = 0, cancelled = 0;
      std::vector<std::stop_source> sources(kRounds);
      std::atomic<int> armed{-1};
      std::thread other([&] {
        for (int i = 0; i < kRounds; ++i) {
          while (armed.load() < i) std::this_thread::yield();
          if (i % 2) ::send(b.get(), "x", 1, MSG_NOSIGNAL);  // data and stop race
          sources[static_cast<std::size_t>(i)].request_stop();
        }
      });
      auto reader = [&]() -> lev::Task<> {
        std::array<std::byte, 64> buf{};
        for (int i = 0; i < kRounds; ++i) {
          armed = i;
          auto r =
              co_await loop.recv(a, buf).stop_on(sources[static_cast<std::size_t>(i)].get_token());
          if (r)
            delivered += static_cast<int>(*r);
          else if (r.error().is_cancelled())
            ++cancelled;
        }
      };
      loop.block_on(reader());
      other.join();
      // drain what the cancelled rounds left in the socket: no byte lost
      std::array<char, 256> rest{};
      ssize_t n = ::recv(a.get(), rest.data(), rest.size(), MSG_DONTWAIT);
      delivered += n > 0 ? static_cast<int>(n) : 0;
      CHECK(delivered == kRounds / 2);
      CHECK(cancelled >= kRounds / 2);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE(
      "post from other threads: every item runs once, on the loop thread, in per-thread order") {
    for_each_engine([](lev::Loop& loop) {
      constexpr int kThreads = 4, kEach = 5000;
      std::vector<std::vector<int>> seen(kThreads);
      std::atomic<int> total{0};
      const auto loop_thread = std::this_thread::get_id();
      bool off_thread = false;
      auto hold = loop.hold();
      std::vector<std::thread> posters;
      for (int t = 0; t < kThreads; ++t)
        posters.emplace_back([&, t] {
          for (int i = 0; i < kEach; ++i)
            loop.post([&, t, i] {
              if (std::this_thread::get_id() != loop_thread) off_thread = true;
              seen[static_cast<std::size_t>(t)].push_back(i);
              if (++total == kThreads * kEach) loop.stop();
            });
        });
      loop.run();
      for (auto& p : posters) p.join();
      CHECK_FALSE(off_thread);
      CHECK(total == kThreads * kEach);
      for (auto& s : seen) {
        REQUIRE(s.size() == static_cast<std::size_t>(kEach));
        bool ordered = true;
        for (int i = 0; i < kEach; ++i) ordered = ordered && s[static_cast<std::size_t>(i)] == i;
        CHECK(ordered);
      }
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a post never runs inside the post call, even on the loop thread") {
    lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
    int ran = 0;
    loop.post([&] { ++ran; });
    CHECK(ran == 0);
    CHECK(loop.live_op_count() == 1);
    loop.run();
    CHECK(ran == 1);
  }

  TEST_CASE("stop() from another thread ends run() blocked in the kernel") {
    for_each_engine([](lev::Loop& loop) {
      auto hold = loop.hold();  // nothing live: run() would otherwise return
      std::thread other([&] {
        std::this_thread::sleep_for(20ms);
        loop.stop();
      });
      loop.run();
      other.join();
      CHECK_FALSE(loop.is_running());
    });
  }

  TEST_CASE("posts still queued when the loop is destroyed are dropped, not leaked or run") {
    int ran = 0;
    {
      lev::Loop loop{lev::Model::proactor, lev::test::proactor_options()};
      std::thread other([&] { loop.post([&] { ++ran; }); });
      other.join();
      loop.post([&] { ++ran; });
    }
    CHECK(ran == 0);
  }

  TEST_CASE("sleep_for is cancelled by the task's token") {
    auto fake = std::make_shared<lev::FakeBackend>();
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    std::stop_source src;
    auto sleeper = [&]() -> lev::Task<bool> {
      auto r = co_await loop.sleep_for(1h);
      co_return !r && r.error().is_cancelled();
    };
    auto stopper = [&]() -> lev::Task<> {
      (void)co_await loop.sleep_for(1s);
      src.request_stop();
    };
    loop.spawn(stopper());
    const auto t0 = loop.now();
    CHECK(loop.block_on(sleeper().with_stop_token(src.get_token())));
    CHECK(loop.now() - t0 == 1s);  // virtual time: stopped at 1 s, not 1 h
  }
}
