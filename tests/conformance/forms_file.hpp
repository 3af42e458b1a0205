#pragma once
// The forms of the file and path ops (lev/detail/ops/file.hpp) (see forms.hpp for what a form is).
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

#include "conformance/form_base.hpp"
#include "lev/fake.hpp"
#include "lev/loop.hpp"

namespace lev::conformance {

// ---- file.hpp -------------------------------------------------------------

/// The shared part of the forms on a regular file through its fd.
struct FileFormBase : FormBase {
  static constexpr bool on_worker = true, has_fd = true;
  FileTarget file;
  explicit FileFormBase(Env& e) : FormBase(e), file(e) {}
  Fd release_fd() { return std::move(file.fd); }
  void reuse(int n) { file.reuse(n); }
  std::string reuse_wrong() { return file.reuse_wrong(); }
};

struct ReadAtForm : FileFormBase {
  using Desc = detail::ReadOp;
  static constexpr const char* name = "read_at(file)";
  std::array<char, 64> buf{};
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, file.fd, buf.data(), buf.size(), std::uint64_t{0});
  }
  Outcome outcome(Result<std::size_t>& r) {
    std::string wrong;
    if (r && !env.fake && std::string_view(buf.data(), *r) != FileTarget::kInitial)
      wrong = "read \"" + std::string(buf.data(), *r) + "\"";
    return outcome_of(r, wrong);
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete_with_data(op, FileTarget::kInitial);
  }
};

struct WriteAtForm : FileFormBase {
  using Desc = detail::WriteOp;
  static constexpr const char* name = "write_at(file)";
  static constexpr bool effect_known = true;
  static constexpr std::string_view kData = "WRITTEN";
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, file.fd, kData.data(), kData.size(), std::uint64_t{0}, false);
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r && *r != kData.size() ? "wrote " + std::to_string(*r) : "");
  }
  bool effect() { return read_file(file.path).starts_with(kData); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(kData.size()));
  }
};

struct ReadvAtForm : FileFormBase {
  using Desc = detail::ReadvOp;
  static constexpr const char* name = "readv_at(file)";
  std::array<char, 5> one{};
  std::array<char, 64> two{};
  std::array<iovec, 2> iov{iovec{one.data(), one.size()}, iovec{two.data(), two.size()}};
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, file.fd, std::span<const iovec>(iov), std::uint64_t{0});
  }
  Outcome outcome(Result<std::size_t>& r) {
    std::string got;
    if (r) {
      got.assign(one.data(), std::min(*r, one.size()));
      if (*r > one.size()) got.append(two.data(), *r - one.size());
    }
    return outcome_of(r,
                      r && !env.fake && got != FileTarget::kInitial ? "read \"" + got + "\"" : "");
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(FileTarget::kInitial.size()));
  }
};

struct WritevAtForm : FileFormBase {
  using Desc = detail::WritevOp;
  static constexpr const char* name = "writev_at(file)";
  static constexpr bool effect_known = true;
  static constexpr std::string_view kA = "GATH", kB = "ERED";
  std::array<iovec, 2> iov{iovec{const_cast<char*>(kA.data()), kA.size()},
                           iovec{const_cast<char*>(kB.data()), kB.size()}};
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, file.fd, std::span<const iovec>(iov), std::uint64_t{0}, false);
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r && *r != 8 ? "wrote " + std::to_string(*r) : "");
  }
  bool effect() { return read_file(file.path).starts_with("GATHERED"); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 8); }
};

struct FsyncForm : FileFormBase {
  using Desc = detail::FsyncOp;
  static constexpr const char* name = "fsync(file)";
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) { return loop.make_until<Desc>(t, file.fd, false); }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

struct FallocateForm : FileFormBase {
  using Desc = detail::FallocateOp;
  static constexpr const char* name = "fallocate(file)";
  static constexpr bool effect_known = true;
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, file.fd, 0, std::uint64_t{0}, std::uint64_t{8192});
  }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  bool effect() { return file_size(file.path) == 8192; }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

struct FtruncateForm : FileFormBase {
  using Desc = detail::FtruncateOp;
  static constexpr const char* name = "ftruncate(file)";
  static constexpr bool effect_known = true;
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) { return loop.make_until<Desc>(t, file.fd, std::uint64_t{3}); }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  bool effect() { return file_size(file.path) == 3; }
  std::string skip(Loop& loop) {
    return loop.features().ftruncate_op ? "" : "the ring's probe lacks IORING_OP_FTRUNCATE";
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

/// statx of the open file (File::stat: AT_EMPTY_PATH).
struct StatxForm : FileFormBase {
  using Desc = detail::StatxOp;
  static constexpr const char* name = "statx(file)";
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) { return loop.make_until<Desc>(t, file.fd, "", AT_EMPTY_PATH); }
  Outcome outcome(Result<FileStat>& r) {
    return outcome_of(r, r && !env.fake && r->size != FileTarget::kInitial.size()
                             ? "size " + std::to_string(r->size)
                             : "");
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

/// The shared part of the path forms (no fd: AT_FDCWD).
struct PathFormBase : FormBase {
  static constexpr bool on_worker = true, effect_known = true;
  using FormBase::FormBase;
};

/// openat(O_CREAT) of a new regular file.
struct OpenatCreateForm : PathFormBase {
  using Desc = detail::OpenatOp;
  static constexpr const char* name = "openat(create)";
  std::string path = env.path("created");
  using PathFormBase::PathFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, AT_FDCWD, path.c_str(), O_RDWR | O_CREAT, 0600u);
  }
  Outcome outcome(Result<int>& r) {
    Fd owned{r ? *r : -1};
    std::string wrong;
    struct stat st {};
    if (r && !env.fake && (::fstat(owned.get(), &st) != 0 || !S_ISREG(st.st_mode)))
      wrong = "the fd is not the file";
    return outcome_of(r, wrong);
  }
  bool effect() { return exists(path); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, ::open("/dev/null", O_RDONLY | O_CLOEXEC));
  }
};

/// openat of a FIFO with no writer. lev opens nonblocking on every engine
/// (issue 20 defect 7: the epoll engine's blocking open on a file worker
/// waited for a writer, with no deadline or cancel, and ~Loop with it), so
/// it returns at once with the fd. The watchdog opens a writer if a row
/// sticks.
struct OpenatFifoForm : PathFormBase {
  using Desc = detail::OpenatOp;
  static constexpr const char* name = "openat(fifo)";
  static constexpr bool effect_known = false, stuck_on_worker = true, may_stick = true;
  Fifo fifo{env.path("fifo")};
  using PathFormBase::PathFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, AT_FDCWD, fifo.path.c_str(), O_RDONLY, 0u);
  }
  Outcome outcome(Result<int>& r) {
    Fd owned{r ? *r : -1};
    struct stat st {};
    std::string wrong;
    if (r && !env.fake && (::fstat(owned.get(), &st) != 0 || !S_ISFIFO(st.st_mode)))
      wrong = "the fd is not the FIFO";
    return outcome_of(r, wrong);
  }
  bool unstick() {
    // Another thread: its writer end is closed at once (the open it ends
    // has returned by then).
    Fd w{::open(fifo.path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC)};
    return static_cast<bool>(w);
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, ::open("/dev/null", O_RDONLY | O_CLOEXEC));
  }
};

struct UnlinkatForm : PathFormBase {
  using Desc = detail::UnlinkatOp;
  static constexpr const char* name = "unlinkat(path)";
  std::string path = env.path("doomed");
  explicit UnlinkatForm(Env& e) : PathFormBase(e) { write_file(path, "x"); }
  auto make(Loop& loop, Timeout t) { return loop.make_until<Desc>(t, AT_FDCWD, path.c_str(), 0); }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  bool effect() { return !exists(path); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

struct RenameatForm : PathFormBase {
  using Desc = detail::RenameatOp;
  static constexpr const char* name = "renameat(path)";
  std::string from = env.path("from"), to = env.path("to");
  explicit RenameatForm(Env& e) : PathFormBase(e) { write_file(from, "x"); }
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, AT_FDCWD, from.c_str(), to.c_str(), 0);
  }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  bool effect() { return exists(to) && !exists(from); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

struct MkdiratForm : PathFormBase {
  using Desc = detail::MkdiratOp;
  static constexpr const char* name = "mkdirat(path)";
  std::string path = env.path("made");
  using PathFormBase::PathFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, AT_FDCWD, path.c_str(), 0700u);
  }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  bool effect() { return exists(path); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

}  // namespace lev::conformance
