// lev::File, the directory operations, vectored I/O and splice against the
// real kernel, in a temporary directory; parametrised over the real engines.
#include "lev/file.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::for_each_engine;
using lev::test::TempDir;

namespace {

// The whole content of a file, read with plain syscalls.
std::string slurp(const std::string& path) {
  std::string out;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<cannot open>";
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
    out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

// Fills the pipe or socket behind `fd` until it would block; the bytes written.
std::size_t fill(int fd) {
  const int fl = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  static const std::string chunk(4096, 'x');
  std::size_t total = 0;
  for (ssize_t n; (n = ::write(fd, chunk.data(), chunk.size())) > 0;)
    total += static_cast<std::size_t>(n);
  ::fcntl(fd, F_SETFL, fl);
  return total;
}

// The first file write a worker takes waits until `release` (a slow disk).
std::atomic<bool> g_release{false};
std::atomic<int> g_held{0};
void hold_first_write(const lev::detail::OpBase& op) {
  if (op.kind != lev::detail::OpKind::write || g_held.fetch_add(1) != 0) return;
  for (int i = 0; i < 5000 && !g_release.load(); ++i) std::this_thread::sleep_for(1ms);
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

}  // namespace

TEST_SUITE("file") {
  TEST_CASE("a file written, synced and read back holds exactly the bytes written") {
    for_each_engine([](lev::Loop& loop) {
      TempDir dir("file");
      const std::string path = dir.file("data");
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
      TempDir dir("file");
      auto t = [&]() -> lev::Task<> {
        auto f = co_await lev::File::open(loop, dir.file("v"), O_RDWR | O_CREAT, 0600);
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
      TempDir dir("file");
      auto t = [&]() -> lev::Task<> {
        auto f = co_await lev::File::open(loop, dir.file("sized"), O_RDWR | O_CREAT, 0600);
        REQUIRE(f);
        CHECK(co_await f->fallocate(0, 1 << 20));
        CHECK((co_await f->stat()).value().size == (1u << 20));
        CHECK(co_await f->truncate(4096));
        CHECK((co_await f->stat()).value().size == 4096);
      };
      loop.block_on(t());
    });
  }

  // Before: FileStat had the inode but not the device, so "are these two
  // the same file?" (copy_file onto itself) could not be answered from it.
  TEST_CASE("stat names a file by device and inode, as fstat does, through a link too") {
    for_each_engine([](lev::Loop& loop) {
      TempDir dir("file");
      auto t = [&]() -> lev::Task<> {
        auto f = co_await lev::File::open(loop, dir.file("one"), O_RDWR | O_CREAT, 0600);
        REQUIRE(f);
        REQUIRE(::link(dir.file("one").c_str(), dir.file("two").c_str()) == 0);
        struct stat want {};
        REQUIRE(::fstat(f->fd(), &want) == 0);
        auto by_fd = (co_await f->stat()).value();
        auto by_link = (co_await lev::stat(loop, dir.file("two"))).value();
        CHECK(by_fd.device == want.st_dev);
        CHECK(by_fd.inode == want.st_ino);
        CHECK(by_link.device == want.st_dev);
        CHECK(by_link.inode == want.st_ino);
        CHECK(by_fd.links == 2);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("directories are made, files renamed and removed") {
    for_each_engine([](lev::Loop& loop) {
      TempDir dir("file");
      auto t = [&]() -> lev::Task<> {
        const std::string sub = dir.file("sub");
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
      TempDir dir("file");
      auto t = [&]() -> lev::Task<> {
        const std::string missing = dir.file("missing");
        auto f = co_await lev::File::open(loop, missing);
        REQUIRE(!f);
        CHECK(f.error().code == std::errc::no_such_file_or_directory);
        CHECK(f.error().message() == "openat(" + missing + "): No such file or directory");
        REQUIRE(f.error().path);
        CHECK(std::string(f.error().path) == missing);
        auto d = co_await lev::File::open(loop, dir.path(), O_WRONLY);
        REQUIRE(!d);
        CHECK(d.error().code == std::errc::is_a_directory);
        CHECK(d.error().message().rfind("openat(" + dir.path() + ")", 0) == 0);
        auto again = co_await lev::mkdir(loop, dir.path());
        CHECK(again.error().code == std::errc::file_exists);
        CHECK(again.error().message().rfind("mkdirat(" + dir.path() + ")", 0) == 0);
        auto gone = co_await lev::unlink(loop, missing);
        CHECK(gone.error().message().rfind("unlinkat(" + missing + ")", 0) == 0);
        auto moved = co_await lev::rename(loop, missing, dir.file("elsewhere"));
        CHECK(moved.error().message().rfind(
                  "renameat(" + missing + " -> " + dir.file("elsewhere") + ")", 0) == 0);
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

  TEST_CASE(
      "closing a file while a worker runs a write on it and another waits lets no byte reach the "
      "file that reuses its number") {
    // Regression (issue 20, item 2): on epoll a write queued for the file
    // workers survived loop.close(fd) and, once the worker got to it,
    // pwrote into whatever file had taken the number since ("file one
    // holds "", file two holds "meant-for-file-one"). A worker is held
    // in its first write here, as a slow disk would; the close comes while
    // that write runs and the second waits, and file two is opened at once.
    for (const lev::test::Engine& e : lev::test::real_engines()) {
      SUBCASE(e.name) {
        lev::LoopOptions o = lev::test::options_for(e);
        o.file_workers = 1;
        lev::Loop loop{e.model, o};
        TempDir dir("file");
        g_release = false;
        g_held = 0;
        lev::detail::before_file_work.store(&hold_first_write);
        std::thread releaser;
        struct Unhook {
          std::thread& releaser;
          ~Unhook() {
            g_release = true;
            if (releaser.joinable()) releaser.join();
            lev::detail::before_file_work.store(nullptr);
          }
        } unhook{releaser};
        std::optional<lev::Result<std::size_t>> running, queued;
        int two = -1, number = -1;
        auto t = [&]() -> lev::Task<> {
          auto one =
              co_await lev::File::open(loop, dir.file("one"), O_RDWR | O_CREAT | O_TRUNC, 0600);
          REQUIRE(one);
          number = one->fd();
          auto first = [&]() -> lev::Task<> {
            running = co_await one->write_at(std::string_view("running"), 0);
          };
          auto second = [&]() -> lev::Task<> {
            queued = co_await one->write_at(std::string_view("queued"), 100);
          };
          loop.spawn(first());
          loop.spawn(second());
          (void)co_await loop.nop();  // both writes are submitted
          for (int i = 0; i < 200 && g_held.load() == 0 && loop.backend_name() == "epoll"; ++i)
            (void)co_await loop.after(1ms);  // until the worker holds the first write
          releaser = std::thread([] {
            std::this_thread::sleep_for(100ms);
            g_release = true;
          });
          CHECK(co_await one->close());
          two = ::open(dir.file("two").c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
          for (int i = 0; i < 3000 && !(running && queued); ++i) (void)co_await loop.after(1ms);
        };
        loop.block_on(t());
        REQUIRE(two >= 0);
        CHECK(two == number);  // the number was reused at once
        ::close(two);
        REQUIRE(running);
        REQUIRE(queued);
        CHECK(slurp(dir.file("two")).empty());  // nothing meant for file one
        const std::string one = slurp(dir.file("one"));
        // A write either happened in file one or ended cancelled, nothing else.
        CHECK(running->value() == 7);
        CHECK(one.substr(0, 7) == "running");
        if (*queued) {
          CHECK(one.size() == 106);
          CHECK(one.substr(100) == "queued");
        } else {
          CHECK(queued->error().is_cancelled());
          CHECK(one.size() == 7);
        }
        CHECK(loop.live_op_count() == 0);
      }
    }
  }

  TEST_CASE("splice into a full pipe moves the bytes once the reader drains it") {
    // Regression (issue 20, item 6a): on epoll, EAGAIN from a full output
    // pipe marked the *input* not readable; the op waited for an input edge
    // that never came, and never moved the bytes after the output drained.
    for_each_engine([](lev::Loop& loop) {
      auto [a, b] = lev::test::socket_pair();  // input: bytes waiting in a socket
      auto [r, w] = lev::test::pipe_pair();    // output: a full pipe
      const std::size_t filled = fill(w.get());
      REQUIRE(::send(b.get(), "spliced!", 8, 0) == 8);
      std::string tail;
      auto drain = [&]() -> lev::Task<> {
        (void)co_await loop.after(30ms);
        std::string sink(filled, '\0');
        std::size_t got = 0;
        while (got < filled) {
          const ssize_t n = ::read(r.get(), sink.data() + got, filled - got);
          REQUIRE(n > 0);
          got += static_cast<std::size_t>(n);
        }
      };
      auto t = [&]() -> lev::Task<lev::Result<std::size_t>> {
        std::stop_source watchdog;
        auto bite = loop.after(2s, [&](lev::Operation&, lev::Result<lev::Expired> x) {
          if (x) watchdog.request_stop();
        });
        loop.spawn(drain());
        auto n = co_await loop.splice(a, w, 8).stop_on(watchdog.get_token());
        bite.cancel();
        co_return n;
      };
      auto n = loop.block_on(t());
      loop.run_once();  // delivers the cancelled watchdog
      REQUIRE_MESSAGE(n, n.error().message());
      CHECK(*n == 8);
      char buf[8];
      REQUIRE(::read(r.get(), buf, 8) == 8);
      CHECK(std::string(buf, 8) == "spliced!");
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE("splice into a blocking socket whose buffer is full waits without blocking the loop") {
    // Regression (issue 20, item 6b): on epoll only the splice's input was
    // put in O_NONBLOCK mode; into a full blocking socket the splice blocked
    // the loop thread until a reader drained it (a 50 ms timer fired at 301 ms).
    for_each_engine([](lev::Loop& loop) {
      auto [r, w] = lev::test::pipe_pair();    // input: a pipe with bytes
      auto [a, b] = lev::test::socket_pair();  // output: a blocking socket, full
      const std::size_t filled = fill(a.get());
      const std::string msg = pattern(1000);
      REQUIRE(::write(w.get(), msg.data(), msg.size()) == 1000);
      timeval limit{3, 0};
      ::setsockopt(b.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
      std::string received;
      std::thread reader([&, fd = b.get()] {
        std::this_thread::sleep_for(300ms);
        std::string buf(65536, '\0');
        while (received.size() < filled + msg.size()) {
          const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
          if (n <= 0) break;
          received.append(buf.data(), static_cast<std::size_t>(n));
        }
      });
      bool spliced = false, pending_at_timer = false;
      lev::Duration timer_at{};
      const lev::TimePoint start = loop.now();
      auto timer = [&]() -> lev::Task<> {
        (void)co_await loop.after(50ms);
        timer_at = loop.now() - start;
        pending_at_timer = !spliced;
      };
      auto t = [&]() -> lev::Task<> {
        loop.spawn(timer());
        std::size_t moved = 0;
        while (moved < msg.size()) {
          auto n = co_await loop.splice(r, a, msg.size() - moved);
          if (!n) break;
          moved += *n;
        }
        spliced = moved == msg.size();
      };
      loop.block_on(t());
      reader.join();
      CHECK(spliced);
      CHECK(pending_at_timer);  // the loop ran its timer while the splice waited
      CHECK(timer_at < 250ms);
      CHECK(received.size() == filled + msg.size());
      CHECK(received.substr(filled) == msg);
    });
  }

  TEST_CASE("splice with a timeout from an input that never gets data ends timed_out on time") {
    // Regression (finding F2): on io_uring the splice's {.timeout} was a
    // linked timeout, which the kernel never fires while io-wq runs the
    // splice blocking: the splice waited until its input got data (here it
    // would never; the watchdog ended it as cancelled after 2 s).
    for_each_engine([](lev::Loop& loop) {
      auto [pr, pw] = lev::test::pipe_pair();  // inputs: a pipe and a socket, both silent
      auto [a, b] = lev::test::socket_pair();
      auto [r, w] = lev::test::pipe_pair();  // the output
      auto bounded = [&](int in) -> lev::Task<lev::Result<std::size_t>> {
        std::stop_source watchdog;
        auto bite = loop.after(2s, [&](lev::Operation&, lev::Result<lev::Expired> x) {
          if (x) watchdog.request_stop();
        });
        auto n = co_await loop.splice(in, w, 64, {.timeout = 50ms}).stop_on(watchdog.get_token());
        bite.cancel();
        co_return n;
      };
      for (const int in : {pr.get(), a.get()}) {
        const lev::TimePoint start = loop.now();
        auto n = loop.block_on(bounded(in));
        const lev::Duration took = loop.now() - start;
        loop.run_once();  // delivers the cancelled watchdog
        REQUIRE_FALSE(n);
        CHECK_MESSAGE(n.error().code == std::errc::timed_out, n.error().message());
        CHECK(took < 1s);
        CHECK(loop.live_op_count() == 0);
      }
      // Nothing was moved: the output is empty, and the inputs still work.
      REQUIRE(::write(pw.get(), "late", 4) == 4);
      auto t = [&]() -> lev::Task<lev::Result<std::size_t>> {
        co_return co_await loop.splice(pr, w, 64, {.timeout = 2s});
      };
      auto n = loop.block_on(t());
      REQUIRE_MESSAGE(n, n.error().message());
      CHECK(*n == 4);
      char buf[8];
      CHECK(::read(r.get(), buf, sizeof buf) == 4);
    });
  }

  TEST_CASE(
      "closing a splice's input and reusing its number at once never feeds the splice the new "
      "file's bytes") {
    // Regression (finding F3): io_uring resolves a splice's input fd only
    // when io-wq runs it, and a close's cancel-by-fd matches its output fd
    // only. A splice not yet run when its input was closed (lev::Fd) and
    // the number given to a new pipe moved that pipe's bytes ("NEW") into
    // the old splice's output.
    for_each_engine([](lev::Loop& loop) {
      auto [in_r, in_w] = lev::test::pipe_pair();  // the splice's input: never written
      auto [out_r, out_w] = lev::test::pipe_pair();
      lev::Result<std::size_t> got = std::size_t{0};
      bool ended = false;
      std::stop_source watchdog;  // a splice left waiting on the old pipe ends at 2 s
      auto t = [&]() -> lev::Task<> {
        got = co_await loop.splice(in_r, out_w, 64).stop_on(watchdog.get_token());
        ended = true;
      };
      loop.spawn(t());
      loop.drain_callbacks();  // the task is at its co_await: the splice is started
      const int number = in_r.get();
      in_r.reset();  // closed through lev, while the splice is in flight
      auto [new_r, new_w] = lev::test::pipe_pair();
      REQUIRE(::dup2(new_r.get(), number) == number);  // the number reused at once
      lev::Fd reused{number};
      REQUIRE(::write(new_w.get(), "NEW", 3) == 3);
      auto bite = loop.after(2s, [&](lev::Operation&, lev::Result<lev::Expired> x) {
        if (x) watchdog.request_stop();
      });
      for (int i = 0; i < 1000 && !ended; ++i) loop.run_once();
      bite.cancel();
      loop.drain_callbacks();  // delivers the cancelled watchdog
      REQUIRE(ended);
      CHECK_MESSAGE(!got, "the old splice moved " << (got ? *got : 0) << " bytes");
      if (!got)
        CHECK((got.error().code == std::errc::operation_canceled ||
               got.error().code == std::errc::bad_file_descriptor));
      int avail = -1;
      REQUIRE(::ioctl(reused.get(), FIONREAD, &avail) == 0);
      CHECK(avail == 3);  // the new pipe still holds its bytes
      REQUIRE(::ioctl(out_r.get(), FIONREAD, &avail) == 0);
      CHECK(avail == 0);  // and the old splice's output got none
      CHECK(loop.live_op_count() == 0);
    });
  }

  TEST_CASE(
      "opening a FIFO with no writer returns at once on every engine, so deadlines and teardown "
      "never wait for one") {
    // Regression (issue 20, item 7): on epoll File::open ran a blocking
    // openat in a file worker: with_timeout(open, 200ms) returned after
    // the writer came (3 s; never without one) and ~Loop waited as long.
    // io_uring opened it at once. A writer comes after 2 s here, so that
    // the old behaviour fails the timing checks rather than hangs.
    for_each_engine([](lev::Loop& loop) {
      TempDir dir("file");
      const std::string fifo = dir.file("fifo");
      REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
      std::atomic<bool> done{false};
      std::thread late_partner([&] {
        for (int i = 0; i < 2000 && !done; ++i) std::this_thread::sleep_for(1ms);
        while (!done) {  // unblocks an open still waiting for a writer, or a reader
          const int in = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
          const int out = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
          if (out >= 0) ::close(out);
          if (in >= 0) ::close(in);
          std::this_thread::sleep_for(10ms);
        }
      });
      struct Stop {
        std::atomic<bool>& done;
        std::thread& thread;
        ~Stop() {
          done = true;
          thread.join();
        }
      } stop_partner{done, late_partner};
      // Teardown with an open of the FIFO under way does not wait for a writer.
      const auto t0 = std::chrono::steady_clock::now();
      {
        lev::Loop other{loop.model(), {.backend = std::string(loop.backend_name())}};
        std::optional<lev::Result<lev::File>> opened;
        auto open = [&]() -> lev::Task<> {
          opened = co_await lev::File::open(other, fifo, O_RDONLY);
        };
        other.spawn(open());
        other.run_once();
        other.run_once();
      }
      CHECK(std::chrono::steady_clock::now() - t0 < 1s);
      auto t = [&]() -> lev::Task<> {
        const lev::TimePoint t1 = loop.now();
        auto rd = co_await lev::with_timeout(loop, lev::File::open(loop, fifo, O_RDONLY), 200ms);
        CHECK(loop.now() - t1 < 150ms);
        REQUIRE_MESSAGE(rd, rd.error().message());
        CHECK((::fcntl(rd->fd(), F_GETFL) & O_NONBLOCK) == 0);  // the flags asked for
        // With a reader there, a writer opens and the bytes go through.
        auto wr = co_await lev::File::open(loop, fifo, O_WRONLY);
        REQUIRE_MESSAGE(wr, wr.error().message());
        CHECK((co_await wr->write_at(std::string_view("fifo"), std::uint64_t(-1))).value() == 4);
        std::array<char, 8> buf{};
        CHECK((co_await rd->read_at(buf, std::uint64_t(-1))).value() == 4);
        CHECK(std::string(buf.data(), 4) == "fifo");
        CHECK(co_await wr->close());
        CHECK(co_await rd->close());
        // No reader: a writer is refused at once (ENXIO), on every engine.
        const lev::TimePoint t2 = loop.now();
        auto lone = co_await lev::with_timeout(loop, lev::File::open(loop, fifo, O_WRONLY), 200ms);
        CHECK(loop.now() - t2 < 150ms);
        REQUIRE_FALSE(lone);
        CHECK(lone.error().code == std::errc::no_such_device_or_address);
      };
      loop.block_on(t());
    });
  }

  TEST_CASE("open, fsync, stat and the directory ops take a deadline on every engine") {
    // Regression (issue 22, item 5): File::open, fsync, stat and the
    // directory ops took no {.timeout}; each had to be wrapped in
    // with_timeout. On epoll the one file worker is held in a write here,
    // as a slow disk would hold it: each op waits in the queue and its
    // deadline ends it timed_out (it never runs). On io_uring an op on a
    // local file completes before any deadline (a running one is never
    // interrupted): each gives its own result, and nothing stays behind.
    for (const lev::test::Engine& e : lev::test::real_engines()) {
      SUBCASE(e.name) {
        lev::LoopOptions o = lev::test::options_for(e);
        o.file_workers = 1;
        lev::Loop loop{e.model, o};
        TempDir dir("file");
        g_release = false;
        g_held = 0;
        lev::detail::before_file_work.store(&hold_first_write);
        struct Unhook {
          ~Unhook() {
            g_release = true;
            lev::detail::before_file_work.store(nullptr);
          }
        } unhook;
        const bool queued = loop.backend_name() == "epoll";
        auto t = [&]() -> lev::Task<> {
          auto f = co_await lev::File::open(loop, dir.file("a"), O_RDWR | O_CREAT, 0600,
                                            {.timeout = 10s});
          REQUIRE_MESSAGE(f, f.error().message());
          std::optional<lev::Result<std::size_t>> written;
          auto slow = [&]() -> lev::Task<> {
            written = co_await f->write_at(std::string_view("slow"), 0);
          };
          loop.spawn(slow());
          (void)co_await loop.nop();
          for (int i = 0; i < 2000 && queued && g_held.load() == 0; ++i)
            (void)co_await loop.after(1ms);  // until the worker holds the write
          const lev::IoOptions limit{.timeout = 50ms};
          const lev::TimePoint t0 = loop.now();
          auto opened =
              co_await lev::File::open(loop, dir.file("b"), O_RDWR | O_CREAT, 0600, limit);
          auto synced = co_await f->fsync(limit);
          auto datasynced = co_await f->fdatasync(limit);
          auto fst = co_await f->stat(limit);
          auto pst = co_await lev::stat(loop, dir.file("a"), limit);
          auto made = co_await lev::mkdir(loop, dir.file("d"), 0755, limit);
          auto moved = co_await lev::rename(loop, dir.file("a"), dir.file("c"), limit);
          auto gone = co_await lev::unlink(loop, dir.file("a"), false, limit);
          const lev::Duration took = loop.now() - t0;
          if (queued) {
            CHECK(opened.error().is_timeout());
            CHECK(synced.error().is_timeout());
            CHECK(datasynced.error().is_timeout());
            CHECK(fst.error().is_timeout());
            CHECK(pst.error().is_timeout());
            CHECK(made.error().is_timeout());
            CHECK(moved.error().is_timeout());
            CHECK(gone.error().is_timeout());
            CHECK(std::string(opened.error().op) == "openat");
            CHECK(took >= 8 * 50ms);
            CHECK(::access(dir.file("b").c_str(), F_OK) != 0);  // never ran
            CHECK(::access(dir.file("d").c_str(), F_OK) != 0);
          } else {
            CHECK_MESSAGE(opened, opened.error().message());
            CHECK(synced);
            CHECK(datasynced);
            CHECK(fst);
            CHECK(pst);
            CHECK(made);
            CHECK(moved);
            CHECK(gone.error().code == std::errc::no_such_file_or_directory);  // moved already
          }
          g_release = true;
          for (int i = 0; i < 5000 && !written; ++i) (void)co_await loop.after(1ms);
          REQUIRE(written);
          CHECK(written->value() == 4);
          CHECK(co_await f->close());
        };
        loop.block_on(t());
        CHECK(loop.live_op_count() == 0);
      }
    }
  }

  TEST_CASE(
      "on the fake backend open, fsync and stat end timed out at their deadline, by loop timer or "
      "linked timeout") {
    for (const bool linked : {false, true}) {
      SUBCASE(linked ? "linked timeouts" : "loop timers") {
        auto fake = std::make_shared<lev::FakeBackend>(
            lev::FakeBackend::Options{.linked_timeouts = linked, .detect_blocking = false});
        lev::Loop loop{lev::Model::proactor, {.backend = fake}};
        lev::File file{loop, lev::Fd{::open("/dev/null", O_RDONLY | O_CLOEXEC)}};
        std::optional<lev::Result<lev::File>> opened;
        std::optional<lev::Result<void>> synced;
        std::optional<lev::Result<lev::FileStat>> fst, pst;
        auto t = [&]() -> lev::Task<> {
          const lev::IoOptions limit{.timeout = 2s};
          opened = co_await lev::File::open(loop, "/x", O_RDONLY, 0, limit);
          synced = co_await file.fsync(limit);
          fst = co_await file.stat(limit);
          pst = co_await lev::stat(loop, "/y", limit);
        };
        const lev::TimePoint t0 = fake->clock().now();
        loop.spawn(t());
        for (int i = 0; i < 100 && !pst; ++i)
          if (loop.run_once() == 0) fake->advance(1s);  // nothing completes but the deadlines
        REQUIRE(pst);
        CHECK(opened->error().is_timeout());
        CHECK(synced->error().is_timeout());
        CHECK(fst->error().is_timeout());
        CHECK(pst->error().is_timeout());
        CHECK(std::string(pst->error().path) == "/y");
        CHECK(fake->clock().now() - t0 == 8s);
        CHECK(loop.live_op_count() == 0);
      }
    }
  }

  TEST_CASE(
      "truncate takes a deadline on every engine: queued it ends timed out, running it completes") {
    // Regression (issue 22, item 5): File::truncate was the one file op
    // without {.timeout}. On epoll the one file worker is held in a write
    // (a slow disk): the truncate waits in the queue, its deadline ends it
    // timed_out and it never runs. On io_uring (IORING_OP_FTRUNCATE) a
    // truncate of a local file completes before its deadline.
    for (const lev::test::Engine& e : lev::test::real_engines()) {
      SUBCASE(e.name) {
        lev::LoopOptions o = lev::test::options_for(e);
        o.file_workers = 1;
        lev::Loop loop{e.model, o};
        TempDir dir("file");
        const std::string path = dir.file("t");
        {
          const std::string content = pattern(100);
          const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
          REQUIRE(fd >= 0);
          REQUIRE(::write(fd, content.data(), content.size()) == 100);
          ::close(fd);
        }
        g_release = false;
        g_held = 0;
        lev::detail::before_file_work.store(&hold_first_write);
        struct Unhook {
          ~Unhook() {
            g_release = true;
            lev::detail::before_file_work.store(nullptr);
          }
        } unhook;
        const bool queued = loop.backend_name() == "epoll";
        auto t = [&]() -> lev::Task<> {
          auto f = co_await lev::File::open(loop, path, O_RDWR, 0, {.timeout = 10s});
          REQUIRE_MESSAGE(f, f.error().message());
          std::optional<lev::Result<std::size_t>> written;
          auto slow = [&]() -> lev::Task<> {
            written = co_await f->write_at(std::string_view("slow"), 0);
          };
          loop.spawn(slow());
          (void)co_await loop.nop();
          for (int i = 0; i < 2000 && queued && g_held.load() == 0; ++i)
            (void)co_await loop.after(1ms);  // until the worker holds the write
          const lev::TimePoint t0 = loop.now();
          auto cut = co_await f->truncate(10, {.timeout = 50ms});
          const lev::Duration took = loop.now() - t0;
          if (queued) {
            REQUIRE_FALSE(cut);
            CHECK(cut.error().is_timeout());
            CHECK(std::string(cut.error().op) == "ftruncate");
            CHECK(took >= 50ms);
          } else {
            CHECK_MESSAGE(cut, cut.error().message());
          }
          g_release = true;
          for (int i = 0; i < 5000 && !written; ++i) (void)co_await loop.after(1ms);
          REQUIRE(written);
          CHECK(written->value() == 4);
          CHECK(co_await f->close());
        };
        loop.block_on(t());
        CHECK(loop.live_op_count() == 0);
        CHECK(slurp(path).size() == (queued ? 100u : 10u));  // a timed-out one never ran
      }
    }
  }

  TEST_CASE(
      "on the fake backend truncate ends timed out at its deadline, by loop timer or linked "
      "timeout") {
    for (const bool linked : {false, true}) {
      SUBCASE(linked ? "linked timeouts" : "loop timers") {
        auto fake = std::make_shared<lev::FakeBackend>(
            lev::FakeBackend::Options{.linked_timeouts = linked, .detect_blocking = false});
        lev::Loop loop{lev::Model::proactor, {.backend = fake}};
        lev::File file{loop, lev::Fd{::open("/dev/null", O_RDONLY | O_CLOEXEC)}};
        std::optional<lev::Result<void>> cut;
        auto t = [&]() -> lev::Task<> { cut = co_await file.truncate(0, {.timeout = 2s}); };
        const lev::TimePoint t0 = fake->clock().now();
        loop.spawn(t());
        for (int i = 0; i < 100 && !cut; ++i)
          if (loop.run_once() == 0) fake->advance(1s);  // nothing completes but the deadline
        REQUIRE(cut);
        REQUIRE_FALSE(*cut);
        CHECK(cut->error().is_timeout());
        CHECK(fake->clock().now() - t0 == 2s);
        CHECK(loop.live_op_count() == 0);
      }
    }
  }

  TEST_CASE(
      "without the ring's ftruncate, truncate runs on the offload pool and a deadline passed "
      "before it starts skips it") {
    // A ring whose kernel lacks IORING_OP_FTRUNCATE (before 6.9), as the
    // fake reports it: the offload pool truncates. With every pool thread
    // busy (4 calls sleeping 200 ms, queued first), a truncate bounded by
    // 20 ms is taken after its deadline: timed_out, the file untouched.
    auto fake = std::make_shared<lev::FakeBackend>(
        lev::FakeBackend::Options{.detect_blocking = false, .ftruncate_op = false});
    lev::Loop loop{lev::Model::proactor, {.backend = fake}};
    REQUIRE_FALSE(loop.features().ftruncate_op);
    TempDir dir("file");
    const std::string path = dir.file("t");
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    const std::string content = pattern(100);
    REQUIRE(::write(fd, content.data(), content.size()) == 100);
    lev::File file{loop, lev::Fd{fd}};
    std::optional<lev::Result<void>> unbounded, late;
    auto t = [&]() -> lev::Task<> {
      unbounded = co_await file.truncate(50);
      for (int i = 0; i < 4; ++i)
        lev::detail::offload_run([] { std::this_thread::sleep_for(200ms); });
      late = co_await file.truncate(10, {.timeout = 20ms});
    };
    loop.block_on(t());
    REQUIRE(unbounded);
    CHECK_MESSAGE(*unbounded, unbounded->error().message());
    REQUIRE(late);
    REQUIRE_FALSE(*late);
    CHECK(late->error().is_timeout());
    CHECK(std::string(late->error().op) == "ftruncate");
    CHECK(slurp(path).size() == 50u);
  }

  TEST_CASE("a file opened for a task that is never resumed is closed, not leaked") {
    // Regression: release_undelivered closed an accepted fd nobody took
    // but not an opened one: a Loop destroyed with File::open's result
    // queued (or an awaiter abandoned after it) leaked the fd.
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    {
      lev::test::FakeLoop f;
      std::optional<lev::Result<lev::File>> opened;
      auto open = [&]() -> lev::Task<> {
        opened = co_await lev::File::open(f.loop, "/x", O_RDONLY);
      };
      f.loop.spawn(open());
      f.loop.run_once();
      lev::detail::OpBase* op = f.fake->find(lev::detail::OpKind::openat);
      REQUIRE(op);
      f.fake->complete(*op, fd);  // queued, never delivered: the loop goes first
    }
    CHECK(::fcntl(fd, F_GETFD) < 0);
    CHECK(errno == EBADF);
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
