#pragma once
/// \file
/// Ties a std::stop_token to something on a loop (an operation to cancel, a
/// waiter to release). A stop request made on the loop's thread acts at
/// once (the target still completes only through the completion queue); a
/// request made on another thread is posted to the loop and acts there.

#include <atomic>
#include <new>
#include <stop_token>

namespace lev {
class Loop;
}

namespace lev::detail {

struct RemoteStop;

class StopLink {
 public:
  using Handler = void (*)(void*) noexcept;

  // Cheap to build: an awaiter carries one per operation, and almost all
  // of them never arm it (only `armed_` is written here).
  StopLink() noexcept {}  // NOLINT: the other fields are written by arm()
  StopLink(const StopLink&) = delete;
  StopLink& operator=(const StopLink&) = delete;
  ~StopLink() { disarm(); }

  /// Loop thread only. Calls `handler(arg)` once, on the loop thread, when
  /// `token` is stopped; at once (inside this call) if it already is.
  void arm(Loop& loop, const std::stop_token& token, Handler handler, void* arg);
  /// Loop thread only. After it returns, the handler is never called.
  void disarm() noexcept {
    if (armed_) [[unlikely]]
      disarm_slow();
  }

 private:
  friend struct RemoteStop;
  struct Fire {
    StopLink* self;
    void operator()() const noexcept;
  };
  void disarm_slow() noexcept;

  using Callback = std::stop_callback<Fire>;
  Callback& cb() noexcept { return *std::launder(reinterpret_cast<Callback*>(storage_)); }

  bool armed_ = false;
  alignas(Callback) unsigned char storage_[sizeof(Callback)];  // the callback while armed
  Loop* loop_;
  Handler handler_;
  void* arg_;
  std::atomic<RemoteStop*> posted_;  // set by arm()
};

}  // namespace lev::detail
