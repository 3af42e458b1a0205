#pragma once
/// \file
/// Work handed to a loop from any thread (Loop::post, cross-thread stop
/// requests, offload results). A node waits in the loop's inbox until the
/// loop thread moves it onto the completion queue as a `post` op; it runs
/// only while that queue is drained, like every other completion.

#include <atomic>
#include <type_traits>
#include <utility>

#include "lev/detail/op.hpp"

namespace lev::detail {

/// Test seam: when set, a thread waking a loop by its eventfd calls it
/// right before the write (tests inject a preemption there, where the loop
/// may already have seen the post and be gone). Null in programs.
extern std::atomic<void (*)()> before_eventfd_wake;

struct RemoteNode {
  OpBase op;  // the post that delivers it
  RemoteNode() noexcept { op.kind = OpKind::post; }
  RemoteNode(const RemoteNode&) = delete;
  RemoteNode& operator=(const RemoteNode&) = delete;
  virtual ~RemoteNode() = default;
  /// Runs on the loop thread, from the completion queue.
  virtual void run() = 0;
};

template <class F>
struct RemoteFn final : RemoteNode {
  F fn;
  template <class G>
  explicit RemoteFn(G&& g) : fn(std::forward<G>(g)) {}
  void run() override { fn(); }
};

}  // namespace lev::detail
