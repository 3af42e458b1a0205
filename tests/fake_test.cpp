// lev::FakeBackend's public test surface (lev/fake.hpp): FakeOp, find by
// name, run_until. Everything here uses public names only, as a user's
// test would.
#include "lev/fake.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "lev/lev.hpp"

using namespace std::chrono_literals;

namespace {

struct Fake {
  std::shared_ptr<lev::FakeBackend> fake = std::make_shared<lev::FakeBackend>();
  lev::Loop loop{lev::Model::proactor, {.backend = fake}};
};

}  // namespace

TEST_SUITE("fake") {
  TEST_CASE(
      "find names operations as errors do; an unknown name is an error that lists the names") {
    Fake f;
    CHECK_FALSE(f.fake->find("recv"));  // nothing pending: an empty FakeOp
    CHECK_THROWS_WITH_AS((void)f.fake->find("recieve"),
                         doctest::Contains("no backend operation is called 'recieve'"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS((void)f.fake->find("timer"), doctest::Contains("advance() the clock"),
                         std::invalid_argument);
    std::array<char, 8> a{}, b{};
    std::optional<lev::Result<std::size_t>> first, second;
    auto r1 = [&]() -> lev::Task<> { first = co_await f.loop.recv(3, a); };
    auto r2 = [&]() -> lev::Task<> { second = co_await f.loop.recv(4, b); };
    f.loop.spawn(r1());
    f.loop.spawn(r2());
    lev::FakeOp oldest = f.fake->run_until(f.loop, "recv");
    CHECK(oldest.fd() == 3);
    CHECK(oldest.name() == "recv");
    CHECK(oldest.size() == 8);
    lev::FakeOp on4 = f.fake->find("recv", 4);
    REQUIRE(on4);
    CHECK(f.fake->pending_ops().size() == 2);
    on4.fail(std::errc::connection_reset);
    oldest.complete_with_data("abc");
    f.loop.run_once();
    REQUIRE(first);
    CHECK(first->value() == 3);
    CHECK(std::string_view(a.data(), 3) == "abc");
    REQUIRE(second);
    CHECK(second->error().code == std::errc::connection_reset);
    CHECK(f.fake->pending_ops().empty());
  }

  TEST_CASE("a FakeOp says what a write carries: send, write at an offset, writev, send_to") {
    Fake f;
    std::array<iovec, 2> iov{iovec{const_cast<char*>("ab"), 2}, iovec{const_cast<char*>("cde"), 3}};
    auto t = [&]() -> lev::Task<> {
      CHECK((co_await f.loop.send(5, std::string_view("hello"))).value() == 5);
      CHECK((co_await f.loop.write(6, std::string_view("xy"), 4096)).value() == 2);
      CHECK((co_await f.loop.writev(6, iov)).value() == 5);
      lev::net::DatagramSocket s{
          f.loop, lev::Fd{::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)}};
      CHECK(
          (co_await s.send_to(std::string_view("dgram"), *lev::SocketAddress::ip("127.0.0.1", 53)))
              .value() == 5);
    };
    f.loop.spawn(t());
    lev::FakeOp send = f.fake->run_until(f.loop, "send");
    CHECK(send.data() == "hello");
    CHECK(send.size() == 5);
    CHECK(send.offset() == std::uint64_t(-1));
    send.complete();
    lev::FakeOp write = f.fake->run_until(f.loop, "write");
    CHECK(write.data() == "xy");
    CHECK(write.offset() == 4096);
    write.complete();
    lev::FakeOp writev = f.fake->run_until(f.loop, "writev");
    CHECK(writev.data() == "abcde");
    CHECK(writev.size() == 5);
    writev.complete();
    lev::FakeOp sendmsg = f.fake->run_until(f.loop, "sendmsg");
    CHECK(sendmsg.data() == "dgram");
    CHECK(sendmsg.peer().to_string() == "127.0.0.1:53");
    sendmsg.complete();
    while (f.loop.live_op_count() > 0) f.loop.run_once();
  }

  TEST_CASE(
      "a FakeOp completes an accept with its peer, a statx with a FileStat, an open by path") {
    Fake f;
    const int conn = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(conn >= 0);
    std::optional<lev::Result<lev::Accepted>> accepted;
    std::optional<lev::Result<lev::FileStat>> st;
    std::optional<lev::Result<lev::File>> opened;
    auto t = [&]() -> lev::Task<> {
      accepted = co_await f.loop.accept(9);
      st = co_await lev::stat(f.loop, "/srv/data");
      opened = co_await lev::File::open(f.loop, "/srv/missing");
      auto c = co_await f.loop.connect(10, *lev::SocketAddress::ip("::1", 8080));
      CHECK(c.error().code == std::errc::connection_refused);
    };
    f.loop.spawn(t());
    f.fake->run_until(f.loop, "accept")
        .complete_accept(conn, *lev::SocketAddress::ip("10.0.0.2", 4000));
    lev::FakeOp statx = f.fake->run_until(f.loop, "statx");
    CHECK(statx.path() == "/srv/data");
    const auto mtime = std::chrono::system_clock::time_point{} + 1'000'000'000s + 5ns;
    statx.complete_stat({.size = 12345, .mode = S_IFREG | 0640, .links = 2, .modified = mtime});
    lev::FakeOp open = f.fake->run_until(f.loop, "openat");
    CHECK(open.path() == "/srv/missing");
    CHECK_THROWS_AS(open.complete_stat({}), std::logic_error);  // not a statx
    open.fail(ENOENT);
    lev::FakeOp connect = f.fake->run_until(f.loop, "connect");
    CHECK(connect.fd() == 10);
    CHECK(connect.peer().to_string() == "[::1]:8080");
    connect.fail(ECONNREFUSED);
    while (f.loop.live_op_count() > 0) f.loop.run_once();
    REQUIRE(accepted);
    REQUIRE(*accepted);
    CHECK((*accepted)->fd.get() == conn);  // the Accepted owns it now and closes it
    CHECK((*accepted)->peer.to_string() == "10.0.0.2:4000");
    REQUIRE(st);
    REQUIRE(*st);
    CHECK((*st)->size == 12345);
    CHECK(S_ISREG((*st)->mode));
    CHECK((*st)->links == 2);
    CHECK((*st)->modified == mtime);
    REQUIRE(opened);
    CHECK(opened->error().message() == "openat(/srv/missing): No such file or directory");
  }

  TEST_CASE("run_until says so when the code under test waits on something else") {
    Fake f;
    auto t = [&]() -> lev::Task<> { (void)co_await f.loop.sleep_for(1s); };
    f.loop.spawn(t());
    // The task sleeps (virtual time jumps to its end) and finishes: no send comes.
    CHECK_THROWS_WITH_AS(f.fake->run_until(f.loop, "send"),
                         doctest::Contains("no send operation came"), std::logic_error);
    CHECK(f.loop.live_op_count() == 0);
  }
  TEST_CASE("a FakeOp reports its linked timeout's deadline and can refuse a zero-copy send") {
    auto fake =
        std::make_shared<lev::FakeBackend>(lev::FakeBackend::Options{.linked_timeouts = true});
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    std::array<char, 4> buf{};
    std::optional<lev::Result<std::size_t>> got, sent;
    auto t = [&]() -> lev::Task<> {
      got = co_await loop.recv(3, buf, lev::IoOptions{.timeout = 2s});
      sent = co_await loop.send(3, std::string_view("hi"));
    };
    const lev::TimePoint t0 = loop.now();
    loop.spawn(t());
    lev::FakeOp recv = fake->run_until(loop, "recv");
    CHECK(recv.linked_deadline() == t0 + 2s);
    recv.complete_with_data("ok");
    lev::FakeOp send = fake->run_until(loop, "send");
    CHECK(send.linked_deadline() == lev::TimePoint::max());  // no limit
    send.refuse_zero_copy();                                 // the loop sends it again, plain
    fake->run_until(loop, "send").complete();
    while (!sent) loop.run_once();
    CHECK(got->value() == 2);
    CHECK(sent->value() == 2);
  }
}
