#pragma once
/// \file
/// Ties a std::stop_token to something on a loop (an operation to cancel, a
/// waiter to release). A stop request made on the loop's thread acts at
/// once (the target still completes only through the completion queue); a
/// request made on another thread is posted to the loop and acts there.

#include <atomic>
#include <optional>
#include <stop_token>

namespace lev {
class Loop;
}

namespace lev::detail {

struct RemoteStop;

class StopLink {
 public:
  using Handler = void (*)(void*) noexcept;

  StopLink() = default;
  StopLink(const StopLink&) = delete;
  StopLink& operator=(const StopLink&) = delete;
  ~StopLink() { disarm(); }

  /// Loop thread only. Calls `handler(arg)` once, on the loop thread, when
  /// `token` is stopped; at once (inside this call) if it already is.
  void arm(Loop& loop, const std::stop_token& token, Handler handler, void* arg);
  /// Loop thread only. After it returns, the handler is never called.
  void disarm() noexcept {
    if (cb_) disarm_slow();
  }

 private:
  friend struct RemoteStop;
  struct Fire {
    StopLink* self;
    void operator()() const noexcept;
  };
  void disarm_slow() noexcept;

  std::optional<std::stop_callback<Fire>> cb_;
  Loop* loop_ = nullptr;
  Handler handler_ = nullptr;
  void* arg_ = nullptr;
  std::atomic<RemoteStop*> posted_{nullptr};
};

}  // namespace lev::detail
