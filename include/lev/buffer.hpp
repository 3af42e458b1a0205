#pragma once
/// \file
/// Buffer views the operations take: any contiguous range of bytes, chars
/// or unsigned chars (std::array, std::vector, std::string, std::span, ...).
/// The caller owns the memory and keeps it alive until the operation has
/// completed.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <ranges>
#include <span>
#include <string_view>
#include <type_traits>

namespace lev {

namespace detail {
template <class T>
concept ByteLike =
    std::same_as<std::remove_cv_t<T>, std::byte> || std::same_as < std::remove_cv_t<T>,
char > || std::same_as<std::remove_cv_t<T>, unsigned char> ||
    std::same_as<std::remove_cv_t<T>, signed char>;

template <class R>
concept ByteRange = std::ranges::contiguous_range<R> && std::ranges::sized_range<R> &&
    ByteLike<std::ranges::range_value_t<R>>;

template <class R>
concept MutableByteRange =
    ByteRange<R> && !std::is_const_v<std::remove_reference_t<std::ranges::range_reference_t<R>>>;
}  // namespace detail

/// A writable byte range the kernel fills (read, recv).
struct MutableBuffer {
  void* data = nullptr;
  std::size_t size = 0;

  MutableBuffer() noexcept = default;
  MutableBuffer(void* d, std::size_t n) noexcept : data(d), size(n) {}
  template <detail::MutableByteRange R>
  requires(!std::is_same_v<std::remove_cvref_t<R>, MutableBuffer>) MutableBuffer(R&& r)
  noexcept  // NOLINT: implicit on purpose
      : data(std::ranges::data(r)), size(std::ranges::size(r)) {}

  [[nodiscard]] std::span<std::byte> bytes() const noexcept {
    return {static_cast<std::byte*>(data), size};
  }
};

/// A read-only byte range the kernel takes from (write, send).
struct ConstBuffer {
  const void* data = nullptr;
  std::size_t size = 0;

  ConstBuffer() noexcept = default;
  ConstBuffer(const void* d, std::size_t n) noexcept : data(d), size(n) {}
  ConstBuffer(MutableBuffer b) noexcept : data(b.data), size(b.size) {}         // NOLINT
  ConstBuffer(std::string_view s) noexcept : data(s.data()), size(s.size()) {}  // NOLINT
  template <detail::ByteRange R>
  requires(!std::is_same_v<std::remove_cvref_t<R>, ConstBuffer> &&
           !std::is_array_v<std::remove_cvref_t<R>>) ConstBuffer(R&& r)
  noexcept  // NOLINT: implicit on purpose
      : data(std::ranges::data(r)), size(std::ranges::size(r)) {}

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
    return {static_cast<const std::byte*>(data), size};
  }
};

}  // namespace lev
