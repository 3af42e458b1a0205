#pragma once
// The io_uring completion backend. Not a public header.
#include <liburing.h>

#include <cstddef>

#include "lev/backend.hpp"

namespace lev {

struct LoopOptions;

class UringBackend final : public CompletionBackend {
 public:
  /// Throws std::system_error naming the cause when io_uring cannot start.
  explicit UringBackend(const LoopOptions& options);
  ~UringBackend() override;
  UringBackend(const UringBackend&) = delete;
  UringBackend& operator=(const UringBackend&) = delete;

  void attach(CompletionQueue& queue) override { queue_ = &queue; }
  [[nodiscard]] std::string_view name() const noexcept override { return "uring"; }
  void submit(detail::OpBase& op) override;
  void cancel(detail::OpBase& op) override;
  std::size_t poll(std::optional<Duration> timeout) override;
  [[nodiscard]] std::size_t in_flight() const noexcept override { return in_flight_; }

  [[nodiscard]] unsigned setup_flags() const noexcept { return ring_.flags; }

 private:
  io_uring_sqe* get_sqe();
  std::size_t reap() noexcept;
  void flush();

  io_uring ring_{};
  CompletionQueue* queue_ = nullptr;
  std::size_t in_flight_ = 0;
  unsigned batch_ = 0;
  unsigned unflushed_ = 0;
};

/// Fills `sqe` for `op` (runtime/proactor/uring/prep.cpp).
void prep_sqe(io_uring_sqe* sqe, detail::OpBase& op) noexcept;

}  // namespace lev
