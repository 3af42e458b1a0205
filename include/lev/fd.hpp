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
  /// Owns nothing (get() is -1).
  Fd() noexcept = default;
  /// Takes ownership of `fd` (-1: nothing).
  explicit Fd(int fd) noexcept : fd_(fd) {}
  /// Takes `other`'s descriptor; `other` owns nothing after.
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  /// Closes the current descriptor and takes `other`'s.
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  /// Closes the descriptor, if any.
  ~Fd() { reset(); }

  /// The descriptor, still owned (-1 when none).
  [[nodiscard]] int get() const noexcept { return fd_; }
  /// True when a descriptor is owned.
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  /// True when a descriptor is owned.
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
  int fd;  ///< the descriptor number
  /// Borrows the descriptor `f`.
  FdRef(int f) noexcept : fd(f) {}  // NOLINT: implicit on purpose
  /// Borrows the descriptor `f` owns.
  FdRef(const Fd& f) noexcept : fd(f.get()) {}  // NOLINT: implicit on purpose
};

}  // namespace lev
