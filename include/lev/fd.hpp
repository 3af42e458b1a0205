#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// `lev::Fd`, an owning file descriptor, and `lev::FdRef`, the borrowed fd
/// every operation takes.

#include <utility>

namespace lev {

/// Owns a file descriptor and closes it (synchronously) when destroyed.
/// Move-only. `release()` gives ownership back to the caller.
class Fd {
 public:
  Fd() noexcept = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }
  /// Gives up ownership without closing.
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
  /// Closes the current fd (if any) and takes `fd`.
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

/// A borrowed descriptor: what operations take. Built from an int or an Fd;
/// the caller keeps ownership and must keep the fd open until the operation
/// has completed.
struct FdRef {
  int fd;
  FdRef(int f) noexcept : fd(f) {}              // NOLINT: implicit on purpose
  FdRef(const Fd& f) noexcept : fd(f.get()) {}  // NOLINT: implicit on purpose
};

}  // namespace lev
