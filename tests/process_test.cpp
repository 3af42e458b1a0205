#include "lev/process.hpp"

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <string>

#include "lev/loop.hpp"
#include "lev/net/stream.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using lev::test::for_each_engine;

namespace {
bool process_exists(pid_t pid) {
  struct stat st {};
  return ::stat(("/proc/" + std::to_string(pid)).c_str(), &st) == 0;
}
}  // namespace

TEST_SUITE("process") {
  TEST_CASE("a child's stdout is read as a Stream and its exit code is awaited") {
    for_each_engine([](lev::Loop& loop) {
      auto child = lev::Child::spawn(loop, {.argv = {"sh", "-c", "echo one; echo two; exit 3"}});
      REQUIRE_MESSAGE(child, child.error().message());
      auto t = [&]() -> lev::Task<> {
        lev::net::Stream out{loop, std::move(child->stdout_fd())};
        CHECK(*(co_await out.read_message()).value() == "one");
        CHECK(*(co_await out.read_message()).value() == "two");
        CHECK_FALSE((co_await out.read_message()).value().has_value());  // EOF
        auto st = co_await child->wait();
        REQUIRE(st);
        CHECK(st->exited);
        CHECK(st->code == 3);
      };
      loop.block_on(t());
      CHECK(child->reaped());
    });
  }

  TEST_CASE("env, cwd and stdin reach the child") {
    for_each_engine([](lev::Loop& loop) {
      auto child =
          lev::Child::spawn(loop, {.argv = {"sh", "-c", "read x; echo \"$x $LEV_TEST $(pwd)\""},
                                   .env = {"LEV_TEST=from-env", "PATH=/usr/bin:/bin"},
                                   .cwd = "/tmp",
                                   .in = lev::Stdio::pipe});
      REQUIRE(child);
      auto t = [&]() -> lev::Task<std::string> {
        (co_await loop.write_all(child->stdin_fd(), std::string_view("piped\n"))).value();
        child->stdin_fd().reset();
        lev::net::Stream out{loop, std::move(child->stdout_fd())};
        auto line = (co_await out.read_message()).value();
        (void)co_await child->wait();
        co_return line.value_or("");
      };
      CHECK(loop.block_on(t()) == "piped from-env /tmp");
    });
  }

  TEST_CASE("kill, a signal status, and the timeout helper") {
    for_each_engine([](lev::Loop& loop) {
      auto child = lev::Child::spawn(loop, {.argv = {"sleep", "30"}, .out = lev::Stdio::null});
      REQUIRE(child);
      auto t = [&]() -> lev::Task<> {
        auto st = co_await child->wait_for(50ms);  // sleeps on: SIGKILL after 50 ms
        REQUIRE(st);
        CHECK_FALSE(st->exited);
        CHECK(st->signal == SIGKILL);
      };
      loop.block_on(t());
      auto other = lev::Child::spawn(loop, {.argv = {"sleep", "30"}, .out = lev::Stdio::null});
      REQUIRE(other);
      CHECK(other->kill(SIGTERM));
      auto w = [&]() -> lev::Task<int> { co_return (co_await other->wait()).value().signal; };
      CHECK(loop.block_on(w()) == SIGTERM);
      CHECK_FALSE(other->kill());  // reaped: ESRCH, not a recycled pid
    });
  }

  TEST_CASE("a program that cannot run is an error naming the cause") {
    lev::Loop loop{lev::Model::proactor};
    auto child = lev::Child::spawn(loop, {.argv = {"/nonexistent/program"}});
    REQUIRE_FALSE(child);
    CHECK(child.error().code == std::errc::no_such_file_or_directory);
    CHECK_FALSE(lev::Child::spawn(loop, {}));
  }

  TEST_CASE("destroying an unreaped Child leaves no zombie") {
    lev::Loop loop{lev::Model::proactor};
    pid_t pid;
    {
      auto child = lev::Child::spawn(loop, {.argv = {"sleep", "30"}, .out = lev::Stdio::null});
      REQUIRE(child);
      pid = child->pid();
      CHECK(process_exists(pid));
    }
    CHECK_FALSE(process_exists(pid));
  }
}
