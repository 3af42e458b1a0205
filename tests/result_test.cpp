// lev::Result: values and errors, and the std::expected-style combinators.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <system_error>

#include "lev/error.hpp"

namespace {

lev::Error bad_fd() { return lev::Error::from_errno(EBADF, "recv", 5); }

lev::Result<int> half(int v) {
  if (v % 2) return lev::Error::from_errno(EINVAL, "half");
  return v / 2;
}

}  // namespace

TEST_SUITE("result") {
  TEST_CASE("value_or gives the value on success and the fallback on an error") {
    lev::Result<int> ok = 7;
    lev::Result<int> failed = bad_fd();
    CHECK(ok.value_or(1) == 7);
    CHECK(failed.value_or(1) == 1);
    lev::Result<std::string> text = std::string("kept");
    CHECK(text.value_or("fallback") == "kept");
    CHECK(lev::Result<std::string>(bad_fd()).value_or("fallback") == "fallback");
  }

  TEST_CASE("value_or on an rvalue moves a move-only value out") {
    lev::Result<std::unique_ptr<int>> r = std::make_unique<int>(3);
    auto p = std::move(r).value_or(nullptr);
    REQUIRE(p);
    CHECK(*p == 3);
    auto none = lev::Result<std::unique_ptr<int>>(bad_fd()).value_or(nullptr);
    CHECK_FALSE(none);
  }

  TEST_CASE("and_then chains functions that may fail and stops at the first error") {
    lev::Result<int> r = 12;
    auto quarter = r.and_then(half).and_then(half);
    REQUIRE(quarter);
    CHECK(*quarter == 3);
    auto eighth = quarter.and_then(half);
    REQUIRE_FALSE(eighth);
    CHECK(eighth.error().code == std::errc::invalid_argument);
    int calls = 0;
    auto skipped = lev::Result<int>(bad_fd()).and_then([&](int v) {
      ++calls;
      return half(v);
    });
    CHECK(calls == 0);
    CHECK(skipped.error().code == std::errc::bad_file_descriptor);
    CHECK(std::string(skipped.error().op) == "recv");
  }

  TEST_CASE("and_then may change the value type") {
    lev::Result<int> r = 4;
    lev::Result<std::string> s =
        r.and_then([](int v) -> lev::Result<std::string> { return std::to_string(v); });
    CHECK(*s == "4");
    lev::Result<void> v = r.and_then([](int) -> lev::Result<void> { return {}; });
    CHECK(v);
  }

  TEST_CASE("transform maps the value and carries an error through") {
    lev::Result<int> r = 20;
    auto text = r.transform([](int v) { return std::to_string(v) + " bytes"; });
    static_assert(std::is_same_v<decltype(text), lev::Result<std::string>>);
    CHECK(*text == "20 bytes");
    auto failed = lev::Result<int>(bad_fd()).transform([](int v) { return v + 1; });
    CHECK(failed.error().message() == "recv(fd 5): Bad file descriptor");
    int seen = 0;
    lev::Result<void> done = r.transform([&](int v) { seen = v; });
    CHECK(done);
    CHECK(seen == 20);
  }

  TEST_CASE("transform on an rvalue hands the value over by move") {
    lev::Result<std::unique_ptr<int>> r = std::make_unique<int>(9);
    auto n = std::move(r).transform([](std::unique_ptr<int> p) { return *p; });
    CHECK(*n == 9);
  }

  TEST_CASE("or_else recovers from an error and leaves a value alone") {
    auto recovered =
        lev::Result<int>(bad_fd()).or_else([](const lev::Error& e) -> lev::Result<int> {
          if (e.code == std::errc::bad_file_descriptor) return -1;
          return e;
        });
    CHECK(*recovered == -1);
    int calls = 0;
    auto kept = lev::Result<int>(5).or_else([&](const lev::Error& e) -> lev::Result<int> {
      ++calls;
      return e;
    });
    CHECK(calls == 0);
    CHECK(*kept == 5);
    auto replaced = lev::Result<int>(bad_fd()).or_else([](const lev::Error&) -> lev::Result<int> {
      return lev::Error::from_errno(ETIMEDOUT, "deadline");
    });
    CHECK(replaced.error().is_timeout());
  }

  TEST_CASE("Result<void> chains like the others") {
    lev::Result<void> ok;
    lev::Result<void> failed = bad_fd();
    CHECK(*ok.and_then([]() -> lev::Result<int> { return 1; }) == 1);
    CHECK_FALSE(failed.and_then([]() -> lev::Result<int> { return 1; }));
    CHECK(*ok.transform([] { return 2; }) == 2);
    CHECK(failed.transform([] { return 2; }).error().code == std::errc::bad_file_descriptor);
    CHECK(failed.or_else([](const lev::Error&) -> lev::Result<void> { return {}; }));
    CHECK(ok.or_else([](const lev::Error& e) -> lev::Result<void> { return e; }));
  }

  TEST_CASE("Result of a type with a destructor destroys what it holds, once") {
    auto counter = std::make_shared<int>(0);
    {
      lev::Result<std::shared_ptr<int>> a = counter;
      lev::Result<std::shared_ptr<int>> b = a;
      CHECK(counter.use_count() == 3);
      b = lev::Result<std::shared_ptr<int>>(bad_fd());
      CHECK(counter.use_count() == 2);
    }
    CHECK(counter.use_count() == 1);
  }

  TEST_CASE("* on an error fails an assertion in debug builds") {
#ifdef NDEBUG
    MESSAGE("skipped: assertions are compiled out (NDEBUG)");
#else
    lev::Result<int> failed = bad_fd();
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::close(2);  // keep the assertion's text out of the test log
      volatile int v = *failed;
      (void)v;
      ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
#endif
  }
}
