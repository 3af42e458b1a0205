#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Buffer views the operations take: any contiguous range of bytes, chars
/// or unsigned chars (std::array, std::vector, std::string, std::span, ...).
/// The caller owns the memory and keeps it alive until the operation has
/// completed. And lev::Buffer, the owned receive buffer that
/// `co_await loop.recv(fd)` hands out from the loop's pool.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include "lev/detail/buffer_pool.hpp"

namespace lev {

namespace detail {
class RecvBufferAwaiter;

template <class T>
concept ByteLike =
    std::same_as<std::remove_cv_t<T>, std::byte> || std::same_as < std::remove_cv_t<T>,
char > || std::same_as<std::remove_cv_t<T>, unsigned char> ||
    std::same_as<std::remove_cv_t<T>, signed char>;

// Contiguous and sized: std::data and std::size (from <span>; <ranges>,
// whose concepts say the same for these types, costs every includer a
// fifth of a second to parse).
template <class R>
concept HasData = requires(R& r) {
  std::data(r);
  { std::size(r) } -> std::convertible_to<std::size_t>;
};
template <class R>
using DataElement = std::remove_pointer_t<decltype(std::data(std::declval<R&>()))>;

template <class R>
concept ByteRange = HasData<R> && ByteLike<DataElement<R>>;

template <class R>
concept MutableByteRange = ByteRange<R> && !std::is_const_v<DataElement<R>>;
}  // namespace detail

/// A writable byte range the kernel fills (read, recv).
struct MutableBuffer {
  void* data = nullptr;  ///< the first byte
  std::size_t size = 0;  ///< how many bytes

  MutableBuffer() noexcept = default;
  /// `n` bytes at `d`.
  MutableBuffer(void* d, std::size_t n) noexcept : data(d), size(n) {}
  /// Any contiguous range of writable bytes (std::array<char, N>,
  /// std::vector<std::byte>, std::span<char>...).
  template <detail::MutableByteRange R>
  requires(!std::is_same_v<std::remove_cvref_t<R>, MutableBuffer>) MutableBuffer(R&& r)
  noexcept  // NOLINT: implicit on purpose
      : data(std::data(r)), size(std::size(r)) {}

  /// The range as bytes.
  [[nodiscard]] std::span<std::byte> bytes() const noexcept {
    return {static_cast<std::byte*>(data), size};
  }
};

/// A read-only byte range the kernel takes from (write, send).
struct ConstBuffer {
  const void* data = nullptr;  ///< the first byte
  std::size_t size = 0;        ///< how many bytes

  ConstBuffer() noexcept = default;
  /// `n` bytes at `d`.
  ConstBuffer(const void* d, std::size_t n) noexcept : data(d), size(n) {}
  /// The same bytes, read-only.
  ConstBuffer(MutableBuffer b) noexcept : data(b.data), size(b.size) {}  // NOLINT
  /// The characters of `s` (no terminating null).
  ConstBuffer(std::string_view s) noexcept : data(s.data()), size(s.size()) {}  // NOLINT
  /// Any contiguous range of bytes (std::string, std::vector<char>, a
  /// lev::Buffer...), except a C array (a string literal would bring its
  /// null: pass a std::string_view).
  template <detail::ByteRange R>
  requires(!std::is_same_v<std::remove_cvref_t<R>, ConstBuffer> &&
           !std::is_array_v<std::remove_cvref_t<R>>) ConstBuffer(R&& r)
  noexcept  // NOLINT: implicit on purpose
      : data(std::data(r)), size(std::size(r)) {}

  /// The range as bytes.
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
    return {static_cast<const std::byte*>(data), size};
  }
};

/// Bytes received into one of the loop's pool buffers
/// (`co_await loop.recv(fd)`). Move-only; the buffer goes back to the pool
/// (on io_uring: to the kernel's provided-buffer ring) when the Buffer is
/// destroyed or reset. Empty (size 0) at end of stream. Use it on its
/// loop's thread, and drop it before the loop is destroyed or after: the
/// pool outlives the loop until its last Buffer is gone.
///
///     while (true) {
///       auto got = co_await loop.recv(fd);
///       if (!got || got->empty()) break;            // error, or EOF
///       co_await loop.send_all(fd, *got);           // a Buffer is a byte range
///     }                                             // back to the pool here
class Buffer {
 public:
  /// An empty Buffer that holds no pool buffer.
  Buffer() noexcept = default;
  /// Takes `o`'s pool buffer; `o` is empty after.
  Buffer(Buffer&& o) noexcept
      : pool_(std::exchange(o.pool_, nullptr)),
        data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        id_(o.id_) {}
  /// Gives the held pool buffer back and takes `o`'s.
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      pool_ = std::exchange(o.pool_, nullptr);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      id_ = o.id_;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  /// Gives the pool buffer back.
  ~Buffer() { reset(); }

  /// The received bytes (writable: parse in place).
  [[nodiscard]] char* data() noexcept { return data_; }
  /// The received bytes.
  [[nodiscard]] const char* data() const noexcept { return data_; }
  /// How many bytes were received (0: end of stream).
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// True at end of stream, or when no buffer is held.
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  /// The first byte, for range-for and algorithms.
  [[nodiscard]] char* begin() noexcept { return data_; }
  /// Past the last byte.
  [[nodiscard]] char* end() noexcept { return data_ + size_; }
  /// The first byte, for range-for and algorithms.
  [[nodiscard]] const char* begin() const noexcept { return data_; }
  /// Past the last byte.
  [[nodiscard]] const char* end() const noexcept { return data_ + size_; }
  /// The bytes as characters; valid while this Buffer holds them.
  [[nodiscard]] std::string_view view() const noexcept { return {data_, size_}; }
  /// The bytes as std::byte; valid while this Buffer holds them.
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
    return {reinterpret_cast<const std::byte*>(data_), size_};
  }
  /// Drops the first `n` bytes (a parser's consumed prefix); the buffer
  /// stays out of the pool until the Buffer is destroyed or reset.
  void remove_prefix(std::size_t n) noexcept {
    n = n < size_ ? n : size_;
    data_ += n;
    size_ -= n;
  }
  /// Gives the buffer back to the pool now; the Buffer is empty after.
  void reset() noexcept {
    if (pool_) std::exchange(pool_, nullptr)->give_back(id_);
    data_ = nullptr;
    size_ = 0;
  }
  /// True when the bytes live in a pool buffer (not an empty EOF Buffer).
  [[nodiscard]] bool holds_pool_buffer() const noexcept { return pool_ != nullptr; }

 private:
  friend class detail::RecvBufferAwaiter;  // the only maker of pool Buffers
  /// Adopts buffer `id` of `pool` holding `n` bytes.
  static Buffer adopt(detail::BufferPool& pool, std::uint16_t id, std::size_t n) noexcept {
    Buffer b;
    b.pool_ = &pool;
    b.data_ = pool.data(id);
    b.size_ = n;
    b.id_ = id;
    return b;
  }

  detail::BufferPool* pool_ = nullptr;
  char* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint16_t id_ = 0;
};

}  // namespace lev
