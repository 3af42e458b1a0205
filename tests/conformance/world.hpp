#pragma once
// The conformance suite's small world: what a row's op works on (pipes,
// sockets, files, paths), built from plain syscalls so that the test's own
// side never goes through the engine under test. See conformance_test.cpp.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "lev/detail/describe.hpp"
#include "lev/detail/ops/file.hpp"
#include "lev/error.hpp"
#include "lev/fd.hpp"

namespace lev::conformance {

/// What an op produced, in one shape for every op: settled once or not,
/// its error, and what was wrong with its value (checked by its form).
struct Outcome {
  bool settled = false;
  bool ok = false;
  std::error_code code;
  std::string text;   // the error's message, or "ok"
  std::string wrong;  // non-empty: the value is not what the op should give
};

/// The outcome of a result whose value needs no check (or was checked).
template <class R>
Outcome outcome_of(const R& r, std::string wrong = {}) {
  Outcome o;
  o.settled = true;
  o.ok = static_cast<bool>(r);
  if (!o.ok) {
    o.code = r.error().code;
    o.text = r.error().message();
  } else {
    o.text = "ok";
    o.wrong = std::move(wrong);
  }
  return o;
}

/// One row's directory and whether it runs on the fake backend (whose ops
/// touch no real file: their effects are not looked for).
struct Env {
  std::string dir;
  bool fake = false;
  [[nodiscard]] std::string path(std::string_view name) const {
    return dir + "/" + std::string(name);
  }
};

inline void fail_errno(const char* what) {
  throw std::system_error(errno, std::system_category(), what);
}

/// Bytes waiting to be read on a pipe or socket (for a datagram socket:
/// the next datagram's size), -1 when the fd cannot say.
inline int available(int fd) {
  int n = 0;
  return ::ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

/// Every byte of `s` into `fd` (the test's side: a blocking write).
inline void put(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::write(fd, s.data(), s.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("conformance: write");
    }
    s.remove_prefix(static_cast<std::size_t>(n));
  }
}

/// What can be read from `fd` now without blocking (by FIONREAD).
inline std::string take_available(int fd) {
  std::string out;
  for (int round = 0; round < 64; ++round) {
    const int n = available(fd);
    if (n <= 0) break;
    std::string chunk(static_cast<std::size_t>(n), '\0');
    const ssize_t got = ::recv(fd, chunk.data(), chunk.size(), MSG_DONTWAIT);
    const ssize_t r = got >= 0 || errno != ENOTSOCK ? got : ::read(fd, chunk.data(), chunk.size());
    if (r <= 0) break;
    out.append(chunk.data(), static_cast<std::size_t>(r));
  }
  return out;
}

/// `fd` moved to the descriptor number `number`, which must be free: how a
/// row makes "the number reused at once" certain.
inline Fd at_number(Fd fd, int number) {
  if (fd.get() == number) return fd;
  if (::fcntl(number, F_GETFD) != -1)
    throw std::logic_error("conformance: fd " + std::to_string(number) + " is still open");
  if (::dup3(fd.get(), number, O_CLOEXEC) != number) fail_errno("conformance: dup3");
  return Fd{number};
}

/// A new pair whose first fd is at `number` (free now; the second may
/// have taken it: then it moves higher).
inline std::pair<Fd, Fd> at_number(std::pair<Fd, Fd> pair, int number) {
  if (pair.second.get() == number) {
    Fd moved{::fcntl(number, F_DUPFD_CLOEXEC, number + 1)};
    if (!moved) fail_errno("conformance: F_DUPFD");
    pair.second = std::move(moved);  // closes `number`
  }
  pair.first = at_number(std::move(pair.first), number);
  return pair;
}

inline std::pair<Fd, Fd> make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) fail_errno("conformance: pipe2");
  return {Fd{p[0]}, Fd{p[1]}};
}

inline std::pair<Fd, Fd> make_socketpair(int type) {
  int sv[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0) fail_errno("conformance: socketpair");
  return {Fd{sv[0]}, Fd{sv[1]}};
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_file(const std::string& path, std::string_view s) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

inline bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

inline long file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<long>(st.st_size) : -1;
}

/// The filler byte: what the test itself put in a pipe or socket to fill
/// it; any other byte that comes out was written by the op.
inline constexpr char kFiller = '#';

/// A pipe, socket or datagram socket the op reads from: empty until
/// inject() sends `payload` from the other end. reuse() puts a new one of
/// the same kind, already holding bytes of its own, at the op's old number.
struct Source {
  enum Kind { pipe, stream, dgram } kind;
  Fd op_end, peer;
  std::string payload;
  bool injected = false;
  std::vector<Fd> old;  // ends of replaced pairs, open until the row ends
  static constexpr std::string_view kNew = "bytes-of-the-new-fd";

  Source(Kind k, std::string p) : kind(k), payload(std::move(p)) {
    std::tie(op_end, peer) = make();
  }
  [[nodiscard]] std::pair<Fd, Fd> make() const {
    if (kind == pipe) return make_pipe();
    return make_socketpair(kind == stream ? SOCK_STREAM : SOCK_DGRAM);
  }
  void inject() {
    put(peer.get(), payload);
    injected = true;
  }
  /// Whether the op took the injected bytes.
  [[nodiscard]] bool consumed() const {
    return injected && available(op_end.get()) < static_cast<int>(payload.size());
  }
  /// A new pair at `number`, its bytes (kNew) already waiting: the
  /// payload from now on.
  void reuse(int number) {
    old.push_back(std::move(peer));
    std::tie(op_end, peer) = at_number(make(), number);
    payload = kNew;
    put(peer.get(), kNew);
  }
  [[nodiscard]] std::string reuse_wrong() const {
    const int n = available(op_end.get());
    if (n == static_cast<int>(kNew.size())) return {};
    return "the new fd at the old number holds " + std::to_string(n) + " of its " +
           std::to_string(kNew.size()) + " bytes: the old op took them";
  }
};

/// A pipe, socket or datagram socket the op writes into, full until
/// drain() empties it. Bytes that are not filler came from the op.
struct Sink {
  enum Kind { pipe, stream, dgram } kind;
  Fd op_end, peer;
  std::string got;  // what the op wrote (filler dropped)
  std::vector<Fd> old;

  explicit Sink(Kind k) : kind(k) {
    std::tie(op_end, peer) = make();
    fill();
  }
  /// The op's end first (a pipe's write end), the test's second.
  [[nodiscard]] std::pair<Fd, Fd> make() const {
    if (kind == pipe) {
      auto [r, w] = make_pipe();
      return {std::move(w), std::move(r)};
    }
    return make_socketpair(kind == stream ? SOCK_STREAM : SOCK_DGRAM);
  }
  void fill() {
    if (kind == pipe) {
      // One page: a write of up to PIPE_BUF bytes then waits, all or nothing.
      if (::fcntl(op_end.get(), F_SETPIPE_SZ, 4096) < 0) fail_errno("conformance: F_SETPIPE_SZ");
      put(op_end.get(), std::string(4096, kFiller));
      return;
    }
    int small = 4096;
    ::setsockopt(op_end.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    const std::string chunk(kind == dgram ? 256 : 1024, kFiller);
    for (int i = 0; i < 4096; ++i)
      if (::send(op_end.get(), chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) break;
    if (kind == stream)
      for (int i = 0; i < 4096; ++i)
        if (::send(op_end.get(), chunk.data(), 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) break;
  }
  /// Reads what is there; returns whether anything was.
  bool drain() {
    bool any = false;
    for (int round = 0; round < 4096; ++round) {
      char buf[4096];
      const ssize_t n = kind == pipe && available(peer.get()) <= 0
                            ? -1
                            : (kind == pipe ? ::read(peer.get(), buf, sizeof(buf))
                                            : ::recv(peer.get(), buf, sizeof(buf), MSG_DONTWAIT));
      if (n <= 0) break;
      any = true;
      for (ssize_t i = 0; i < n; ++i)
        if (buf[i] != kFiller) got.push_back(buf[i]);
    }
    return any;
  }
  /// A new pair, full too, its op end at `number`.
  void reuse(int number) {
    old.push_back(std::move(peer));
    std::tie(op_end, peer) = at_number(make(), number);
    fill();
    got.clear();
  }
  /// Whether bytes of the old op came out of the new pair (drains it).
  [[nodiscard]] std::string reuse_wrong() {
    drain();
    std::string wrong;
    if (!got.empty())
      wrong = "the new fd at the old number carried " + std::to_string(got.size()) +
              " bytes of the old op";
    got.clear();
    return wrong;
  }
};

/// A regular file of known content the op works on through an fd; reuse()
/// opens a second file at the old number.
struct FileTarget {
  static constexpr std::string_view kInitial = "file-one-initial";
  static constexpr std::string_view kSecond = "file-two-untouched";
  std::string path, second;
  Fd fd;
  std::vector<Fd> old;

  explicit FileTarget(const Env& env) : path(env.path("file-one")), second(env.path("file-two")) {
    write_file(path, kInitial);
    fd = Fd{::open(path.c_str(), O_RDWR | O_CLOEXEC)};
    if (!fd) fail_errno("conformance: open");
  }
  void reuse(int number) {
    write_file(second, kSecond);
    Fd f{::open(second.c_str(), O_RDWR | O_CLOEXEC)};
    if (!f) fail_errno("conformance: open");
    fd = at_number(std::move(f), number);
  }
  [[nodiscard]] std::string reuse_wrong() const {
    const std::string now = read_file(second);
    if (now == kSecond) return {};
    return "the second file, opened at the old number, now holds \"" + now + "\"";
  }
};

/// The worker rows' hold on an epoll file worker: lev's opens never wait
/// for a FIFO's peer (issue 20 defect 7), so the worker that takes the
/// blocker's open waits here instead, as on a slow disk, until released
/// (lev::detail::before_file_work, the epoll engine's test hook).
inline std::atomic<const char*> g_held_path{nullptr};
inline std::atomic<bool> g_hold_released{true};
inline void hold_blocker_open(const detail::OpBase& op) {
  const char* held = g_held_path.load();
  if (!held || op.kind != detail::OpKind::openat) return;
  if (std::strcmp(static_cast<const detail::PathArgs*>(op.args)->path, held) != 0) return;
  for (int i = 0; i < 30000 && !g_hold_released.load(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

/// A FIFO with no writer (its reader's open returns at once: lev opens
/// nonblocking). Made with `hold_worker`, an epoll file worker that takes
/// an open of it is held until open_writer().
struct Fifo {
  std::string path;
  std::vector<Fd> writers;
  bool holds = false;
  explicit Fifo(std::string p, bool hold_worker = false) : path(std::move(p)), holds(hold_worker) {
    if (::mkfifo(path.c_str(), 0600) != 0) fail_errno("conformance: mkfifo");
    if (holds) {
      g_hold_released.store(false);
      g_held_path.store(path.c_str());
      detail::before_file_work.store(&hold_blocker_open);
    }
  }
  Fifo(const Fifo&) = delete;
  Fifo& operator=(const Fifo&) = delete;
  ~Fifo() {
    if (holds) {
      g_held_path.store(nullptr);
      g_hold_released.store(true);
    }
  }
  /// Releases a held worker, and opens the write end when a reader has
  /// the FIFO open: true when the holder has let go (or a writer opened).
  bool open_writer() {
    if (holds) g_hold_released.store(true);
    Fd w{::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC)};
    if (w) writers.push_back(std::move(w));
    return holds || !writers.empty();
  }
};

}  // namespace lev::conformance
