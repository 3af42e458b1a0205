// copy_file under hostile input (issue 23): a destination that is the
// source, sources whose reported size is wrong (a FIFO, /proc, a file that
// shrinks under the copy), errors and leftovers, modes and sparse files.
// Each case says what broke before.
#include <dirent.h>
#include <doctest/doctest.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "examples_support.hpp"

using namespace lev::examples_test;
using namespace std::chrono_literals;

namespace {

using lev::test::TempDir;

/// The names `dir` holds (without . and ..), sorted.
std::vector<std::string> names(const TempDir& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.path().c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::string n = e->d_name; n != "." && n != "..") out.push_back(n);
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 31 + i / 977 + seed);
  return s;
}

void write_file(const std::string& path, const std::string& data) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f);
  REQUIRE(std::fwrite(data.data(), 1, data.size(), f) == data.size());
  std::fclose(f);
}

/// The file's bytes, or "<missing>".
std::string read_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return "<missing>";
  std::string out;
  char buf[65536];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

struct Outcome {
  int code;
  std::string out, err;
};

/// Runs `args` (argv[0] a path) to its end, within 30 s: its exit code,
/// stdout and stderr.
Outcome run_copy(std::vector<std::string> args, const TempDir& scratch) {
  const std::string err = scratch.path() + ".stderr";
  Child c = start(args, {}, err);
  std::string out = read_until(c.out, "\x01never", 30s);
  ::close(c.out);
  Outcome o{wait_exit(c.pid, 5s), out, slurp(err)};
  std::remove(err.c_str());
  return o;
}

struct stat stat_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st;
}

}  // namespace

TEST_SUITE("examples") {
  // Before: DST was opened with O_TRUNC before SRC was even looked at and
  // the two were never compared: "copied 0 bytes", exit 0, and the source
  // (3 MB) was empty afterwards, through the same path, a symlink or a
  // hard link alike.
  TEST_CASE("copy_file refuses a destination that is its source and leaves the source whole") {
    TempDir dir("copy-file");
    const std::string data = pattern(3'000'000, 1);
    const std::string src = dir.file("src");
    write_file(src, data);
    REQUIRE(::symlink("src", dir.file("symlink").c_str()) == 0);
    REQUIRE(::link(src.c_str(), dir.file("hardlink").c_str()) == 0);
    for (const char* model : {"proactor", "reactor"}) {
      for (const std::string& dst :
           {src, dir.file("symlink"), dir.file("hardlink"), dir.path() + "/./src"}) {
        CAPTURE(model);
        CAPTURE(dst);
        Outcome r = run_copy({example_path("copy_file"), "--model", model, src, dst}, dir);
        CHECK(r.code == 1);
        CHECK(r.err.find("are the same file") != std::string::npos);
        CHECK(r.out.empty());
        CHECK(read_file(src) == data);
      }
      // the other way round: the link as SRC, the file as DST
      Outcome r =
          run_copy({example_path("copy_file"), "--model", model, dir.file("hardlink"), src}, dir);
      CHECK(r.code == 1);
      CHECK(read_file(src) == data);
    }
    CHECK(names(dir) == std::vector<std::string>{"hardlink", "src", "symlink"});
  }

  // Before: the copy took the size statx reported and copied that much:
  // /proc/self/status (size 0) became an empty file, exit 0.
  TEST_CASE("copy_file copies /proc/self/status, which reports a size of 0, until its end") {
    TempDir dir("copy-file");
    for (const char* model : {"proactor", "reactor"}) {
      CAPTURE(model);
      const std::string dst = dir.file(std::string("status-") + model);
      Outcome r =
          run_copy({example_path("copy_file"), "--model", model, "/proc/self/status", dst}, dir);
      CHECK(r.code == 0);
      const std::string got = read_file(dst);
      // The status of the copy_file process itself: whole, to its last line.
      CHECK(got.rfind("Name:\tcopy_file\n", 0) == 0);
      CHECK(got.find("\nVmRSS:") != std::string::npos);
      CHECK(got.size() > 500);
      CHECK(got.back() == '\n');
      CHECK(r.out.rfind("copied " + std::to_string(got.size()) + " bytes", 0) == 0);
    }
  }

  // Before: a FIFO reports size 0: nothing was read, an empty copy, exit 0.
  TEST_CASE("copy_file copies a FIFO with a writer until the writer closes it") {
    TempDir dir("copy-file");
    const std::string fifo = dir.file("fifo");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    const std::string data = pattern(1'500'000, 2);
    for (const char* model : {"proactor", "reactor"}) {
      CAPTURE(model);
      const pid_t writer = ::fork();
      REQUIRE(writer >= 0);
      if (writer == 0) {
        ::signal(SIGPIPE, SIG_DFL);
        const int fd = ::open(fifo.c_str(), O_WRONLY);  // waits for the reader
        if (fd < 0) ::_exit(1);
        ::usleep(100'000);  // the reader is there first, and waits
        std::size_t done = 0;
        while (done < data.size()) {
          const ssize_t n =
              ::write(fd, data.data() + done, std::min<std::size_t>(7000, data.size() - done));
          if (n <= 0) ::_exit(2);
          done += static_cast<std::size_t>(n);
        }
        ::_exit(0);
      }
      const std::string dst = dir.file(std::string("from-fifo-") + model);
      Outcome r = run_copy({example_path("copy_file"), "--model", model, fifo, dst}, dir);
      const int writer_code = wait_exit(writer, 5s);
      CHECK(r.code == 0);
      CHECK(r.out.rfind("copied 1500000 bytes", 0) == 0);
      CHECK(read_file(dst) == data);
      CHECK(writer_code == 0);
    }
  }

  // Before: a source cut short during the copy was reported as copied at
  // its old size ("copied 67108864 bytes", exit 0), the copy holding stale
  // chunks read before the cut, and nothing said the source had changed.
  TEST_CASE("copy_file says when its source shrank during the copy and reports what it copied") {
    TempDir dir("copy-file");
    const std::string data = pattern(64 << 20, 3);
    const std::string src = dir.file("shrinking"), dst = dir.file("copy");
    write_file(src, data);
    // One 512-byte read at a time: tens of thousands of reads, so the copy
    // is well under way when the source is cut to 1 MB.
    Child c = start({example_path("copy_file"), "--depth", "1", "--chunk", "512", src, dst}, {},
                    dir.path() + ".stderr");
    // Its temporary copy appears once it has looked at the source: cut it then.
    const auto began = std::chrono::steady_clock::now();
    auto started = [&] {
      for (const std::string& n : names(dir))
        if (n.rfind(".copy.copy_file-", 0) == 0) return true;
      return false;
    };
    while (!started() && std::chrono::steady_clock::now() - began < 20s)
      std::this_thread::sleep_for(1ms);
    REQUIRE(::truncate(src.c_str(), 1'000'000) == 0);
    const std::string out = read_until(c.out, "\x01never", 30s);
    ::close(c.out);
    const int code = wait_exit(c.pid, 5s);
    const std::string err = slurp(dir.path() + ".stderr");
    std::remove((dir.path() + ".stderr").c_str());
    INFO(out);
    INFO(err);
    const std::string copy = read_file(dst);
    CHECK(code == 3);
    CHECK(err.find("changed size during the copy") != std::string::npos);
    CHECK(copy.size() == 1'000'000);  // where the source ends now, no stale chunk past it
    CHECK(copy == data.substr(0, copy.size()));
    CHECK(out.rfind("copied " + std::to_string(copy.size()) + " bytes", 0) == 0);
  }

  // Before: "read(fd 5): Is a directory", "write(fd 6): File too large":
  // no path; and a copy that failed left its partial destination behind
  // (an existing one truncated and half written).
  TEST_CASE("copy_file names the path in its errors and leaves no partial destination behind") {
    TempDir dir("copy-file");
    const std::string data = pattern(3'000'000, 4);
    const std::string src = dir.file("src"), old = dir.file("old"), fresh = dir.file("fresh");
    write_file(src, data);
    write_file(old, "the old contents\n");
    REQUIRE(::mkdir(dir.file("sub").c_str(), 0755) == 0);
    for (const char* model : {"proactor", "reactor"}) {
      CAPTURE(model);
      Outcome r =
          run_copy({example_path("copy_file"), "--model", model, dir.file("sub"), fresh}, dir);
      CHECK(r.code == 1);
      CHECK(r.err.find(dir.file("sub") + ": Is a directory") != std::string::npos);
      // A file size limit of 512 KiB or 1 MiB (the shell's unit): the
      // write fails part way (EFBIG) as it would on a full disk.
      for (const std::string& dst : {fresh, old}) {
        CAPTURE(dst);
        r = run_copy({"/bin/sh", "-c", "ulimit -f 1024 && trap '' XFSZ && exec \"$0\" \"$@\"",
                      example_path("copy_file"), "--model", model, src, dst},
                     dir);
        CHECK(r.code == 1);
        CHECK(r.err.find("write " + dst + ": File too large") != std::string::npos);
      }
      CHECK(read_file(fresh) == "<missing>");
      CHECK(read_file(old) == "the old contents\n");
      CHECK(names(dir) == std::vector<std::string>{"old", "src", "sub"});  // no temporary left
    }
  }

  // Before: DST was truncated in place, so an existing DST kept its mode
  // only by accident; the copy now replaces it, and keeps it on purpose.
  TEST_CASE("copy_file keeps an existing destination's mode; a new one gets the source's") {
    TempDir dir("copy-file");
    const std::string src = dir.file("src"), old = dir.file("old"), fresh = dir.file("fresh");
    write_file(src, pattern(100'000, 5));
    write_file(old, "x");
    REQUIRE(::chmod(src.c_str(), 0750) == 0);
    REQUIRE(::chmod(old.c_str(), 0604) == 0);
    const mode_t mask = ::umask(0);
    ::umask(mask);
    CHECK(run_copy({example_path("copy_file"), src, old}, dir).code == 0);
    CHECK(run_copy({example_path("copy_file"), src, fresh}, dir).code == 0);
    CHECK((stat_of(old).st_mode & 07777) == 0604);
    CHECK((stat_of(fresh).st_mode & 07777) == (0750 & ~mask));
    CHECK(read_file(old) == read_file(src));
  }

  // Before: every byte of the reported size was read and written: a
  // 200 MB sparse file with 8 KiB of data became 200 MB allocated.
  TEST_CASE("copy_file keeps the holes of a sparse source") {
    TempDir dir("copy-file");
    const std::string src = dir.file("sparse");
    {
      const int fd = ::open(src.c_str(), O_WRONLY | O_CREAT, 0644);
      REQUIRE(fd >= 0);
      REQUIRE(::ftruncate(fd, 200'000'000) == 0);
      REQUIRE(::pwrite(fd, "hello", 5, 1'000'000) == 5);
      REQUIRE(::pwrite(fd, "world", 5, 150'000'000) == 5);
      ::close(fd);
    }
    const struct stat in = stat_of(src);
    for (const char* model : {"proactor", "reactor"}) {
      CAPTURE(model);
      const std::string dst = dir.file(std::string("copy-") + model);
      Outcome r = run_copy({example_path("copy_file"), "--model", model, src, dst}, dir);
      CHECK(r.code == 0);
      const struct stat out = stat_of(dst);
      CHECK(out.st_size == 200'000'000);
      // as little allocated as the source (a file system may round up)
      CHECK(out.st_blocks * 512 <= std::max<long long>(in.st_blocks * 512, 1 << 20));
      CHECK(read_file(dst) == read_file(src));
    }
  }
}
