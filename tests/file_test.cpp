// lev::File, the directory operations, vectored I/O and splice against the
// real kernel, in a temporary directory; parametrised over the real engines.
#include "lev/file.hpp"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::for_each_engine;

namespace {

// A fresh directory under $TMPDIR (or /tmp), removed with what it holds.
struct TempDir {
  std::string path;
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/lev-file-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp");
    path = tmpl;
  }
  ~TempDir() {
    const std::string cmd = "rm -rf '" + path + "'";
    (void)std::system(cmd.c_str());
  }
  [[nodiscard]] std::string at(const char* name) const { return path + "/" + name; }
};

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

}  // namespace

TEST_SUITE("file") {
  TEST_CASE("a file written, synced and read back holds exactly the bytes written") {
    for_each_engine([](lev::Loop& loop) {
      TempDir dir;
      const std::string path = dir.at("data");
      const std::string data = pattern(300 * 1024 + 17);
      auto t = [&]() -> lev::Task<> {
        auto f = co_await lev::File::open(loop, path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        REQUIRE(f);
        auto w = co_await f->write_all_at(data, 0);
        CHECK(w.value() == data.size());
        CHECK(co_await f->fsync());
        CHECK(co_await f->fdatasync());
        auto st = co_await f->stat();
        REQUIRE(st);
        CHECK(st->size == data.size());
        CHECK(S_ISREG(st->mode));
        CHECK((st->mode & 0777) == 0600);
        std::string back(data.size(), '\0');
        std::size_t off = 0;
        while (off < back.size()) {
          auto n = co_await f->read_at(lev::MutableBuffer{back.data() + off, back.size() - off},
                                       off);
          REQUIRE(n);
          if (*n == 0) break;
          off += *n;
        }
        CHECK(off == data.size());
        CHECK(back == data);
        std::array<char, 8> tail{};
        CHECK((co_await f->read_at(tail, data.size())).value() == 0);  // end of file
        CHECK(co_await f->close());
        CHECK(!f->is_open());
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("readv_at and writev_at scatter and gather across several buffers") {
    for_each_engine([](lev::Loop& loop) {
      TempDir dir;
      auto t = [&]() -> lev::Task<> {
        auto f = co_await lev::File::open(loop, dir.at("v"), O_RDWR | O_CREAT, 0600);
        REQUIRE(f);
        std::string a = "first-", b = "second-", c = "third";
        std::array<iovec, 3> out{iovec{a.data(), a.size()}, iovec{b.data(), b.size()},
                                 iovec{c.data(), c.size()}};
        CHECK((co_await f->writev_at(out, 10)).value() == 18);
        std::array<char, 4> x{}, y{}, z{};
        std::array<iovec, 3> in{iovec{x.data(), 4}, iovec{y.data(), 4}, iovec{z.data(), 4}};
        CHECK((co_await f->readv_at(in, 10)).value() == 12);
        CHECK(std::string(x.data(), 4) + std::string(y.data(), 4) + std::string(z.data(), 4) ==
              "first-second");
        // Near the end a read is partial: 18 - 14 = 4 bytes, all in the first buffer.
        CHECK((co_await f->readv_at(in, 24)).value() == 4);
        CHECK(std::string(x.data(), 4) == "hird");
        // The 10 bytes before the write read back as zeros.
        std::array<char, 10> hole{};
        hole.fill('?');
        CHECK((co_await f->read_at(hole, 0)).value() == 10);
        CHECK(hole == std::array<char, 10>{});
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("fallocate grows, truncate shrinks, and stat sees both") {
    for_each_engine([](lev::Loop& loop) {
      TempDir dir;
      auto t = [&]() -> lev::Task<> {
        auto f = co_await lev::File::open(loop, dir.at("sized"), O_RDWR | O_CREAT, 0600);
        REQUIRE(f);
        CHECK(co_await f->fallocate(0, 1 << 20));
        CHECK((co_await f->stat()).value().size == (1u << 20));
        CHECK(co_await f->truncate(4096));
        CHECK((co_await f->stat()).value().size == 4096);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("directories are made, files renamed and removed") {
    for_each_engine([](lev::Loop& loop) {
      TempDir dir;
      auto t = [&]() -> lev::Task<> {
        const std::string sub = dir.at("sub");
        CHECK(co_await lev::mkdir(loop, sub, 0700));
        CHECK(S_ISDIR((co_await lev::stat(loop, sub)).value().mode));
        {
          auto f = co_await lev::File::open(loop, sub + "/a", O_WRONLY | O_CREAT, 0600);
          REQUIRE(f);
          CHECK(co_await f->write_all_at(std::string_view("abc"), 0));
        }
        CHECK(co_await lev::rename(loop, sub + "/a", sub + "/b"));
        CHECK((co_await lev::stat(loop, sub + "/b")).value().size == 3);
        CHECK((co_await lev::stat(loop, sub + "/a")).error().code == std::errc::no_such_file_or_directory);
        CHECK(co_await lev::unlink(loop, sub + "/b"));
        CHECK(co_await lev::unlink(loop, sub, true));
        CHECK(!co_await lev::stat(loop, sub));
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("errors are values naming the op, and the path or the fd it concerned") {
    for_each_engine([](lev::Loop& loop) {
      TempDir dir;
      auto t = [&]() -> lev::Task<> {
        const std::string missing = dir.at("missing");
        auto f = co_await lev::File::open(loop, missing);
        REQUIRE(!f);
        CHECK(f.error().code == std::errc::no_such_file_or_directory);
        CHECK(f.error().message() == "openat(" + missing + "): No such file or directory");
        REQUIRE(f.error().path);
        CHECK(std::string(f.error().path) == missing);
        auto d = co_await lev::File::open(loop, dir.path, O_WRONLY);
        REQUIRE(!d);
        CHECK(d.error().code == std::errc::is_a_directory);
        CHECK(d.error().message().rfind("openat(" + dir.path + ")", 0) == 0);
        auto again = co_await lev::mkdir(loop, dir.path);
        CHECK(again.error().code == std::errc::file_exists);
        CHECK(again.error().message().rfind("mkdirat(" + dir.path + ")", 0) == 0);
        auto gone = co_await lev::unlink(loop, missing);
        CHECK(gone.error().message().rfind("unlinkat(" + missing + ")", 0) == 0);
        auto moved = co_await lev::rename(loop, missing, dir.at("elsewhere"));
        CHECK(moved.error().message().rfind(
                  "renameat(" + missing + " -> " + dir.at("elsewhere") + ")", 0) == 0);
        auto st = co_await lev::stat(loop, missing);
        CHECK(st.error().message().rfind("statx(" + missing + ")", 0) == 0);
        // The same path twice is kept once: both errors point at one text.
        auto f2 = co_await lev::File::open(loop, missing);
        CHECK(f2.error().path == f.error().path);
        // A closed fd: EBADF, named by its number.
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        ::close(fds[0]);
        ::close(fds[1]);
        std::array<char, 4> buf{};
        auto r = co_await loop.read(fds[0], buf, 0);
        CHECK(r.error().code == std::errc::bad_file_descriptor);
        CHECK(r.error().message().find("read(fd " + std::to_string(fds[0]) + ")") !=
              std::string::npos);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("a pipe-backed read is cancelled by a stop and ended by its deadline") {
    for_each_engine([](lev::Loop& loop) {
      auto [r, w] = lev::test::pipe_pair();
      lev::File f{loop, std::move(r)};
      auto t = [&]() -> lev::Task<> {
        std::array<char, 16> buf{};
        const auto start = loop.now();
        auto timed = co_await f.read_at(buf, std::uint64_t(-1), {.timeout = 30ms});
        CHECK(timed.error().is_timeout());
        CHECK(loop.now() - start >= 30ms);
        std::stop_source stop;
        auto timer = loop.after(10ms, [&](lev::Operation&, lev::Result<lev::Expired>) {
          stop.request_stop();
        });
        auto cancelled = co_await f.read_at(buf, std::uint64_t(-1)).stop_on(stop.get_token());
        CHECK(cancelled.error().is_cancelled());
        // The pipe still works afterwards: nothing was consumed.
        REQUIRE(::write(w.get(), "ok", 2) == 2);
        CHECK((co_await f.read_at(buf, std::uint64_t(-1))).value() == 2);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("writev and readv on a socket give partial results, writev_all sends everything") {
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();
      int small = 4096;
      ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
      const std::string big = pattern(1 << 20);
      auto t = [&]() -> lev::Task<> {
        std::array<iovec, 2> out{iovec{const_cast<char*>(big.data()), big.size() / 2},
                                 iovec{const_cast<char*>(big.data()) + big.size() / 2,
                                       big.size() / 2}};
        auto part = co_await loop.writev(a, out);
        REQUIRE(part);
        CHECK(*part > 0);
        CHECK(*part < big.size());  // the socket buffer takes only part
        std::string got(*part, '\0');
        std::size_t have = 0;
        while (have < got.size()) {
          std::array<iovec, 2> in{iovec{got.data() + have, (got.size() - have) / 2},
                                  iovec{got.data() + have + (got.size() - have) / 2,
                                        got.size() - have - (got.size() - have) / 2}};
          auto n = co_await loop.readv(b, in);
          REQUIRE(n);
          REQUIRE(*n > 0);
          have += *n;
        }
        CHECK(got == big.substr(0, got.size()));
        // writev_all: every byte, while a reader drains the other end.
        std::string rest;
        auto reader = [&]() -> lev::Task<> {
          std::array<char, 65536> buf{};
          while (rest.size() < big.size()) {
            auto n = co_await loop.recv(b, buf);
            if (!n || *n == 0) break;
            rest.append(buf.data(), *n);
          }
        };
        loop.spawn(reader());
        auto all = co_await loop.writev_all(a, out);
        CHECK(all.value() == big.size());
        while (rest.size() < big.size()) (void)co_await loop.nop();
        CHECK(rest == big);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("splice moves bytes from a pipe into a socket") {
    for_each_engine([](lev::Loop& loop) {
      auto [r, w] = lev::test::pipe_pair();
      auto [a, b] = lev::test::socket_pair();
      auto t = [&]() -> lev::Task<> {
        const std::string msg = pattern(10000);
        REQUIRE(::write(w.get(), msg.data(), msg.size()) == static_cast<ssize_t>(msg.size()));
        std::size_t moved = 0;
        while (moved < msg.size()) {
          auto n = co_await loop.splice(r, a, msg.size() - moved);
          REQUIRE(n);
          moved += *n;
        }
        std::string got;
        std::array<char, 4096> buf{};
        while (got.size() < msg.size()) {
          auto n = co_await loop.recv(b, buf);
          REQUIRE(n);
          got.append(buf.data(), *n);
        }
        CHECK(got == msg);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("on the fake backend a file op is recorded, completed by the test, and cancelled before it runs") {
    lev::test::FakeLoop f;
    std::optional<lev::Result<lev::File>> opened;
    auto open = [&]() -> lev::Task<> { opened = co_await lev::File::open(f.loop, "/x/y", O_RDONLY); };
    f.loop.spawn(open());
    f.loop.run_once();
    lev::detail::OpBase* op = f.fake->find(lev::detail::OpKind::openat);
    REQUIRE(op);
    CHECK(std::string(static_cast<lev::detail::PathArgs*>(op->args)->path) == "/x/y");
    f.fake->fail(*op, ENOENT);
    f.loop.run_once();
    REQUIRE(opened);
    CHECK(opened->error().code == std::errc::no_such_file_or_directory);
    CHECK(std::string(opened->error().op) == "openat");
    // An fsync cancelled while staged never reaches the "kernel".
    lev::File file{f.loop, lev::Fd{::open("/dev/null", O_RDONLY | O_CLOEXEC)}};
    std::stop_source stop;
    std::optional<lev::Result<void>> synced;
    auto sync = [&]() -> lev::Task<> { synced = co_await file.fsync().stop_on(stop.get_token()); };
    f.loop.spawn(sync());
    f.loop.drain_callbacks();
    REQUIRE(f.fake->find(lev::detail::OpKind::fsync));
    stop.request_stop();
    f.loop.run_once();
    REQUIRE(synced);
    CHECK(synced->error().is_cancelled());
    CHECK(f.loop.live_op_count() == 0);
  }

  TEST_CASE("on the fake backend statx, directory ops, readv and splice carry their arguments and results") {
    lev::test::FakeLoop f;
    using lev::detail::OpKind;
    // statx(path): the path reaches the op; what the "kernel" writes is the FileStat.
    std::optional<lev::Result<lev::FileStat>> st;
    auto stat = [&]() -> lev::Task<> { st = co_await lev::stat(f.loop, "/srv/a"); };
    f.loop.spawn(stat());
    f.loop.run_once();
    lev::detail::OpBase* op = f.fake->find(OpKind::statx);
    REQUIRE(op);
    auto& sa = *static_cast<lev::detail::StatxArgs*>(op->args);
    CHECK(std::string(sa.path) == "/srv/a");
    sa.out = {};
    sa.out.stx_size = 12345;
    sa.out.stx_mode = S_IFREG | 0640;
    sa.out.stx_nlink = 2;
    sa.out.stx_mtime.tv_sec = 1'000'000'000;
    f.fake->complete(*op, 0);
    f.loop.run_once();
    REQUIRE(st);
    REQUIRE(*st);
    CHECK((*st)->size == 12345);
    CHECK(S_ISREG((*st)->mode));
    CHECK(((*st)->mode & 0777) == 0640);
    CHECK((*st)->links == 2);
    CHECK((*st)->modified.time_since_epoch() == std::chrono::seconds(1'000'000'000));
    // mkdir, rename, unlink: their paths and flags; each error is the op's.
    std::optional<lev::Result<void>> made, moved, gone;
    auto dirs = [&]() -> lev::Task<> {
      made = co_await lev::mkdir(f.loop, "/srv/d", 0700);
      moved = co_await lev::rename(f.loop, "/srv/d", "/srv/e");
      gone = co_await lev::unlink(f.loop, "/srv/e", true);
    };
    f.loop.spawn(dirs());
    f.loop.run_once();
    op = f.fake->find(OpKind::mkdirat);
    REQUIRE(op);
    CHECK(std::string(static_cast<lev::detail::PathArgs*>(op->args)->path) == "/srv/d");
    CHECK(static_cast<lev::detail::PathArgs*>(op->args)->mode == 0700);
    f.fake->complete(*op, 0);
    f.loop.run_once();
    op = f.fake->find(OpKind::renameat);
    REQUIRE(op);
    CHECK(std::string(static_cast<lev::detail::RenameArgs*>(op->args)->from) == "/srv/d");
    CHECK(std::string(static_cast<lev::detail::RenameArgs*>(op->args)->to) == "/srv/e");
    f.fake->fail(*op, EXDEV);
    f.loop.run_once();
    op = f.fake->find(OpKind::unlinkat);
    REQUIRE(op);
    CHECK(std::string(static_cast<lev::detail::PathArgs*>(op->args)->path) == "/srv/e");
    CHECK(op->flags == AT_REMOVEDIR);
    f.fake->fail(*op, ENOTEMPTY);
    f.loop.run_once();
    REQUIRE((made && moved && gone));
    CHECK(*made);
    CHECK(moved->error().code == std::errc::cross_device_link);
    CHECK(std::string(moved->error().op) == "renameat");
    CHECK(gone->error().code == std::errc::directory_not_empty);
    // readv: the iovecs and the offset reach the op; a short result is a short result.
    std::array<char, 3> a{};
    std::array<char, 5> b{};
    std::array<iovec, 2> iov{iovec{a.data(), a.size()}, iovec{b.data(), b.size()}};
    std::optional<lev::Result<std::size_t>> got;
    auto rv = [&]() -> lev::Task<> { got = co_await f.loop.readv(7, iov, 4096); };
    f.loop.spawn(rv());
    f.loop.run_once();
    op = f.fake->find(OpKind::readv, 7);
    REQUIRE(op);
    CHECK(op->buf == iov.data());
    CHECK(op->len == 2);
    CHECK(op->offset == 4096);
    std::memcpy(a.data(), "abc", 3);
    std::memcpy(b.data(), "de", 2);
    f.fake->complete(*op, 5);
    f.loop.run_once();
    REQUIRE(got);
    CHECK(got->value() == 5);
    // splice: in, out, both offsets and the length; cancelled while staged, it ends cancelled.
    std::stop_source stop;
    std::optional<lev::Result<std::size_t>> spliced;
    auto sp = [&]() -> lev::Task<> {
      spliced = co_await f.loop.splice(3, 9, 65536, -1, 100).stop_on(stop.get_token());
    };
    f.loop.spawn(sp());
    f.loop.drain_callbacks();
    op = f.fake->find(OpKind::splice, 3);
    REQUIRE(op);
    CHECK(static_cast<lev::detail::SpliceArgs*>(op->args)->fd_out == 9);
    CHECK(static_cast<lev::detail::SpliceArgs*>(op->args)->off_out == 100);
    CHECK(op->len == 65536);
    CHECK(op->offset == static_cast<std::uint64_t>(-1));
    stop.request_stop();
    f.loop.run_once();
    REQUIRE(spliced);
    CHECK(spliced->error().is_cancelled());
    CHECK(f.loop.live_op_count() == 0);
  }
}
