// The header_*.cpp files linked into this test each include one header
// under include/lev/ first and alone; the test passing means all of them
// compiled, and the list in tests/meson.build names every header there.
#include <doctest/doctest.h>

#include <filesystem>
#include <set>
#include <string>
#include <string_view>

#include "lev/lev.hpp"

namespace {

// LEV_CHECKED_HEADERS: the list each header_*.cpp was generated from,
// "address;net/datagram;..." (no "lev/" prefix, no ".hpp").
std::set<std::string> checked_headers() {
  std::set<std::string> out;
  std::string_view all = LEV_CHECKED_HEADERS;
  while (!all.empty()) {
    const std::size_t semi = all.find(';');
    out.emplace(all.substr(0, semi));
    all.remove_prefix(semi == std::string_view::npos ? all.size() : semi + 1);
  }
  return out;
}

}  // namespace

TEST_SUITE("headers") {
  TEST_CASE("the umbrella header exposes the loop, tasks and results") {
    lev::Result<int> r = 3;
    CHECK(*r == 3);
    lev::Result<int> e = lev::Error::from_errno(EBADF, "recv", 9);
    CHECK_FALSE(e);
    CHECK(e.error().message() == "recv(fd 9): Bad file descriptor");
  }

  // Regression (issue 22): the list left out lev/net/ and lev/detail/, so
  // nothing proved those headers (installed, included by users) compile
  // on their own.
  TEST_CASE("every header under include/lev is compiled alone by this test") {
    const std::set<std::string> checked = checked_headers();
    const std::filesystem::path root = std::filesystem::path(LEV_INCLUDE_DIR) / "lev";
    REQUIRE(std::filesystem::is_directory(root));
    int found = 0;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
      if (!entry.is_regular_file() || entry.path().extension() != ".hpp") continue;
      ++found;
      std::string name = entry.path().lexically_relative(root).replace_extension().string();
      CHECK_MESSAGE(checked.count(name) == 1,
                    "lev/" << name << ".hpp is not in public_headers (tests/meson.build)");
    }
    CHECK(found == static_cast<int>(checked.size()));
  }
}
