#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Errors as values: `lev::Error` and `lev::Result<T>`.
///
///     auto n = co_await loop.recv(fd, buf);
///     if (!n) std::puts(n.error().message().c_str());

#include <cassert>
#include <cstddef>
#include <functional>
#include <new>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

namespace lev {

/// Errors of lev's own (not errno values).
enum class errc {
  closed = 1,  ///< the channel was closed
};
/// The category of lev::errc codes (name "lev").
const std::error_category& lev_category() noexcept;
/// Makes lev::errc values usable as std::error_code (`code == lev::errc::closed`).
inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), lev_category()};
}

}  // namespace lev

/// \cond detail
template <>
struct std::is_error_code_enum<lev::errc> : std::true_type {};
/// \endcond

namespace lev {

/// What went wrong with one operation: the error code, the operation's name
/// and the fd it ran on (-1 when none). `transferred` counts the bytes an
/// operation had already moved before it failed (send_all / write_all), so
/// that no byte accepted for sending goes unreported.
struct Error {
  std::error_code code;         ///< the reason (an errno value, or lev::errc)
  const char* op = "";          ///< the operation ("recv", "bind"...), a static string
  int fd = -1;                  ///< the descriptor it ran on, -1 when none
  std::size_t transferred = 0;  ///< bytes moved before the failure
  /// The path the operation named (File::open, lev::stat, unlink, mkdir;
  /// rename: "from -> to"), or the host name it looked up (net::resolve,
  /// net::connect), null when none. Its text lives as long as the
  /// process, so that Error stays trivially copyable (and every Result on
  /// the I/O path with it): lev keeps each distinct failed path once, up
  /// to 1 MiB of them in all; past that, errors name the op only.
  const char* path = nullptr;

  /// "recv(fd 7): Connection reset by peer"; with bytes transferred first,
  /// "send(fd 7) after 12 bytes: Broken pipe"; with a path,
  /// "openat(/srv/x): No such file or directory".
  [[nodiscard]] std::string message() const;
  /// This error, naming `p` as the path it concerned (see `path`).
  [[nodiscard]] Error with_path(std::string_view p) const;
  /// The operation was cancelled (errc::operation_canceled): a stop
  /// request, a when_any loser, a loop tearing down.
  [[nodiscard]] bool is_cancelled() const noexcept { return code == std::errc::operation_canceled; }
  /// A deadline passed first (errc::timed_out).
  [[nodiscard]] bool is_timeout() const noexcept { return code == std::errc::timed_out; }
  /// The channel was closed (lev::errc::closed).
  [[nodiscard]] bool is_closed() const noexcept { return code == errc::closed; }
  /// Throws std::system_error carrying `code`, whose what() reads as message().
  [[noreturn]] void raise() const;

  /// An Error from a negative errno value as io_uring reports it.
  static Error from_errno(int err, const char* op, int fd = -1, std::size_t transferred = 0) {
    return Error{std::error_code(err, std::system_category()), op, fd, transferred};
  }
};

template <class T>
class Result;

namespace detail {
template <class R>
inline constexpr bool is_result_v = false;
template <class T>
inline constexpr bool is_result_v<Result<T>> = true;
/// What and_then's and or_else's function must return: some lev::Result.
template <class R>
concept ResultType = is_result_v<std::remove_cvref_t<R>>;
}  // namespace detail

/// Either a T or an Error, with std::expected's vocabulary: `value()`
/// throws std::system_error for those who prefer exceptions; `*r` and `r->`
/// require a value (asserted in debug builds); `value_or`, `and_then`,
/// `transform` and `or_else` chain without branching.
///
///     auto size = co_await loop.read(fd, buf);
///     std::size_t n = size.value_or(0);
template <class T>
class [[nodiscard]] Result {
 public:
  using value_type = T;  ///< what a success holds
  /// A success holding `value`.
  Result(T value) noexcept(std::is_nothrow_move_constructible_v<T>)  // NOLINT: implicit on purpose
      : ok_(true) {
    ::new (static_cast<void*>(&value_)) T(std::move(value));
  }
  /// A failure holding `error`.
  Result(Error error) noexcept : ok_(false) {  // NOLINT: implicit on purpose
    ::new (static_cast<void*>(&error_)) Error(std::move(error));
  }
  /// Moves the value or the error out of `other` (which keeps a moved-from one).
  Result(Result&& other) noexcept(std::is_nothrow_move_constructible_v<T>) : ok_(other.ok_) {
    if (ok_)
      ::new (static_cast<void*>(&value_)) T(std::move(other.value_));
    else
      ::new (static_cast<void*>(&error_)) Error(std::move(other.error_));
  }
  /// Copies the value or the error (when T is copyable).
  Result(const Result& other) requires std::is_copy_constructible_v<T> : ok_(other.ok_) {
    if (ok_)
      ::new (static_cast<void*>(&value_)) T(other.value_);
    else
      ::new (static_cast<void*>(&error_)) Error(other.error_);
  }
  /// Replaces what this holds with what `other` holds.
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
  // One destructor for every T (a pair constrained on triviality is what
  // clang before 16 rejects); for a trivially destructible T it compiles to
  // nothing.
  /// Destroys the value or the error.
  ~Result() { destroy(); }

  /// True when a value is held.
  [[nodiscard]] bool has_value() const noexcept { return ok_; }
  /// True when a value is held.
  explicit operator bool() const noexcept { return ok_; }

  /// The value; requires has_value() (asserted in debug builds).
  T& operator*() & noexcept {
    check();
    return value_;
  }
  /// The value; requires has_value() (asserted in debug builds).
  const T& operator*() const& noexcept {
    check();
    return value_;
  }
  /// The value, moved out; requires has_value() (asserted in debug builds).
  T&& operator*() && noexcept {
    check();
    return std::move(value_);
  }
  /// The value's members; requires has_value() (asserted in debug builds).
  T* operator->() noexcept {
    check();
    return &value_;
  }
  /// The value's members; requires has_value() (asserted in debug builds).
  const T* operator->() const noexcept {
    check();
    return &value_;
  }

  /// The value; throws std::system_error (code and message()) on an error.
  T& value() & {
    if (!ok_) error_.raise();
    return value_;
  }
  /// The value; throws std::system_error (code and message()) on an error.
  const T& value() const& {
    if (!ok_) error_.raise();
    return value_;
  }
  /// The value, moved out; throws std::system_error on an error.
  T&& value() && {
    if (!ok_) error_.raise();
    return std::move(value_);
  }
  /// The error; an empty Error (no code) when there is a value.
  [[nodiscard]] const Error& error() const noexcept {
    static const Error none{};
    return ok_ ? none : error_;
  }

  /// The value, or `fallback` converted to T when there is an error.
  template <class U>
  [[nodiscard]] T value_or(U&& fallback) const& requires std::is_convertible_v<U, T> {
    return ok_ ? value_ : static_cast<T>(std::forward<U>(fallback));
  }
  /// The value moved out, or `fallback` converted to T when there is an error.
  template <class U>
      [[nodiscard]] T value_or(U&& fallback) && requires std::is_convertible_v<U, T> {
    return ok_ ? std::move(value_) : static_cast<T>(std::forward<U>(fallback));
  }

  /// `f(value)` (itself a `Result<U>`) on success; the error, as a `Result<U>`,
  /// otherwise.
  ///
  ///     Result<int> port = parse(text).and_then(check_range);
  template <class F>
  auto and_then(F&& f) & {
    return bind(*this, std::forward<F>(f));
  }
  /// `f(value)` (itself a `Result<U>`) on success; the error otherwise.
  template <class F>
  auto and_then(F&& f) const& {
    return bind(*this, std::forward<F>(f));
  }
  /// `f(std::move(value))` (itself a `Result<U>`) on success; the error otherwise.
  template <class F>
  auto and_then(F&& f) && {
    return bind(std::move(*this), std::forward<F>(f));
  }

  /// `Result<U>{f(value)}` on success (`Result<void>` when f returns void);
  /// the error otherwise.
  ///
  ///     Result<std::string> text = n.transform([](std::size_t k) { return std::to_string(k); });
  template <class F>
  auto transform(F&& f) & {
    return map(*this, std::forward<F>(f));
  }
  /// `Result<U>{f(value)}` on success; the error otherwise.
  template <class F>
  auto transform(F&& f) const& {
    return map(*this, std::forward<F>(f));
  }
  /// `Result<U>{f(std::move(value))}` on success; the error otherwise.
  template <class F>
  auto transform(F&& f) && {
    return map(std::move(*this), std::forward<F>(f));
  }

  /// A copy of this on success; `f(error())`, which must return a `Result<T>`,
  /// otherwise (to recover, or to replace the error).
  template <class F>
  Result or_else(F&& f) const& {
    static_assert(
        std::is_same_v<std::remove_cvref_t<std::invoke_result_t<F, const Error&>>, Result>,
        "or_else: the function must return the same Result<T>");
    if (ok_) return *this;
    return std::invoke(std::forward<F>(f), error_);
  }
  /// This moved on success; `f(error())`, which must return a `Result<T>`,
  /// otherwise.
  template <class F>
  Result or_else(F&& f) && {
    static_assert(
        std::is_same_v<std::remove_cvref_t<std::invoke_result_t<F, const Error&>>, Result>,
        "or_else: the function must return the same Result<T>");
    if (ok_) return std::move(*this);
    return std::invoke(std::forward<F>(f), error_);
  }

 private:
  template <class Self, class F>
  static auto bind(Self&& self, F&& f) {
    using R =
        std::remove_cvref_t<std::invoke_result_t<F, decltype((std::forward<Self>(self).value_))>>;
    static_assert(detail::ResultType<R>, "and_then: the function must return a lev::Result");
    if (!self.ok_) return R(self.error_);
    return std::invoke(std::forward<F>(f), std::forward<Self>(self).value_);
  }
  template <class Self, class F>
  static auto map(Self&& self, F&& f) {
    using U =
        std::remove_cv_t<std::invoke_result_t<F, decltype((std::forward<Self>(self).value_))>>;
    if (!self.ok_) return Result<U>(self.error_);
    if constexpr (std::is_void_v<U>) {
      std::invoke(std::forward<F>(f), std::forward<Self>(self).value_);
      return Result<U>();
    } else {
      return Result<U>(std::invoke(std::forward<F>(f), std::forward<Self>(self).value_));
    }
  }
  void check() const noexcept { assert(ok_ && "lev::Result: * or -> on an error"); }
  void destroy() noexcept {
    if constexpr (!std::is_trivially_destructible_v<T>) {
      if (ok_)
        value_.~T();
      else
        error_.~Error();
    }
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
  using value_type = void;  ///< nothing
  /// A success.
  Result() noexcept {}  // NOLINT: error_ is made only for a failure
  /// A failure holding `error`.
  Result(Error error) noexcept : ok_(false), error_(std::move(error)) {}  // NOLINT
  /// True on success.
  [[nodiscard]] bool has_value() const noexcept { return ok_; }
  /// True on success.
  explicit operator bool() const noexcept { return ok_; }
  /// Nothing on success; throws std::system_error (code and message()) on an error.
  void value() const {
    if (!ok_) error_.raise();
  }
  /// The error; an empty Error (no code) on success.
  [[nodiscard]] const Error& error() const noexcept {
    static const Error none{};
    return ok_ ? none : error_;
  }

  /// `f()` (itself a `Result<U>`) on success; the error, as a `Result<U>`, otherwise.
  template <class F>
  auto and_then(F&& f) const {
    using R = std::remove_cvref_t<std::invoke_result_t<F>>;
    static_assert(detail::ResultType<R>, "and_then: the function must return a lev::Result");
    if (!ok_) return R(error_);
    return std::invoke(std::forward<F>(f));
  }
  /// `Result<U>{f()}` on success (`Result<void>` when f returns void); the
  /// error otherwise.
  template <class F>
  auto transform(F&& f) const {
    using U = std::remove_cv_t<std::invoke_result_t<F>>;
    if (!ok_) return Result<U>(error_);
    if constexpr (std::is_void_v<U>) {
      std::invoke(std::forward<F>(f));
      return Result<U>();
    } else {
      return Result<U>(std::invoke(std::forward<F>(f)));
    }
  }
  /// Success as is; `f(error())`, which must return a `Result<void>`, otherwise.
  template <class F>
  Result or_else(F&& f) const {
    static_assert(
        std::is_same_v<std::remove_cvref_t<std::invoke_result_t<F, const Error&>>, Result>,
        "or_else: the function must return Result<void>");
    if (ok_) return *this;
    return std::invoke(std::forward<F>(f), error_);
  }

 private:
  bool ok_ = true;
  union {
    Error error_;  // made only for a failure (Error is trivially copyable)
  };
};
static_assert(std::is_trivially_copyable_v<Error>, "Result's unions copy Error as bytes");

}  // namespace lev
