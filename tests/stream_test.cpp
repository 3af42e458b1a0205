#include "lev/net/stream.hpp"

#include <doctest/doctest.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lev/deadline.hpp"
#include "lev/fake.hpp"
#include "lev/loop.hpp"
#include "lev/net/listen.hpp"
#include "lev/when.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using lev::net::Codec;
using lev::net::Stream;
using lev::test::for_each_engine;

namespace {
// Writes `data` to fd in pieces of `piece` bytes, one loop round apart.
lev::Task<> dribble(lev::Loop& loop, int fd, std::string data, std::size_t piece) {
  for (std::size_t i = 0; i < data.size(); i += piece) {
    (co_await loop.send_all(fd, std::string_view(data).substr(i, piece))).value();
    (void)co_await loop.after(0ms);
  }
}

// Reads `fd` until EOF (at most 100,000 receives); the bytes read, or the
// error that came first (operation_canceled when the task was cancelled).
lev::Task<lev::Result<std::size_t>> drain_to_eof(lev::Loop& loop, int fd) {
  std::size_t total = 0;
  char buf[65536];
  for (int round = 0; round < 100'000; ++round) {
    auto n = co_await loop.recv(fd, buf);
    if (!n) co_return n.error();
    if (*n == 0) break;
    total += *n;
  }
  co_return total;
}

// Runs the loop for a few milliseconds (bounded even when something stays
// live, unlike run()).
void settle(lev::Loop& loop) {
  auto pause = [&]() -> lev::Task<> { (void)co_await loop.after(10ms); };
  loop.block_on(pause());
}

// A socket pair whose first end sends into small kernel buffers, so that a
// peer that does not read stalls the writer early.
std::pair<lev::Fd, lev::Fd> small_buffered_pair() {
  auto [a, b] = lev::test::socket_pair();
  int small = 4096;
  ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  ::setsockopt(b.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  return {std::move(a), std::move(b)};
}
}  // namespace

TEST_SUITE("stream") {
  TEST_CASE("codecs frame and unframe messages") {
    std::string out;
    REQUIRE(Codec::length_prefixed().encode(out, "abc"));
    CHECK(out == std::string("\0\0\0\3abc", 7));
    auto d = Codec::length_prefixed().decode(out);
    CHECK(d.status == Codec::Decoded::Status::message);
    CHECK(d.message == "abc");
    CHECK(d.consumed == 7);
    CHECK(Codec::line().decode("no end").status == Codec::Decoded::Status::need_more);
    CHECK(Codec::line('\n', 4).decode("toolong").status == Codec::Decoded::Status::error);
    std::string l;
    CHECK_FALSE(Codec::line().encode(l, "a\nb"));  // the delimiter cannot be inside a line
    CHECK(Codec::length_prefixed(2).decode(std::string("\0\0\0\5", 4)).status ==
          Codec::Decoded::Status::error);
  }

  TEST_CASE("lines split one byte per read, and many lines in one read") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      Stream s{loop, std::move(a), {.codec = Codec::line()}};
      std::string text = "alpha\nbeta\ngamma\n";
      std::string many;
      for (int i = 0; i < 100; ++i) many += "line " + std::to_string(i) + "\n";
      loop.spawn(dribble(loop, b.get(), text, 1));
      auto t = [&]() -> lev::Task<std::vector<std::string>> {
        std::vector<std::string> got;
        for (int i = 0; i < 3; ++i) got.push_back(*(co_await s.read_message()).value());
        (co_await loop.send_all(b, many)).value();  // 100 lines in one go
        for (int i = 0; i < 100; ++i) got.push_back(*(co_await s.read_message()).value());
        co_return got;
      };
      auto got = loop.block_on(t());
      REQUIRE(got.size() == 103);
      CHECK(got[0] == "alpha");
      CHECK(got[1] == "beta");
      CHECK(got[2] == "gamma");
      CHECK(got[102] == "line 99");
    });
  }

  TEST_CASE("an over-long line is a clear error, not unbounded memory") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      Stream s{loop, std::move(a), {.codec = Codec::line('\n', 16), .read_chunk = 8}};
      auto t = [&]() -> lev::Task<> {
        (co_await loop.send_all(b, std::string(100, 'x'))).value();
        auto r = co_await s.read_message();
        REQUIRE_FALSE(r);
        CHECK(r.error().code == std::errc::message_size);
        CHECK(std::string(r.error().op).find("line too long") != std::string::npos);
      };
      loop.block_on(t());
    });
  }

  // Before: a Stream's reads could be bounded only by with_timeout around
  // each read_message (a sleeper task and a timer per message): the line
  // and chat servers paid that per line.
  TEST_CASE("read_message guarded by an IdleDeadline ends timed_out and keeps what it received") {
    for_each_engine([](lev::Loop& loop) {
      for (bool socket : {true, false}) {
        CAPTURE(socket);
        auto [a, b] = socket ? lev::test::socket_pair() : lev::test::pipe_pair();
        Stream s{loop, std::move(a)};
        lev::IdleDeadline idle{loop, lev::Duration::max()};
        auto t = [&]() -> lev::Task<> {
          (co_await loop.write(b, std::string_view("one\ntw"))).value();
          idle.limit_until(loop.now() + 50ms);
          auto first = co_await s.read_message(idle);
          REQUIRE(first);
          CHECK(**first == "one");
          const auto began = loop.now();
          auto second = co_await s.read_message(idle);  // "tw" and then nothing
          REQUIRE_FALSE(second);
          CHECK(second.error().is_timeout());
          CHECK(loop.now() - began < 5s);
          idle.limit_until(lev::TimePoint::max());
          idle.rearm();
          (co_await loop.write(b, std::string_view("o\n"))).value();
          auto third = co_await s.read_message(idle);
          REQUIRE(third);
          CHECK(**third == "two");  // the bytes received before the timeout were kept
        };
        loop.block_on(t());
      }
    });
  }

  TEST_CASE("length-prefixed frames split at every byte boundary") {
    for_each_engine([](lev::Loop& loop) {
      std::string wire;
      REQUIRE(Codec::length_prefixed().encode(wire, "first frame"));
      REQUIRE(Codec::length_prefixed().encode(wire, ""));
      REQUIRE(Codec::length_prefixed().encode(wire, "third"));
      for (std::size_t cut = 1; cut < wire.size(); ++cut) {
        CAPTURE(cut);
        auto [a, b] = lev::test::socket_pair();
        Stream s{loop, std::move(a), {.codec = Codec::length_prefixed()}};
        auto t = [&]() -> lev::Task<std::vector<std::string>> {
          (co_await loop.send_all(b, std::string_view(wire).substr(0, cut))).value();
          (void)co_await loop.after(0ms);
          (co_await loop.send_all(b, std::string_view(wire).substr(cut))).value();
          (co_await loop.shutdown(b, lev::Shutdown::write)).value();
          std::vector<std::string> got;
          for (;;) {
            auto m = (co_await s.read_message()).value();
            if (!m) break;
            got.push_back(*m);
          }
          co_return got;
        };
        CHECK(loop.block_on(t()) == std::vector<std::string>{"first frame", "", "third"});
      }
    });
  }

  TEST_CASE("a stream that ends inside a frame is an error") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      Stream s{loop, std::move(a), {.codec = Codec::length_prefixed()}};
      auto t = [&]() -> lev::Task<> {
        (co_await loop.send_all(b, std::string("\0\0\0\x09half", 8))).value();
        b.reset();
        auto r = co_await s.read_message();
        REQUIRE_FALSE(r);
        CHECK(r.error().code == std::errc::connection_aborted);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("backpressure: the writer suspends while the reader stops, nothing is lost") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      int one = 4096;
      ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &one, sizeof(one));
      ::setsockopt(b.get(), SOL_SOCKET, SO_RCVBUF, &one, sizeof(one));
      Stream w{loop,
               std::move(a),
               {.codec = Codec::line(), .high_watermark = 64 * 1024, .low_watermark = 16 * 1024}};
      Stream r{loop, std::move(b), {.codec = Codec::line()}};
      constexpr int kLines = 20'000;
      int written = 0;
      bool writer_done = false;
      auto writer = [&]() -> lev::Task<> {
        for (int i = 0; i < kLines; ++i) {
          (co_await w.write_message("message number " + std::to_string(i))).value();
          ++written;
        }
        (co_await w.shutdown_write()).value();
        writer_done = true;
      };
      loop.spawn(writer());
      // The reader does nothing for a while: the writer must stall.
      auto idle = [&]() -> lev::Task<> { (void)co_await loop.after(30ms); };
      loop.block_on(idle());
      CHECK(written < kLines);
      CHECK(w.queued() <= 64 * 1024 + 64);
      auto reader = [&]() -> lev::Task<int> {
        int n = 0;
        for (;;) {
          auto m = (co_await r.read_message()).value();
          if (!m) break;
          if (*m != "message number " + std::to_string(n)) co_return -1;  // order
          ++n;
        }
        co_return n;
      };
      CHECK(loop.block_on(reader()) == kLines);
      loop.run();
      CHECK(writer_done);
    });
  }

  TEST_CASE("a half-close is a clean end, a peer reset is an error") {
    for_each_engine([](lev::Loop& loop) {
      auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
      auto t = [&]() -> lev::Task<> {
        lev::Fd c{::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
        (co_await loop.connect(c, l.address())).value();
        auto server_side = (co_await loop.accept(l.fd())).value();
        Stream s{loop, std::move(server_side.fd)};
        (co_await loop.send_all(c, std::string_view("last\n"))).value();
        (co_await loop.shutdown(c, lev::Shutdown::write)).value();  // half-close
        CHECK(*(co_await s.read_message()).value() == "last");
        CHECK_FALSE((co_await s.read_message()).value().has_value());
        CHECK((co_await s.write_message("still open the other way")));
        linger lg{1, 0};  // close with a reset
        ::setsockopt(c.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        c.reset();
        (void)co_await loop.after(10ms);
        auto r = co_await s.write_message(std::string(100000, 'r'));
        auto f = co_await s.flush();
        CHECK_FALSE((r && f));
        if (!f)
          CHECK((f.error().code == std::errc::connection_reset ||
                 f.error().code == std::errc::broken_pipe));
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("replies queued while a send is in flight arrive intact (pipelined client)") {
    // Regression: the queue was one std::string that grew (and moved) while
    // the kernel still read from it: EFAULT, or stale bytes on the wire.
    for_each_engine([](lev::Loop& loop) {
      // TCP, and queues past glibc's mmap threshold: a moved buffer is
      // unmapped, so a stale pointer faults instead of passing by luck.
      auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
      lev::Fd b{::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
      REQUIRE((::connect(b.get(), l.address().data(), l.address().size()) == 0 ||
               errno == EINPROGRESS));
      auto accept_one = [&]() -> lev::Task<lev::Fd> {
        co_return std::move((co_await loop.accept(l.fd())).value().fd);
      };
      lev::Fd a = loop.block_on(accept_one());
      int small = 8192;
      ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
      std::string all;
      for (int i = 0; i < 20'000; ++i) all += "line number " + std::to_string(i) + "\n";
      auto server = [&]() -> lev::Task<> {
        Stream s{loop, std::move(a)};
        for (;;) {
          auto m = (co_await s.read_message()).value();
          if (!m) break;
          (co_await s.write_message("echo: " + *m)).value();
        }
        (co_await s.close()).value();
      };
      auto client = [&]() -> lev::Task<std::string> {
        (co_await loop.send_all(b, all)).value();  // everything before reading
        (co_await loop.shutdown(b, lev::Shutdown::write)).value();
        std::string got;
        char buf[65536];
        for (;;) {
          auto n = (co_await loop.recv(b, buf)).value();
          if (n == 0) break;
          got.append(buf, n);
        }
        co_return got;
      };
      loop.spawn(server());
      std::string got = loop.block_on(client());
      std::string want;
      for (int i = 0; i < 20'000; ++i) want += "echo: line number " + std::to_string(i) + "\n";
      CHECK(got.size() == want.size());
      CHECK(got == want);
    });
  }

  TEST_CASE("the buffer of an in-flight send is never moved by later writes") {
    // Regression, made deterministic on the fake backend: the send stays in
    // flight while more messages are queued; its buffer must stay intact.
    auto fake = std::make_shared<lev::FakeBackend>();
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    auto [a, b] = lev::test::socket_pair();
    Stream s{loop, std::move(a), {.codec = Codec::raw()}};
    REQUIRE(s.enqueue("first message"));
    loop.run_once();  // the flusher starts and submits its send
    lev::detail::OpBase* send = fake->find(lev::detail::OpKind::send);
    REQUIRE(send != nullptr);
    for (int i = 0; i < 1000; ++i) REQUIRE(s.enqueue(std::string(1000, 'z')));  // grows the queue
    CHECK(std::string_view(static_cast<const char*>(send->buf), send->len) == "first message");
    fake->complete(*send, static_cast<int>(send->len));
    loop.run_once();
    CHECK(s.queued() == 1000u * 1000u);
  }

  TEST_CASE("the callback style: on_message, on_close, on_error and on_drain") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      Stream server{loop,
                    std::move(a),
                    {.codec = Codec::line(), .high_watermark = 4096, .low_watermark = 1024}};
      std::vector<std::string> seen;
      bool closed = false;
      int drains = 0;
      server.start({.on_message =
                        [&](std::string_view m) {
                          seen.emplace_back(m);
                          (void)server.enqueue(std::string(8000, 'd'));  // above the high mark
                        },
                    .on_drain = [&] { ++drains; },
                    .on_close = [&] { closed = true; },
                    .on_error = [](const lev::Error&) { FAIL("no error expected"); }});
      auto client = [&]() -> lev::Task<std::size_t> {
        (co_await loop.send_all(b, std::string_view("one\ntwo\n"))).value();
        (co_await loop.shutdown(b, lev::Shutdown::write)).value();
        std::size_t got = 0;
        char buf[65536];
        while (got < 16002) got += (co_await loop.recv(b, buf)).value();  // 2 x (8000 + newline)
        co_return got;
      };
      CHECK(loop.block_on(client()) == 16002);
      loop.run();
      CHECK(seen == std::vector<std::string>{"one", "two"});
      CHECK(closed);
      CHECK(drains >= 1);

      auto [c, d] = lev::test::socket_pair();
      Stream strict{loop, std::move(c), {.codec = Codec::line('\n', 8)}};
      lev::Error error;
      strict.start({.on_error = [&](const lev::Error& e) { error = e; }});
      CHECK(::send(d.get(), "this line is far too long\n", 26, 0) == 26);
      loop.run();
      CHECK(error.code == std::errc::message_size);
    });
  }

  TEST_CASE("close flushes every queued byte before closing") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::string got;
      auto t = [&]() -> lev::Task<> {
        Stream s{loop, std::move(a), {.codec = Codec::raw()}};
        for (int i = 0; i < 100; ++i) (co_await s.write_message("0123456789")).value();
        (co_await s.close()).value();
      };
      auto reader = [&]() -> lev::Task<> {
        char buf[4096];
        for (;;) {
          auto n = co_await loop.recv(b, buf);
          if (!n || *n == 0) break;
          got.append(buf, *n);
        }
      };
      loop.spawn(reader());
      loop.block_on(t());
      loop.run();
      CHECK(got.size() == 1000);
    });
  }

  TEST_CASE("writing to a peer that reset reports the bytes that were not sent") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      Stream s{loop, std::move(a), {.codec = Codec::raw()}};
      b.reset();
      auto t = [&]() -> lev::Task<> {
        (void)co_await s.write_message(std::string(1000, 'q'));
        auto r = co_await s.close();
        REQUIRE_FALSE(r);
        CHECK(r.error().transferred == 1000);
        CHECK((r.error().code == std::errc::broken_pipe ||
               r.error().code == std::errc::connection_reset));
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("a stream whose receives all end inside a message keeps a bounded read buffer") {
    // Regression: when every receive ended mid-message, fill() appended to
    // the gathering buffer and never dropped the consumed prefix: 20,000
    // messages of 3,000 bytes grew the heap by ~95 MB.
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      Stream s{loop, std::move(a), {.codec = Codec::length_prefixed()}};
      constexpr int kMessages = 2000;
      const std::string body(3000, 'm');
      std::string wire;
      for (int i = 0; i < kMessages; ++i) REQUIRE(Codec::length_prefixed().encode(wire, body));
      auto writer = [&]() -> lev::Task<> {
        (co_await loop.send_all(b, wire)).value();  // 3,004-byte frames over 4 KiB receives
        (co_await loop.shutdown(b, lev::Shutdown::write)).value();
      };
      std::size_t peak = 0;
      auto reader = [&]() -> lev::Task<int> {
        int n = 0;
        for (;;) {
          auto m = (co_await s.read_message()).value();
          if (!m) break;
          if (*m != body) co_return -1;
          ++n;
          peak = std::max(peak, s.read_buffer_capacity());
        }
        co_return n;
      };
      loop.spawn(writer());
      CHECK(loop.block_on(reader()) == kMessages);
      CHECK(peak > 0);  // messages did span receives
      CHECK(peak <= 64 * 1024);
    });
  }

  TEST_CASE("a write parked above the high watermark ends when its task is cancelled") {
    // Regression: the parked writer never looked at its task's stop token,
    // so with_timeout around a write to a peer that does not read (and
    // around close()) never returned.
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = small_buffered_pair();
      Stream s{loop,
               std::move(a),
               {.codec = Codec::raw(), .high_watermark = 64 * 1024, .low_watermark = 16 * 1024}};
      auto t = [&]() -> lev::Task<> {
        auto w = co_await lev::with_timeout(loop, s.write_message(std::string(8 << 20, 'w')), 200ms);
        REQUIRE_FALSE(w);
        CHECK(w.error().code == std::errc::timed_out);
        CHECK(s.queued() > 64 * 1024);  // the message stays queued
        auto c = co_await lev::with_timeout(loop, s.close(), 200ms);
        REQUIRE_FALSE(c);
        CHECK(c.error().code == std::errc::timed_out);
      };
      loop.block_on(t());
      // close() gave up: what was not sent is dropped and the peer sees the end.
      CHECK(loop.block_on(drain_to_eof(loop, b.get())).value() < (8u << 20));
      loop.run();
      CHECK(loop.live_op_count() == 0);
    });
  }

  // Regression: close() took any operation_canceled from the flush for its
  // own cancellation, so a send cancelled elsewhere (its fd cancelled, not
  // this close) made close() give up and report "stream close" cancelled.
  TEST_CASE("a send cancelled elsewhere is a write error close() reports, and the fd is closed") {
    lev::test::FakeLoop f;
    auto [a, b] = lev::test::socket_pair();
    Stream s{f.loop, std::move(a), {.codec = Codec::raw()}};
    std::optional<lev::Result<void>> closed;
    auto t = [&]() -> lev::Task<> {
      REQUIRE(s.enqueue("hello"));
      closed = co_await s.close();
    };
    f.loop.spawn(t());
    lev::detail::OpBase* send = nullptr;
    for (int i = 0; i < 5 && !send; ++i) {
      f.loop.run_once();
      send = f.fake->find(lev::detail::OpKind::send);
    }
    REQUIRE(send);
    f.fake->fail(*send, ECANCELED);  // not this close's doing
    lev::detail::OpBase* close = nullptr;
    for (int i = 0; i < 5 && !close && !closed; ++i) {
      f.loop.run_once();
      close = f.fake->find(lev::detail::OpKind::close);
    }
    REQUIRE(close);      // the fd is closed through the loop, as after any write error
    ::close(close->fd);  // the fake runs no syscall
    f.fake->complete(*close, 0);
    for (int i = 0; i < 5 && !closed; ++i) f.loop.run_once();
    REQUIRE(closed);
    REQUIRE_FALSE(*closed);
    CHECK(std::string(closed->error().op) == "stream write (bytes not sent)");
    CHECK(closed->error().transferred == 5);
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE("a cancelled write leaves its message queued and the stream usable") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = small_buffered_pair();
      Stream s{loop,
               std::move(a),
               {.codec = Codec::raw(), .high_watermark = 64 * 1024, .low_watermark = 16 * 1024}};
      const std::string big(1 << 20, 'x');
      std::size_t received = 0;
      auto peer = [&]() -> lev::Task<> { received = (co_await drain_to_eof(loop, b.get())).value(); };
      auto t = [&]() -> lev::Task<> {
        auto w = co_await lev::with_timeout(loop, s.write_message(big), 50ms);
        CHECK_FALSE(w);
        loop.spawn(peer());  // now the peer reads
        (co_await s.write_message("tail")).value();
        (co_await s.close()).value();
      };
      loop.block_on(t());
      loop.run();
      CHECK(received == big.size() + 4);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("destroying a stream stops its callback reader and closes the fd") {
    // Regression: after s->start({...}); s.reset(); a later message still
    // reached on_message, and the peer never saw the hang-up (the reader
    // kept the fd open).
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      auto s = std::make_unique<Stream>(loop, std::move(a));
      int messages = 0;
      s->start({.on_message = [&](std::string_view) { ++messages; }});
      auto t = [&]() -> lev::Task<lev::Result<std::size_t>> {
        (co_await loop.send_all(b, std::string_view("first\n"))).value();
        for (int i = 0; i < 1000 && messages == 0; ++i) (void)co_await loop.after(1ms);
        s.reset();
        (void)co_await loop.send_all(b, std::string_view("second\n"));  // may meet the close
        co_return co_await lev::with_timeout(loop, drain_to_eof(loop, b.get()), 5s);
      };
      auto eof = loop.block_on(t());
      // The peer saw the end (a reset when "second" arrived unread), not a timeout.
      CHECK((eof || eof.error().code == std::errc::connection_reset));
      settle(loop);
      CHECK(messages == 1);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a stream destroyed inside its own on_message gets no further callback") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      auto s = std::make_unique<Stream>(loop, std::move(a));
      std::vector<std::string> seen;
      s->start({.on_message =
                    [&](std::string_view m) {
                      seen.emplace_back(m);
                      s.reset();  // three messages came in one receive
                    },
                .on_close = [] { FAIL("no on_close after the stream is gone"); },
                .on_error = [](const lev::Error&) { FAIL("no on_error after the stream is gone"); }});
      auto t = [&]() -> lev::Task<lev::Result<std::size_t>> {
        (co_await loop.send_all(b, std::string_view("one\ntwo\nthree\n"))).value();
        co_return co_await lev::with_timeout(loop, drain_to_eof(loop, b.get()), 5s);
      };
      CHECK(loop.block_on(t()));
      settle(loop);
      CHECK(seen == std::vector<std::string>{"one"});
    });
  }

  TEST_CASE("on_message gets the stream to reply on, also after the Stream was moved") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      std::optional<Stream> first, second;
      first.emplace(loop, std::move(a));
      std::vector<const Stream*> got;
      first->start({.on_message = [&](Stream& s, std::string_view line) {
        got.push_back(&s);
        REQUIRE(s.enqueue("echo: " + std::string(line)));
        if (line == "one") {  // the Stream moves to another object
          second.emplace(std::move(*first));
          first.reset();
        }
      }});
      const std::string_view want = "echo: one\necho: two\n";
      auto t = [&]() -> lev::Task<std::string> {
        (co_await loop.send_all(b, std::string_view("one\n"))).value();
        (void)co_await loop.after(20ms);  // "one" is handled (and the Stream moved) first
        (co_await loop.send_all(b, std::string_view("two\n"))).value();
        std::string in;
        char buf[256];
        while (in.size() < want.size()) {
          auto n = co_await loop.recv(b, buf, {.timeout = 5s});
          if (!n || *n == 0) break;
          in.append(buf, *n);
        }
        co_return in;
      };
      CHECK(loop.block_on(t()) == want);
      REQUIRE(got.size() == 2);
      CHECK(got[1] == &*second);  // the Stream object as it is now, not where it was
      CHECK(got[0] != got[1]);
    });
  }

  TEST_CASE("move-assigning over a started Stream stops its callbacks, as destroying it does") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      auto [c, d] = lev::test::socket_pair();
      Stream s{loop, std::move(a)};
      int old_messages = 0;
      s.start({.on_message = [&](std::string_view) { ++old_messages; }});
      s = Stream{loop, std::move(c)};  // the first stream lets go: its fd closes
      CHECK(::send(b.get(), "late\n", 5, 0) == 5);
      char byte = 0;
      settle(loop);
      const auto r = ::recv(b.get(), &byte, 1, MSG_DONTWAIT);
      const int err = errno;
      CHECK(r <= 0);
      if (r < 0) CHECK(err == ECONNRESET);  // closed with "late" unread; else EOF: not EAGAIN
      CHECK(old_messages == 0);
      CHECK(s.fd() >= 0);
    });
  }

  TEST_CASE("a clean local close() is reported to neither on_error nor on_close") {
    // Regression: close() closed the fd under the callback reader's
    // receive, which reported "stream read: Bad file descriptor" (io_uring)
    // or "Operation canceled" (epoll) to on_error.
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      Stream s{loop, std::move(a)};
      int errors = 0;
      int closes = 0;
      std::string what;
      s.start({.on_close = [&] { ++closes; },
               .on_error =
                   [&](const lev::Error& e) {
                     ++errors;
                     what = e.message();
                   }});
      auto t = [&]() -> lev::Task<lev::Result<std::size_t>> {
        (void)co_await loop.after(1ms);  // the reader waits in its receive
        (co_await s.write_message("bye")).value();
        (co_await s.close()).value();
        co_return co_await lev::with_timeout(loop, drain_to_eof(loop, b.get()), 5s);
      };
      auto got = loop.block_on(t());
      loop.run();
      CHECK(got);
      if (got) CHECK(*got == 4);
      CHECK_MESSAGE(errors == 0, what);
      CHECK(closes == 0);
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("a write error reaches on_error without another enqueue, once") {
    // Decided (issue 16): in the callback style a failed flush is reported
    // through on_error as soon as it happens (it counts the bytes not
    // sent); after on_error no callback runs. Before, it surfaced only as
    // the result of the next enqueue().
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      REQUIRE(::shutdown(b.get(), SHUT_RD) == 0);  // sends to it fail with EPIPE
      Stream s{loop, std::move(a)};
      int errors = 0;
      int closes = 0;
      lev::Error seen;
      s.start({.on_close = [&] { ++closes; },
               .on_error =
                   [&](const lev::Error& e) {
                     ++errors;
                     seen = e;
                   }});
      REQUIRE(s.enqueue("hello"));
      auto t = [&]() -> lev::Task<> {
        for (int i = 0; i < 1000 && errors == 0; ++i) (void)co_await loop.after(1ms);
      };
      loop.block_on(t());
      CHECK(errors == 1);
      CHECK(seen.code == std::errc::broken_pipe);
      CHECK(seen.transferred == 6);
      b.reset();  // the peer's end would now be a clean close: not reported
      loop.run();
      CHECK(errors == 1);
      CHECK(closes == 0);
      CHECK_FALSE(s.enqueue("more"));
    });
  }

  TEST_CASE("a write error after on_close still reaches on_error") {
    // The peer half-closed (on_close), then stopped reading: the failed send
    // is reported too, although the reader has ended.
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      Stream s{loop, std::move(a)};
      int errors = 0;
      int closes = 0;
      s.start({.on_close = [&] { ++closes; }, .on_error = [&](const lev::Error&) { ++errors; }});
      REQUIRE(::shutdown(b.get(), SHUT_WR) == 0);
      auto t = [&]() -> lev::Task<> {
        for (int i = 0; i < 1000 && closes == 0; ++i) (void)co_await loop.after(1ms);
        REQUIRE(::shutdown(b.get(), SHUT_RD) == 0);  // sends to it fail with EPIPE
        CHECK(s.enqueue("late reply"));
        for (int i = 0; i < 1000 && errors == 0; ++i) (void)co_await loop.after(1ms);
      };
      loop.block_on(t());
      CHECK(closes == 1);
      CHECK(errors == 1);
    });
  }
}
