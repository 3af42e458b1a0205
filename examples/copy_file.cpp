// Copies a file with N reads in flight into a temporary file beside the
// destination, fsyncs it, and renames it into place.
//   copy_file [--depth N] [--chunk BYTES] [--model proactor|reactor] SRC DST
// Prints "copied B bytes in S s (M MB/s)". Exit codes: 0 copied; 1 an
// error, named with its path (DST is then as it was: a failed copy leaves
// nothing behind); 2 a bad command line; 3 copied, but SRC changed size
// while it was copied (DST holds what was read, which may mix old and new).
//
// What it does not trust:
// - that SRC and DST differ: the same path, a symlink or a hard link to SRC
//   is refused before anything is written (same device and inode);
// - the size the system reports: it copies until a read finds the end
//   (a FIFO, /proc/self/status, a file that grows or shrinks meanwhile),
//   and says how many bytes it really copied;
// - that a copy is all data: the holes of a sparse SRC stay holes
//   (SEEK_DATA / SEEK_HOLE).
// DST keeps its permission bits when it existed (a new one gets SRC's, less
// the umask). DST is replaced, not rewritten: a symlink DST is followed
// and its target replaced; other hard links of an old DST keep the old
// contents, and the new file belongs to whoever ran the copy.
// On the reactor the copy runs on the epoll engine's file workers (as many
// as --depth).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <vector>

#include "common.hpp"
#include "lev/file.hpp"
#include "lev/lev.hpp"

namespace {

constexpr std::uint64_t kNone = std::numeric_limits<std::uint64_t>::max();

struct Args {
  std::string src, dst;
  long depth = 8;
  std::size_t chunk = 128 * 1024;
  example::LoopArgs loop;
};

/// "copy_file: read /a/b: Is a directory": what failed, on which path.
int fail(const char* what, const std::string& path, std::error_code code) {
  std::fprintf(stderr, "copy_file: %s %s: %s\n", what, path.c_str(), code.message().c_str());
  return 1;
}
int fail(const char* what, const std::string& path, const lev::Error& e) {
  return fail(what, path, e.code);
}
std::error_code errno_code(int e) { return {e, std::system_category()}; }

/// A byte range [begin, end) of SRC that holds data.
struct Extent {
  std::uint64_t begin, end;
};

/// The data of SRC's first `size` bytes as the file system tells it
/// (SEEK_DATA / SEEK_HOLE), or one extent [0, size) where it cannot. Runs
/// on the offload pool: lseek on a file system may block.
std::vector<Extent> data_extents(int fd, std::uint64_t size) {
  std::vector<Extent> out;
  std::uint64_t at = 0;
  while (at < size) {
    const off_t data = ::lseek(fd, static_cast<off_t>(at), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data past `at`: a hole to the end
      return {{0, size}};         // not supported here: all of it is data
    }
    const off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return {{0, size}};
    const auto begin = static_cast<std::uint64_t>(data);
    const auto end = std::min(static_cast<std::uint64_t>(hole), size);
    if (begin >= size) break;
    out.push_back({begin, end});
    at = end;
  }
  return out;
}

/// One copy's shared state: the data of SRC's reported size still to
/// take, where a read first found the end of SRC, the first error.
struct Copy {
  lev::File& in;
  lev::File& out;
  const Args& a;
  std::vector<Extent> extents;  // SRC's data within its reported size
  std::size_t extent = 0;       // the extent the next chunk comes from
  std::uint64_t at = 0;         // where the next chunk starts
  std::uint64_t eof = kNone;    // the lowest offset where a read found the end
  std::uint64_t data = 0;       // bytes read from SRC and written
  int failed = 0;               // 1 once an error was reported

  /// The next piece of at most --chunk bytes of data, or nullopt.
  std::optional<Extent> take() {
    for (; extent < extents.size(); ++extent) {
      const Extent& e = extents[extent];
      at = std::max(at, e.begin);
      if (at >= e.end) continue;
      const Extent piece{at, std::min<std::uint64_t>(at + a.chunk, e.end)};
      at = piece.end;
      return piece;
    }
    return std::nullopt;
  }
};

/// Reads [at, at + want) of SRC into `buf` (short only at its end, which
/// is then recorded) and writes what it got at the same offset.
lev::Task<bool> copy_range(Copy& c, std::vector<char>& buf, std::uint64_t at, std::size_t want) {
  std::size_t have = 0;
  while (have < want) {
    auto n = co_await c.in.read_at(lev::MutableBuffer{buf.data() + have, want - have}, at + have);
    if (!n) {
      if (!c.failed) c.failed = fail("read", c.a.src, n.error());
      co_return false;
    }
    if (*n == 0) {
      c.eof = std::min(c.eof, at + have);  // shorter than reported: it ends here
      break;
    }
    have += *n;
  }
  if (have > 0) {
    auto w = co_await c.out.write_all_at(lev::ConstBuffer{buf.data(), have}, at);
    if (!w) {
      if (!c.failed) c.failed = fail("write", c.a.dst, w.error());
      co_return false;
    }
    c.data += have;
  }
  co_return have == want;
}

/// One of --depth workers over the chunks of the reported size: takes the
/// next chunk below the end found so far, copies it.
lev::Task<> worker(Copy& c) {
  std::vector<char> buf(c.a.chunk);
  while (!c.failed) {
    const auto e = c.take();
    if (!e || e->begin >= c.eof) break;  // done, or past the end a read already found
    (void)co_await copy_range(c, buf, e->begin, static_cast<std::size_t>(e->end - e->begin));
  }
}

/// After the reported size (or for a file that has none): reads on, one
/// chunk at a time, until a read finds the end. `at` is where to go on.
lev::Task<> tail(Copy& c, std::uint64_t at, bool seekable, lev::Loop& loop) {
  std::vector<char> buf(c.a.chunk);
  while (!c.failed && c.eof == kNone) {
    if (seekable) {
      if (co_await copy_range(c, buf, at, buf.size())) at += buf.size();
      continue;  // a short range recorded the end
    }
    // A pipe, a FIFO, a character device: no offsets, read as it comes.
    auto n = co_await loop.read(c.in.fd(), lev::MutableBuffer{buf.data(), buf.size()});
    if (!n) {
      c.failed = fail("read", c.a.src, n.error());
      co_return;
    }
    if (*n == 0) {
      c.eof = at;
      break;
    }
    auto w = co_await c.out.write_all_at(lev::ConstBuffer{buf.data(), *n}, at);
    if (!w) {
      c.failed = fail("write", c.a.dst, w.error());
      co_return;
    }
    at += *n;
    c.data += *n;
  }
}

std::string dir_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}
std::string base_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

/// Where DST really is: a symlink is followed to the file it names, so that
/// the rename replaces that file rather than the link.
lev::Task<std::string> resolve(lev::Loop& loop, const std::string& dst) {
  auto follow = [dst]() -> std::string {
    struct stat st {};
    if (::lstat(dst.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return dst;
    char* real = ::realpath(dst.c_str(), nullptr);
    if (!real) return dst;  // a dangling link: replaced by the copy
    std::string r = real;
    std::free(real);
    return r;
  };
  std::string target = co_await loop.offload(std::move(follow));
  co_return target;
}

lev::Task<int> copy(lev::Loop& loop, const Args& a, unsigned umask_bits) {
  auto in = co_await lev::File::open(loop, a.src, O_RDONLY);
  if (!in) co_return fail("open", a.src, in.error());
  auto st = co_await in->stat();
  if (!st) co_return fail("stat", a.src, st.error());
  if (S_ISDIR(st->mode)) co_return fail("read", a.src, errno_code(EISDIR));

  // DST: compared with SRC before anything is written.
  const std::string target = co_await resolve(loop, a.dst);
  auto old = co_await lev::stat(loop, target);
  if (old) {
    if (old->device == st->device && old->inode == st->inode) {
      std::fprintf(stderr, "copy_file: %s and %s are the same file: nothing copied\n",
                   a.src.c_str(), a.dst.c_str());
      co_return 1;
    }
    if (S_ISDIR(old->mode)) co_return fail("write", a.dst, errno_code(EISDIR));
  } else if (old.error().code != std::errc::no_such_file_or_directory) {
    co_return fail("stat", a.dst, old.error());
  }
  const unsigned mode = old ? (old->mode & 07777) : (st->mode & 0777 & ~umask_bits);

  // The copy goes to a new file beside DST, renamed over it when complete.
  const std::string dir = dir_of(target);
  std::string temp;
  lev::Result<lev::File> out = lev::Error{};
  for (int i = 0; i < 100; ++i) {
    temp = dir + "/." + base_of(target) + ".copy_file-" + std::to_string(::getpid()) + "-" +
           std::to_string(i);
    out = co_await lev::File::open(loop, temp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (out || out.error().code != std::errc::file_exists) break;
  }
  if (!out) co_return fail("create", temp, out.error());

  const auto start = std::chrono::steady_clock::now();
  Copy c{*in, *out, a, {}};
  const bool seekable = S_ISREG(st->mode) || S_ISBLK(st->mode);
  if (S_ISREG(st->mode) && st->size > 0) {
    const int fd = in->fd();
    const std::uint64_t size = st->size;
    auto find = [fd, size] { return data_extents(fd, size); };
    c.extents = co_await loop.offload(std::move(find));
  }
  if (S_ISFIFO(st->mode)) {
    // Opened without waiting for a writer (docs/files.md): wait for one
    // (or its data) rather than read an end of file that is not there yet.
    auto ready = co_await loop.readable(in->fd());
    if (!ready) c.failed = fail("read", a.src, ready.error());
  }
  std::vector<lev::Task<>> workers;
  for (long i = 0; i < a.depth && !c.failed; ++i) workers.push_back(worker(c));
  (void)co_await lev::when_all(std::move(workers));
  // Past the reported size (or for a file with none), read on to the end.
  if (!c.failed && c.eof == kNone) co_await tail(c, seekable ? st->size : 0, seekable, loop);

  auto give_up = [&]() -> lev::Task<int> {
    (void)co_await out->close();
    (void)co_await lev::unlink(loop, temp);
    co_return 1;
  };
  if (c.failed) co_return co_await give_up();
  // Did SRC change size under the copy? (A file the system gives no size,
  // /proc's, reports 0 before and after.) One that shrank ends where it
  // ends now, whatever an earlier read saw.
  auto now = co_await in->stat();
  const std::uint64_t size_now = now ? now->size : st->size;
  const bool changed = size_now != st->size || (st->size != 0 && c.eof != st->size);
  const std::uint64_t length = changed && size_now < c.eof ? size_now : c.eof;
  // A last hole, and chunks read before SRC shrank: the copy ends where SRC did.
  if (auto t = co_await out->truncate(length); !t) {
    fail("write", a.dst, t.error());
    co_return co_await give_up();
  }
  const int out_fd = out->fd();
  auto chmod = [out_fd, mode] { return ::fchmod(out_fd, mode) ? errno : 0; };
  if (const int e = co_await loop.offload(std::move(chmod))) {
    fail("chmod", a.dst, errno_code(e));
    co_return co_await give_up();
  }
  if (auto s = co_await out->fsync(); !s) {
    fail("write", a.dst, s.error());
    co_return co_await give_up();
  }
  if (auto r = co_await lev::rename(loop, temp, target); !r) {
    fail("rename", temp + " to " + target, r.error());
    co_return co_await give_up();
  }
  (void)co_await out->close();
  // The rename itself reaches the disk with the directory.
  if (auto d = co_await lev::File::open(loop, dir, O_RDONLY | O_DIRECTORY)) {
    if (auto s = co_await d->fsync(); !s) co_return fail("fsync", dir, s.error());
  }

  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("copied %llu bytes in %.3f s (%.1f MB/s)", static_cast<unsigned long long>(length),
              secs, secs > 0 ? static_cast<double>(c.data) / 1e6 / secs : 0.0);
  if (c.data < length)
    std::printf(", %llu of them in holes kept as holes",
                static_cast<unsigned long long>(length - c.data));
  std::printf("\n");
  std::fflush(stdout);
  if (changed) {
    std::fprintf(stderr,
                 "copy_file: %s changed size during the copy (%llu bytes when it began, %llu "
                 "now); the copy holds the %llu bytes read, which may mix old and new\n",
                 a.src.c_str(), static_cast<unsigned long long>(st->size),
                 static_cast<unsigned long long>(size_now),
                 static_cast<unsigned long long>(length));
    co_return 3;
  }
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  Args a;
  std::vector<std::string> files;
  example::Cli cli{"copy_file",
                   "Copies SRC to DST with N reads in flight (DST replaced only when complete)."};
  cli.integer("--depth", a.depth, 1, 1024, "reads in flight (on the reactor: file workers)");
  cli.bytes("--chunk", a.chunk, 512, std::size_t(64) << 20, "bytes per read");
  a.loop.add_to(cli);
  cli.rest("SRC DST", files, "the file to copy and its copy (created or replaced)");
  cli.parse(argc, argv);
  a.loop.check(cli);
  if (files.size() != 2) cli.fail("needs SRC and DST");
  a.src = files[0];
  a.dst = files[1];
  const mode_t mask = ::umask(0);  // read it, put it back
  ::umask(mask);
  lev::LoopOptions o = a.loop.options();
  o.file_workers = static_cast<unsigned>(a.depth);
  // Ctrl-C (or SIGTERM) cancels the copy: the reads and writes under way
  // end, the temporary file goes, the destination is untouched.
  return lev::run(
      [&](lev::Loop& loop, std::stop_token stop) {
        return copy(loop, a, mask).with_stop_token(stop);
      },
      {.model = a.loop.loop_model(), .loop = o});
} catch (const std::exception& e) {
  std::fprintf(stderr, "copy_file: %s\n", e.what());
  return 1;
}
