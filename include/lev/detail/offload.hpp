#pragma once
/// \file
/// Loop::offload: a blocking function run on a shared worker pool; the
/// caller resumes on its own loop, from the completion queue.

#include <coroutine>
#include <exception>
#include <functional>
#include <type_traits>
#include <utility>
#include <variant>

#include "lev/detail/op.hpp"

namespace lev {
class Loop;
}

namespace lev::detail {

/// Runs `job` on the offload pool (a few threads, started on demand, living
/// for the process).
void offload_run(std::function<void()> job);
/// Loop hooks (defined with Loop): register an op completed by another
/// thread; wait for it when its awaiter is destroyed early.
void begin_external(Loop& loop, OpBase& op) noexcept;
void post_op_to(Loop& loop, OpBase& op) noexcept;
void abandon_op(Loop& loop, OpBase& op) noexcept;

template <class F>
class [[nodiscard]] OffloadAwaiter {
  using R = std::invoke_result_t<F&>;
  using Stored = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

 public:
  OffloadAwaiter(Loop& loop, F fn) : loop_(&loop), fn_(std::move(fn)) {}
  OffloadAwaiter(OffloadAwaiter&&) = delete;
  /// An awaiter destroyed while the function runs waits for it to return.
  ~OffloadAwaiter() {
    if (static_cast<unsigned>(op_.state) - 1u < 2u) abandon_op(*loop_, op_);
  }
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    op_.kind = OpKind::post;
    op_.ctx = h.address();
    op_.deliver = nullptr;
    begin_external(*loop_, op_);
    offload_run([this] {
      try {
        if constexpr (std::is_void_v<R>) {
          fn_();
          out_.template emplace<1>();
        } else {
          out_.template emplace<1>(fn_());
        }
      } catch (...) {
        out_.template emplace<2>(std::current_exception());
      }
      post_op_to(*loop_, op_);  // publishes the result to the loop thread
    });
  }
  R await_resume() {
    if (out_.index() == 2) std::rethrow_exception(std::get<2>(out_));
    if constexpr (!std::is_void_v<R>) return std::move(std::get<1>(out_));
  }

 private:
  Loop* loop_;
  F fn_;
  std::variant<std::monostate, Stored, std::exception_ptr> out_;
  OpBase op_;
};

}  // namespace lev::detail
