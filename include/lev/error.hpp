#pragma once
/// \file
/// Errors as values: `lev::Error` and `lev::Result<T>`.
///
///     auto n = co_await loop.recv(fd, buf);
///     if (!n) std::puts(n.error().message().c_str());

#include <cstddef>
#include <new>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace lev {

/// Errors of lev's own (not errno values).
enum class errc {
  closed = 1,  ///< the channel was closed
};
const std::error_category& lev_category() noexcept;
inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), lev_category()};
}

}  // namespace lev

template <>
struct std::is_error_code_enum<lev::errc> : std::true_type {};

namespace lev {

/// What went wrong with one operation: the error code, the operation's name
/// and the fd it ran on (-1 when none). `transferred` counts the bytes an
/// operation had already moved before it failed (send_all / write_all), so
/// that no byte accepted for sending goes unreported.
struct Error {
  std::error_code code;
  const char* op = "";
  int fd = -1;
  std::size_t transferred = 0;

  /// "recv(fd 7): Connection reset by peer"
  [[nodiscard]] std::string message() const;
  [[nodiscard]] bool is_cancelled() const noexcept { return code == std::errc::operation_canceled; }
  [[nodiscard]] bool is_timeout() const noexcept { return code == std::errc::timed_out; }
  [[nodiscard]] bool is_closed() const noexcept { return code == errc::closed; }
  /// Throws std::system_error carrying code and message().
  [[noreturn]] void raise() const;

  /// An Error from a negative errno value as io_uring reports it.
  static Error from_errno(int err, const char* op, int fd = -1, std::size_t transferred = 0) {
    return Error{std::error_code(err, std::system_category()), op, fd, transferred};
  }
};

/// Either a T or an Error. `value()` throws std::system_error for those who
/// prefer exceptions; `*r` and `r->` assume success.
template <class T>
class [[nodiscard]] Result {
 public:
  using value_type = T;
  Result(T value) noexcept(std::is_nothrow_move_constructible_v<T>)  // NOLINT: implicit on purpose
      : ok_(true) {
    ::new (static_cast<void*>(&value_)) T(std::move(value));
  }
  Result(Error error) noexcept : ok_(false) {  // NOLINT: implicit on purpose
    ::new (static_cast<void*>(&error_)) Error(std::move(error));
  }
  Result(Result&& other) noexcept(std::is_nothrow_move_constructible_v<T>) : ok_(other.ok_) {
    if (ok_)
      ::new (static_cast<void*>(&value_)) T(std::move(other.value_));
    else
      ::new (static_cast<void*>(&error_)) Error(std::move(other.error_));
  }
  Result(const Result& other) requires std::is_copy_constructible_v<T> : ok_(other.ok_) {
    if (ok_)
      ::new (static_cast<void*>(&value_)) T(other.value_);
    else
      ::new (static_cast<void*>(&error_)) Error(other.error_);
  }
  Result& operator=(Result other) noexcept(std::is_nothrow_move_constructible_v<T>) {
    if (this != &other) {
      destroy();
      ok_ = other.ok_;
      if (ok_)
        ::new (static_cast<void*>(&value_)) T(std::move(other.value_));
      else
        ::new (static_cast<void*>(&error_)) Error(std::move(other.error_));
    }
    return *this;
  }
  ~Result() requires(std::is_trivially_destructible_v<T>) = default;
  ~Result() requires(!std::is_trivially_destructible_v<T>) { destroy(); }

  [[nodiscard]] bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }

  T& operator*() & noexcept { return value_; }
  const T& operator*() const& noexcept { return value_; }
  T&& operator*() && noexcept { return std::move(value_); }
  T* operator->() noexcept { return &value_; }
  const T* operator->() const noexcept { return &value_; }

  T& value() & {
    if (!ok_) error_.raise();
    return value_;
  }
  const T& value() const& {
    if (!ok_) error_.raise();
    return value_;
  }
  T&& value() && {
    if (!ok_) error_.raise();
    return std::move(value_);
  }
  /// The error; an empty Error (no code) when there is a value.
  [[nodiscard]] const Error& error() const noexcept {
    static const Error none{};
    return ok_ ? none : error_;
  }

 private:
  void destroy() noexcept {
    if (ok_)
      value_.~T();
    else
      error_.~Error();
  }
  bool ok_;
  union {
    T value_;
    Error error_;
  };
};

/// Success with nothing to carry (connect, shutdown, close).
template <>
class [[nodiscard]] Result<void> {
 public:
  using value_type = void;
  Result() noexcept = default;
  Result(Error error) noexcept : ok_(false), error_(std::move(error)) {}  // NOLINT
  [[nodiscard]] bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  void value() const {
    if (!ok_) error_.raise();
  }
  [[nodiscard]] const Error& error() const noexcept { return error_; }

 private:
  bool ok_ = true;
  Error error_{};
};

}  // namespace lev
