#pragma once
// test::TempDir: the one way the tests make a scratch directory. Apart from
// support.hpp (which includes it) so that the suites that only run the
// example programs, and do not link lev, can have it too.
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

namespace lev::test {

/// A fresh directory, $TMPDIR/lev-<tag>-XXXXXX (/tmp without $TMPDIR),
/// removed with all it holds when this goes (errors ignored: nothing a test
/// checks). Throws std::runtime_error when it cannot be made.
///
///   test::TempDir dir("copy");
///   write(dir.file("src"), ...);
class TempDir {
 public:
  explicit TempDir(std::string_view tag = "test") {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/lev-";
    tmpl.append(tag).append("-XXXXXX");
    if (!::mkdtemp(tmpl.data()))
      throw std::system_error(errno, std::generic_category(), "mkdtemp(" + tmpl + ")");
    path_ = std::move(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const std::string& path() const { return path_; }
  /// The path of `name` inside it (nothing is made).
  [[nodiscard]] std::string file(std::string_view name) const {
    return path_ + "/" + std::string(name);
  }

 private:
  std::string path_;
};

}  // namespace lev::test
