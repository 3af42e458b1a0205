#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Stream: buffered reads and writes on a connected fd, split into messages
/// by a codec (line, length-prefixed, raw), with write backpressure.
///
///     lev::net::Stream s{loop, std::move(fd), {.codec = lev::net::Codec::line()}};
///     while (auto msg = co_await s.read_message()) {
///       if (!*msg) break;                               // EOF
///       co_await s.write_message("echo: " + **msg);     // waits above the high mark
///     }
///     co_await s.close();                               // flushes, or reports what was lost
///
/// Backpressure: written messages are queued and sent by a flusher in the
/// background; write_message suspends its caller while more than
/// `high_watermark` bytes are queued and resumes it once the queue is below
/// `low_watermark`. Every resumption comes from the loop's completion queue.
///
/// Cancellation: a task parked in write_message, flush or close leaves the
/// wait when its stop token is stopped (with_timeout, when_any, a task
/// group) and gets errc::operation_canceled. What write_message queued
/// stays queued and is still sent; a cancelled close() drops what was not
/// sent yet (the error's `transferred` counts it) and closes the fd.

#include <concepts>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "lev/detail/op.hpp"
#include "lev/error.hpp"
#include "lev/fd.hpp"
#include "lev/task.hpp"

namespace lev {
class Loop;
class IdleDeadline;
}
namespace lev::tls {
class Connection;
}

namespace lev::net {

/// How a byte stream splits into messages.
class Codec {
 public:
  /// Which framing a Codec uses.
  enum class Kind {
    line,             ///< messages end with a delimiter
    length_prefixed,  ///< a u32 big-endian length, then the message
    raw,              ///< no framing: bytes as they arrive
  };
  /// Messages end with `delimiter` (not included in the message). A line
  /// longer than `max_length` without a delimiter is errc::message_size.
  static Codec line(char delimiter = '\n', std::size_t max_length = 64 * 1024) {
    return Codec{Kind::line, delimiter, max_length};
  }
  /// A u32 big-endian length, then that many bytes; longer than
  /// `max_frame` is errc::message_size.
  static Codec length_prefixed(std::size_t max_frame = 16 * 1024 * 1024) {
    return Codec{Kind::length_prefixed, 0, max_frame};
  }
  /// Whatever bytes arrived, as they arrived.
  static Codec raw() { return Codec{Kind::raw, 0, 0}; }

  /// What decode() found at the front of a buffer.
  struct Decoded {
    /// Whether a message was found.
    enum class Status {
      need_more,                 ///< no whole message yet: read more
      message,                   ///< `message` is one
      error,                     ///< the bytes break the framing (too long)
    } status;                    ///< what was found
    std::size_t consumed = 0;    ///< bytes to drop from the front of the buffer
    std::string_view message{};  ///< the message; valid until the buffer changes
  };
  /// Looks for one message at the front of `buffered`.
  [[nodiscard]] Decoded decode(std::string_view buffered) const noexcept;
  /// Appends `message`, framed, to `out`. Errors (message_size for a frame
  /// too large, invalid_argument for a line containing the delimiter).
  [[nodiscard]] Result<void> encode(std::string& out, std::string_view message) const;
  /// The framing.
  [[nodiscard]] Kind kind() const noexcept { return kind_; }
  /// The longest message accepted (line: max_length; length_prefixed:
  /// max_frame; raw: 0, no limit).
  [[nodiscard]] std::size_t max() const noexcept { return max_; }

 private:
  Codec(Kind k, char d, std::size_t m) : kind_(k), delimiter_(d), max_(m) {}
  Kind kind_;
  char delimiter_;
  std::size_t max_;
};

class Stream;

/// What on_message holds: a callable taking `(Stream&, std::string_view)`
/// (the stream that read the message, to reply on: the seed's
/// `on_message => sub ($stream, $line)`) or just `(std::string_view)`.
class MessageHandler {
 public:
  /// No handler: messages are read and dropped.
  MessageHandler() = default;
  /// A handler that gets the stream and the message.
  template <class F>
  requires std::invocable<F&, Stream&, std::string_view> MessageHandler(F f)
      : fn_(std::move(f)) {}  // NOLINT: implicit, for designated initializers
  /// A handler that gets the message only.
  template <class F>
  requires(!std::invocable<F&, Stream&, std::string_view> && std::invocable<F&, std::string_view>)
      MessageHandler(F f)  // NOLINT: implicit, for designated initializers
      : fn_([g = std::move(f)](Stream&, std::string_view m) mutable { g(m); }) {}
  /// A handler is set.
  explicit operator bool() const noexcept { return static_cast<bool>(fn_); }
  /// Calls the handler.
  void operator()(Stream& stream, std::string_view message) const { fn_(stream, message); }

 private:
  std::function<void(Stream&, std::string_view)> fn_;
};

/// The seed's callback style, beside the coroutine style. Every callback
/// runs on the loop thread from the completion queue. No callback runs
/// after the Stream is destroyed or close() is called (a local close is
/// reported to neither on_close nor on_error), nor after on_error.
///
///     stream.start({.on_message = [](lev::net::Stream& s, std::string_view line) {
///       (void)s.enqueue("echo: " + std::string(line));   // a reply, no bookkeeping
///     }});
struct StreamCallbacks {
  /// One decoded message, with the Stream it came from (the Stream object
  /// start() was called on, or the one it was moved to since).
  MessageHandler on_message{};
  std::function<void()>
      on_drain{};  ///< the queue fell below the low mark after passing the high mark
  std::function<void()> on_close{};  ///< the peer ended the stream cleanly
  /// At most once: a reset, an over-long line, a truncated frame, or a
  /// failed send (reported when it fails; `transferred` = bytes not sent).
  std::function<void(const Error&)> on_error{};
};

/// How a Stream frames and buffers.
struct StreamOptions {
  Codec codec = Codec::line();               ///< how bytes split into messages
  std::size_t read_chunk = 16 * 1024;        ///< bytes asked for per receive
  std::size_t high_watermark = 1024 * 1024;  ///< queued bytes above which writers wait
  std::size_t low_watermark = 256 * 1024;    ///< queued bytes below which they go on
};

namespace detail {
struct StreamState;
}

/// A connected fd (socket or pipe) with buffered, framed reads and writes
/// (see the file comment). Move-only; use it on its loop's thread.
class Stream {
 public:
  /// Takes ownership of `fd`. Throws std::invalid_argument when
  /// low_watermark > high_watermark.
  Stream(Loop& loop, Fd fd, StreamOptions options = {});
  /// Over an established TLS connection (lev/net/tls.hpp: tls::connect,
  /// tls::accept_handler), which it takes over: codecs, watermarks,
  /// callbacks and close() work as on a socket; reads end at the peer's
  /// close_notify (a close without one is an error, tls::errc::truncated);
  /// shutdown_write() and close() send close_notify after the queue.
  Stream(Loop& loop, tls::Connection connection, StreamOptions options = {});
  /// Takes over the other's connection and queue (and its callbacks, which
  /// then get this Stream).
  Stream(Stream&& other) noexcept;
  /// Lets go of this Stream's connection as the destructor does, then takes
  /// over the other's.
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  /// If bytes are still queued the background flusher finishes sending them
  /// and then closes the fd (nothing queued is dropped silently). A
  /// callback-style reader stops at once (no further callback) and the fd
  /// closes when neither it nor the flusher uses it. May be called from
  /// inside one of its own callbacks.
  ~Stream();

  /// The next message; nullopt at a clean end of stream. A peer reset,
  /// an over-long line or a truncated frame is an error.
  Task<Result<std::optional<std::string>>> read_message();
  /// read_message() with its receives guarded by `deadline` (one timer per
  /// connection, not one per receive: lev/deadline.hpp): errc::timed_out
  /// once the deadline's limit passes while it waits; what was received
  /// stays buffered. A server's "next line within 60 s" is
  /// `deadline.limit_until(loop.now() + 60s)` before each call.
  Task<Result<std::optional<std::string>>> read_message(IdleDeadline& deadline);
  /// Frames and queues `message`; suspends while the queue is above the
  /// high watermark. An error once the stream has failed (the error says
  /// how many queued bytes were not sent); operation_canceled when the
  /// task is cancelled while it waits (the message stays queued).
  Task<Result<void>> write_message(std::string_view message);
  /// Frames and queues `message` without waiting (the flusher sends it):
  /// for fan-out, where one slow peer must not stall the sender. Check
  /// queued() to bound what a peer may hold.
  Result<void> enqueue(std::string_view message);
  /// Callback style: reads messages in the background and calls `cb` for
  /// each (and on_close / on_error once at the end); on_drain whenever the
  /// write queue drains back below the low mark. Do not mix with
  /// read_message() on the same Stream.
  void start(StreamCallbacks cb);
  /// Waits until every queued byte has been sent (operation_canceled when
  /// the task is cancelled first; the bytes stay queued).
  Task<Result<void>> flush();
  /// Flushes, then shuts down the write side (the peer reads EOF).
  Task<Result<void>> shutdown_write();
  /// Stops the callback-style reader, flushes and closes. If a send failed
  /// (whatever its error, operation_canceled included when something else
  /// cancelled it), the fd is closed and the error reports the bytes that
  /// were never sent ("stream write (bytes not sent)"). This task cancelled
  /// while flushing: the rest of the queue is dropped ("stream close (bytes
  /// not sent)", operation_canceled, `transferred` = bytes dropped), the
  /// send in flight is cancelled and the fd is closed once it has ended.
  Task<Result<void>> close();

  /// Bytes framed and not yet sent.
  [[nodiscard]] std::size_t queued() const noexcept;
  /// Memory the read side holds to gather a message that spans receives:
  /// at most about the longest message plus one receive.
  [[nodiscard]] std::size_t read_buffer_capacity() const noexcept;
  /// The descriptor, still owned by the Stream (-1 when moved from).
  [[nodiscard]] int fd() const noexcept;

 private:
  void release() noexcept;

  std::shared_ptr<detail::StreamState> s_;
};

}  // namespace lev::net
