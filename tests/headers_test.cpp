// The header_*.cpp files linked into this test each include one public
// header first and alone; the test passing means all of them compiled.
#include <doctest/doctest.h>

#include "lev/lev.hpp"

TEST_SUITE("headers") {
  TEST_CASE("the umbrella header exposes the loop, tasks and results") {
    lev::Result<int> r = 3;
    CHECK(*r == 3);
    lev::Result<int> e = lev::Error::from_errno(EBADF, "recv", 9);
    CHECK_FALSE(e);
    CHECK(e.error().message() == "recv(fd 9): Bad file descriptor");
  }
}
