// The log hook: library messages reach the installed handler, the default
// writes to stderr.
#include "lev/log.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "lev/loop.hpp"

namespace {

/// Collects messages while alive; restores the previous handler after.
struct Capture {
  struct Line {
    lev::LogLevel level;
    std::string text;
  };
  std::mutex mutex;
  std::vector<Line> lines;
  lev::LogHandler previous;

  Capture() {
    previous = lev::set_log_handler([this](lev::LogLevel level, std::string_view text) {
      std::lock_guard lock(mutex);
      lines.push_back({level, std::string(text)});
    });
  }
  ~Capture() { lev::set_log_handler(std::move(previous)); }
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;
};

/// What `fn` writes to fd 2.
template <class Fn>
std::string stderr_of(Fn fn) {
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  const int saved = ::dup(2);
  ::dup2(p[1], 2);
  ::close(p[1]);
  fn();
  ::dup2(saved, 2);
  ::close(saved);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;)
    out.append(buf, static_cast<std::size_t>(n));
  ::close(p[0]);
  return out;
}

}  // namespace

TEST_SUITE("log") {
  TEST_CASE("the default handler writes the message on stderr with a lev: prefix") {
    const std::string out =
        stderr_of([] { lev::log_message(lev::LogLevel::warning, "disk on fire"); });
    CHECK(out == "lev: disk on fire\n");
  }

  TEST_CASE("an installed handler receives level and text instead of stderr") {
    std::string out;
    {
      Capture capture;
      out = stderr_of([] { lev::log_message(lev::LogLevel::info, "hello"); });
      REQUIRE(capture.lines.size() == 1);
      CHECK(capture.lines[0].level == lev::LogLevel::info);
      CHECK(capture.lines[0].text == "hello");
    }
    CHECK(out.empty());
  }

  TEST_CASE("set_log_handler returns the previous handler and an empty one restores the default") {
    int first = 0;
    auto original = lev::set_log_handler([&](lev::LogLevel, std::string_view) { ++first; });
    CHECK_FALSE(original);  // the default was installed
    auto previous = lev::set_log_handler({});
    REQUIRE(previous);
    previous(lev::LogLevel::debug, "called through the returned copy");
    CHECK(first == 1);
    const std::string out =
        stderr_of([] { lev::log_message(lev::LogLevel::error, "back to stderr"); });
    CHECK(out == "lev: back to stderr\n");
    CHECK(first == 1);
  }

  TEST_CASE("a handler that throws loses its message and nothing else") {
    auto previous = lev::set_log_handler(
        [](lev::LogLevel, std::string_view) { throw std::runtime_error("handler broke"); });
    CHECK_NOTHROW(lev::log_message(lev::LogLevel::error, "dropped"));
    lev::set_log_handler(std::move(previous));
  }

  TEST_CASE("levels have names") {
    CHECK(std::string(lev::to_string(lev::LogLevel::debug)) == "debug");
    CHECK(std::string(lev::to_string(lev::LogLevel::info)) == "info");
    CHECK(std::string(lev::to_string(lev::LogLevel::warning)) == "warning");
    CHECK(std::string(lev::to_string(lev::LogLevel::error)) == "error");
  }

  TEST_CASE("an exception escaping a spawned task is logged as an error") {
    Capture capture;
    lev::Loop loop{lev::Model::proactor, {.backend = "fake"}};
    auto boom = []() -> lev::Task<> {
      throw std::runtime_error("boom");
      co_return;
    };
    loop.spawn(boom());
    loop.block_on([]() -> lev::Task<> { co_return; }());
    REQUIRE(capture.lines.size() == 1);
    CHECK(capture.lines[0].level == lev::LogLevel::error);
    CHECK(capture.lines[0].text == "a spawned task ended with an exception: boom");
  }

  TEST_CASE("the auto backend says through the hook when it falls back to epoll") {
    Capture capture;
    ::setenv("LEV_FORCE_EPOLL", "1", 1);
    lev::Loop loop{lev::Model::proactor, {.backend = "auto"}};
    ::unsetenv("LEV_FORCE_EPOLL");
    CHECK(loop.backend_name() == std::string_view("epoll"));
    REQUIRE(capture.lines.size() == 1);
    CHECK(capture.lines[0].level == lev::LogLevel::info);
    CHECK(capture.lines[0].text.find("using the epoll completion backend") != std::string::npos);
  }
}
