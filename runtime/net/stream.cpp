// Stream: read side decodes from a buffer refilled by recv; write side is a
// queue drained by a flusher task, with writers parked on watermarks and
// resumed through posted ops (from the completion queue, never inline).
#include "lev/net/stream.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>
#include <deque>
#include <stdexcept>

#include "lev/deadline.hpp"
#include "lev/detail/stop.hpp"
#include "lev/loop.hpp"
#include "lev/net/tls.hpp"

namespace lev::net {

// ------------------------------------------------------------------ Codec

Codec::Decoded Codec::decode(std::string_view b) const noexcept {
  using S = Decoded::Status;
  switch (kind_) {
    case Kind::line: {
      std::size_t end = b.find(delimiter_);
      if (end == std::string_view::npos) {
        if (b.size() > max_) return {S::error, 0, {}};
        return {S::need_more, 0, {}};
      }
      if (end > max_) return {S::error, 0, {}};
      return {S::message, end + 1, b.substr(0, end)};
    }
    case Kind::length_prefixed: {
      if (b.size() < 4) return {S::need_more, 0, {}};
      std::uint32_t be;
      std::memcpy(&be, b.data(), 4);
      const std::size_t n = ntohl(be);
      if (n > max_) return {S::error, 0, {}};
      if (b.size() < 4 + n) return {S::need_more, 0, {}};
      return {S::message, 4 + n, b.substr(4, n)};
    }
    case Kind::raw:
      if (b.empty()) return {S::need_more, 0, {}};
      return {S::message, b.size(), b};
  }
  return {S::error, 0, {}};
}

Result<void> Codec::encode(std::string& out, std::string_view m) const {
  switch (kind_) {
    case Kind::line:
      if (m.find(delimiter_) != std::string_view::npos)
        return Error{std::make_error_code(std::errc::invalid_argument),
                     "encode: line with delimiter", -1, 0};
      if (m.size() > max_)
        return Error{std::make_error_code(std::errc::message_size), "encode: line too long", -1, 0};
      out.append(m);
      out.push_back(delimiter_);
      return {};
    case Kind::length_prefixed: {
      if (m.size() > max_ || m.size() > 0xffffffffu)
        return Error{std::make_error_code(std::errc::message_size), "encode: frame too large", -1,
                     0};
      std::uint32_t be = htonl(static_cast<std::uint32_t>(m.size()));
      out.append(reinterpret_cast<const char*>(&be), 4);
      out.append(m);
      return {};
    }
    case Kind::raw:
      out.append(m);
      return {};
  }
  return {};
}

// ----------------------------------------------------------------- Stream

namespace detail {

struct StreamState {
  Loop* loop;
  Fd fd;
  tls::Connection tls;  // valid: the bytes go through TLS (fd is then empty)
  bool socket = true;   // recv/send for sockets; read/write for pipes and ttys
  StreamOptions o;
  std::string rbuf;  // a message spanning receives (and non-socket reads)
  std::size_t rpos = 0;
  Buffer rcur;  // sockets: the last pool buffer, decoded in place
  // Two write buffers: `sending` is what the kernel may be reading (never
  // touched while a send is in flight); writers append to `wbuf`.
  std::string sending;
  std::size_t spos = 0;  // bytes of `sending` already sent
  std::string wbuf;
  lev::detail::OpBase* in_flight = nullptr;       // the flusher's send, while it waits
  tls::Op<std::size_t>* tls_in_flight = nullptr;  // the same over TLS
  bool flushing = false;
  bool closing = false;  // the Stream is gone, or close() gave up: close after the flusher
  std::optional<Error> write_error;
  StreamCallbacks callbacks;
  Stream* owner = nullptr;  // the Stream object on_message gets (null once it is gone)
  bool above_high = false;  // for on_drain
  bool reading = false;     // the callback-style reader runs
  bool started = false;     // start() was called: errors go to on_error
  bool ended = false;       // on_error was called: no callback after it
  // Stops the callback-style reader (made by start()): ~Stream and close()
  // request it, and the reader then ends without another callback.
  std::stop_source reader_stop{std::nostopstate};

  void stop_reader() noexcept {
    if (reader_stop.stop_possible()) reader_stop.request_stop();
  }
  // The end of the stream in callback style: on_error at most once, and
  // nothing after it.
  void report(const Error& e) {
    // Not after ~Stream or close() (they stop the reader), nor twice.
    if (ended || !started || reader_stop.stop_requested()) return;
    ended = true;
    stop_reader();
    if (callbacks.on_error) {
      auto cb = callbacks.on_error;  // the callback may replace or drop the callbacks
      cb(e);
    }
  }

  // A writer parked until the queue drains below a mark; resumed by a post
  // op so that it runs from the loop's completion queue.
  struct Waiter {
    lev::detail::OpBase op;
    std::size_t below;  // resume when queued() <= below
  };
  std::deque<Waiter*> waiters;

  std::size_t queued() const { return sending.size() - spos + wbuf.size(); }
  int fd_number() const noexcept { return tls.valid() ? tls.fd() : fd.get(); }

  void wake_waiters() {
    for (auto it = waiters.begin(); it != waiters.end();) {
      Waiter* w = *it;
      if (queued() <= w->below || write_error) {
        it = waiters.erase(it);
        loop->start(w->op);  // a post: delivered on the next drain
      } else {
        ++it;
      }
    }
  }
};

namespace {

// Parks a writer until the queue is at most `below` bytes (or the stream
// failed). A stop request on the awaiting task's token takes the writer
// out of the queue: it resumes (from the completion queue) with `false`.
struct WaitBelow {
  WaitBelow(StreamState& st, std::size_t b) noexcept : s(st), below(b) {}
  WaitBelow(const WaitBelow&) = delete;
  WaitBelow& operator=(const WaitBelow&) = delete;
  // A frame destroyed while parked (loop teardown) must leave no dangling
  // waiter behind, nor a queued resumption.
  ~WaitBelow() {
    stop.disarm();
    leave();
    if (w.op.state == lev::detail::OpState::completed ||
        w.op.state == lev::detail::OpState::submitted)
      s.loop->abandon(w.op);
  }

  bool await_ready() const noexcept { return s.queued() <= below || s.write_error.has_value(); }
  template <class P>
  void await_suspend(std::coroutine_handle<P> h) {
    w.op.kind = lev::detail::OpKind::post;
    w.op.ctx = h.address();
    w.op.deliver = nullptr;
    w.below = below;
    s.waiters.push_back(&w);
    stop.arm(*s.loop, lev::detail::task_cancel(h), &on_stop, this);
  }
  /// False: the wait was cancelled (the queue may still be above the mark).
  bool await_resume() noexcept {
    stop.disarm();
    return !cancelled;
  }

 private:
  bool leave() noexcept {
    for (auto it = s.waiters.begin(); it != s.waiters.end(); ++it)
      if (*it == &w) {
        s.waiters.erase(it);
        return true;
      }
    return false;
  }
  static void on_stop(void* self) noexcept {
    auto* a = static_cast<WaitBelow*>(self);
    if (!a->leave()) return;  // already released: the release stands
    a->cancelled = true;
    a->s.loop->start_cancelled(a->w.op);
  }

  StreamState& s;
  std::size_t below;
  StreamState::Waiter w{};
  lev::detail::StopLink stop;
  bool cancelled = false;
};

Error unsent(const StreamState& s) {
  Error e = *s.write_error;
  e.transferred = s.queued();
  e.op = "stream write (bytes not sent)";
  return e;
}

// Once the Stream is gone (or close() gave up), the fd closes when neither
// the flusher nor the callback reader uses it any more.
void close_if_done(StreamState& s) noexcept {
  if (s.closing && !s.flushing && !s.reading) {
    s.fd.reset();
    s.tls = {};  // its socket closes once no operation of it runs
  }
}

// Sends the queue until it is empty (or the stream fails); wakes writers
// as the queue passes their marks. Holds the state alive while it runs.
lev::Task<> flusher(std::shared_ptr<StreamState> s) {
  bool failed = false;  // here, not by give_up()
  while (s->queued() > 0 && !s->write_error) {
    if (s->spos == s->sending.size()) {  // take the next batch
      s->sending.clear();
      s->spos = 0;
      s->sending.swap(s->wbuf);
    }
    std::string_view rest(s->sending.data() + s->spos, s->sending.size() - s->spos);
    Result<std::size_t> n = std::size_t{0};
    if (s->tls.valid()) [[unlikely]] {
      auto&& send = s->tls.send(rest);
      s->tls_in_flight = &send;
      n = co_await send;
      s->tls_in_flight = nullptr;
    } else if (s->socket) {  // no co_await inside ?: (GCC 12)
      auto&& send = s->loop->send(s->fd, rest);
      s->in_flight = &send.op();
      n = co_await send;
    } else {
      auto&& write = s->loop->write(s->fd, rest);
      s->in_flight = &write.op();
      n = co_await write;
    }
    s->in_flight = nullptr;
    if (!n) {
      if (!s->write_error) {
        s->write_error = Error{n.error().code, "stream write", s->fd_number(), 0};
        failed = true;
      }
      break;
    }
    s->spos += *n;
    s->wake_waiters();
    if (s->above_high && s->queued() <= s->o.low_watermark) {
      s->above_high = false;
      if (s->callbacks.on_drain) s->callbacks.on_drain();
    }
  }
  s->flushing = false;
  s->wake_waiters();
  if (failed) s->report(unsent(*s));  // callback style: now, not at the next enqueue
  close_if_done(*s);
}

void note_queue(StreamState& s) {
  if (s.queued() > s.o.high_watermark) s.above_high = true;
}

void start_flush(const std::shared_ptr<StreamState>& s) {
  if (s->flushing || s->queued() == 0 || s->write_error) return;
  s->flushing = true;
  s->loop->spawn(flusher(s));
}

Error cancelled(const StreamState& s, const char* op) {
  return Error{std::make_error_code(std::errc::operation_canceled), op, s.fd_number(), 0};
}

// close() was cancelled while the queue drained: drop what is left (the
// error counts it), cancel the send in flight, fail the stream for every
// other writer, and close the fd once the flusher has let go of it.
Error give_up(StreamState& s) {
  Error e = cancelled(s, "stream close (bytes not sent)");
  e.transferred = s.queued();
  if (!s.write_error) s.write_error = cancelled(s, "stream close");
  s.closing = true;
  s.wbuf.clear();  // `sending` stays: the kernel may be reading it
  if (s.in_flight) s.loop->cancel(*s.in_flight);
  if (s.tls_in_flight) s.tls_in_flight->cancel_for(lev::detail::Cancel::requested);
  s.wake_waiters();
  close_if_done(s);
  return e;
}

}  // namespace
}  // namespace detail

Stream::Stream(Loop& loop, Fd fd, StreamOptions options)
    : s_(std::make_shared<detail::StreamState>()) {
  if (options.low_watermark > options.high_watermark)
    throw std::invalid_argument("lev::net::Stream: low_watermark above high_watermark");
  if (options.read_chunk == 0) throw std::invalid_argument("lev::net::Stream: read_chunk is 0");
  s_->loop = &loop;
  struct stat st {};
  s_->socket = ::fstat(fd.get(), &st) != 0 || S_ISSOCK(st.st_mode);
  s_->fd = std::move(fd);
  s_->o = std::move(options);
  s_->owner = this;
}

Stream::Stream(Loop& loop, tls::Connection connection, StreamOptions options)
    : Stream(loop, Fd{}, std::move(options)) {
  if (!connection.valid()) throw std::invalid_argument("lev::net::Stream: no TLS connection");
  s_->tls = std::move(connection);
  s_->socket = true;
}

Stream::Stream(Stream&& other) noexcept : s_(std::move(other.s_)) {
  if (s_) s_->owner = this;
}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    release();
    s_ = std::move(other.s_);
    if (s_) s_->owner = this;
  }
  return *this;
}

Stream::~Stream() { release(); }

void Stream::release() noexcept {
  if (!s_) return;
  s_->owner = nullptr;
  s_->closing = true;  // a running flusher sends the rest, then closes
  s_->stop_reader();   // no callback after this; the reader lets go of the fd
  s_.reset();
}

std::size_t Stream::queued() const noexcept { return s_ ? s_->queued() : 0; }
std::size_t Stream::read_buffer_capacity() const noexcept { return s_ ? s_->rbuf.capacity() : 0; }
int Stream::fd() const noexcept { return s_ ? s_->fd_number() : -1; }

namespace detail {
namespace {
// Bytes received and not yet decoded: the front of `rbuf` when a message
// spans receives, else what is left of the last pool buffer (decoded in
// place, no copy). At most one of the two holds bytes.
std::string_view unread(const StreamState& s) noexcept {
  if (s.rpos < s.rbuf.size()) return {s.rbuf.data() + s.rpos, s.rbuf.size() - s.rpos};
  return s.rcur.view();
}

void consume(StreamState& s, std::size_t n) noexcept {
  if (s.rpos < s.rbuf.size()) {
    s.rpos += n;
    if (s.rpos == s.rbuf.size()) {
      s.rbuf.clear();
      s.rpos = 0;
      if (s.rbuf.capacity() > 64 * 1024) s.rbuf.shrink_to_fit();  // an idle stream keeps little
    }
    return;
  }
  s.rcur.remove_prefix(n);
  if (s.rcur.empty()) s.rcur.reset();  // the buffer goes back to the pool
}

// TLS: decrypted bytes straight into rbuf (0 at the peer's close_notify),
// guarded by `deadline` when there is one.
Task<Result<std::size_t>> fill_tls(StreamState& s, IdleDeadline* deadline) {
  if (s.rpos > 0) {
    s.rbuf.erase(0, s.rpos);
    s.rpos = 0;
  }
  const std::size_t old = s.rbuf.size();
  s.rbuf.resize(old + s.o.read_chunk);
  std::span<char> room(s.rbuf.data() + old, s.o.read_chunk);
  Result<std::size_t> n{std::size_t{0}};
  if (deadline)
    n = co_await (*deadline)(s.tls.recv(room));
  else
    n = co_await s.tls.recv(room);
  s.rbuf.resize(old + (n ? *n : 0));
  co_return n;
}
Task<Result<std::size_t>> fill_plain(StreamState& s, IdleDeadline* deadline);

// Receives more: sockets take a pool buffer (loop.recv(fd)), other fds
// read into rbuf, guarded by `deadline` when there is one. 0 at end of
// stream.
Task<Result<std::size_t>> fill(StreamState& s, IdleDeadline* deadline) {
  if (s.tls.valid()) [[unlikely]]
    return fill_tls(s, deadline);
  return fill_plain(s, deadline);
}

Task<Result<std::size_t>> fill_plain(StreamState& s, IdleDeadline* deadline) {
  if (s.socket) {
    if (!s.rcur.empty()) {  // a message spans buffers: gather in rbuf
      s.rbuf.erase(0, s.rpos);
      s.rpos = 0;
      s.rbuf.append(s.rcur.view());
      s.rcur.reset();
    }
    Result<Buffer> got = Error{};
    if (deadline)
      got = co_await (*deadline)(s.loop->recv(s.fd));
    else
      got = co_await s.loop->recv(s.fd);
    if (!got) co_return got.error();
    const std::size_t n = got->size();
    if (s.rpos == s.rbuf.size()) {
      s.rbuf.clear();
      s.rpos = 0;
      s.rcur = std::move(*got);
    } else {
      // Drop the decoded prefix first: when every receive ends inside a
      // message, rbuf never empties, and it must stay bounded by the rest
      // of one message plus one receive.
      s.rbuf.erase(0, s.rpos);
      s.rpos = 0;
      s.rbuf.append(got->view());
    }
    co_return n;
  }
  if (s.rpos > 0) {  // keep the buffer from growing at the front
    s.rbuf.erase(0, s.rpos);
    s.rpos = 0;
  }
  const std::size_t old = s.rbuf.size();
  s.rbuf.resize(old + s.o.read_chunk);
  std::span<char> room(s.rbuf.data() + old, s.o.read_chunk);
  Result<std::size_t> n = Error{};
  if (deadline)
    n = co_await (*deadline)(s.loop->read(s.fd, room));
  else
    n = co_await s.loop->read(s.fd, room);
  s.rbuf.resize(old + (n ? *n : 0));
  co_return n;
}

Task<Result<std::optional<std::string>>> read_one(std::shared_ptr<StreamState> s,
                                                  IdleDeadline* deadline) {
  using S = Codec::Decoded::Status;
  for (;;) {
    Codec::Decoded d = s->o.codec.decode(unread(*s));
    if (d.status == S::message) {
      std::optional<std::string> msg(std::in_place, d.message);
      consume(*s, d.consumed);
      co_return msg;
    }
    if (d.status == S::error)
      co_return Error{std::make_error_code(std::errc::message_size),
                      s->o.codec.kind() == Codec::Kind::line ? "stream read: line too long"
                                                             : "stream read: frame too large",
                      s->fd_number(), 0};
    auto n = co_await fill(*s, deadline);
    if (!n) co_return Error{n.error().code, "stream read", s->fd_number(), 0};
    if (*n == 0) {  // end of stream
      const std::string_view rest = unread(*s);
      if (rest.empty()) co_return std::optional<std::string>{};
      if (s->o.codec.kind() == Codec::Kind::line) {  // a last line without delimiter
        std::optional<std::string> last(std::in_place, rest);
        consume(*s, rest.size());
        co_return last;
      }
      co_return Error{std::make_error_code(std::errc::connection_aborted),
                      "stream read: stream ended inside a frame", s->fd_number(), rest.size()};
    }
  }
}

}  // namespace
}  // namespace detail

Task<Result<std::optional<std::string>>> Stream::read_message() {
  return detail::read_one(s_, nullptr);
}

Task<Result<std::optional<std::string>>> Stream::read_message(IdleDeadline& deadline) {
  return detail::read_one(s_, &deadline);
}

Task<Result<void>> Stream::write_message(std::string_view message) {
  auto s = s_;
  if (s->write_error) co_return detail::unsent(*s);
  if (auto r = s->o.codec.encode(s->wbuf, message); !r) co_return r.error();
  detail::note_queue(*s);
  detail::start_flush(s);
  if (s->queued() > s->o.high_watermark) {
    const bool below = co_await detail::WaitBelow{*s, s->o.low_watermark};
    if (!below)
      co_return detail::cancelled(*s, "stream write (cancelled; the message stays queued)");
  }
  if (s->write_error) co_return detail::unsent(*s);
  co_return Result<void>{};
}

Result<void> Stream::enqueue(std::string_view message) {
  if (s_->write_error) return detail::unsent(*s_);
  if (auto r = s_->o.codec.encode(s_->wbuf, message); !r) return r.error();
  detail::note_queue(*s_);
  detail::start_flush(s_);
  return {};
}

namespace {
// The callback-style reader: the same read_message, driving callbacks. It
// runs with reader_stop's token: once that is stopped (~Stream, close(), a
// reported write error) it ends without another callback, even with
// messages still buffered.
lev::Task<> callback_reader(std::shared_ptr<detail::StreamState> s) {
  const std::stop_token stop = s->reader_stop.get_token();
  while (!stop.stop_requested()) {
    auto m = co_await detail::read_one(s, nullptr);
    if (stop.stop_requested()) break;
    if (!m) {
      s->report(m.error());
      break;
    }
    if (!*m) {
      if (s->callbacks.on_close) s->callbacks.on_close();
      break;
    }
    if (s->callbacks.on_message && s->owner) s->callbacks.on_message(*s->owner, **m);
  }
  s->reading = false;
  detail::close_if_done(*s);
}
}  // namespace

void Stream::start(StreamCallbacks cb) {
  s_->callbacks = std::move(cb);
  s_->started = true;
  if (s_->reading || s_->ended || s_->reader_stop.stop_requested()) return;
  s_->reading = true;
  s_->reader_stop = std::stop_source{};
  s_->loop->spawn(callback_reader(s_), s_->reader_stop.get_token());
}

Task<Result<void>> Stream::flush() {
  auto s = s_;
  detail::start_flush(s);
  const bool drained = co_await detail::WaitBelow{*s, 0};
  if (!drained) co_return detail::cancelled(*s, "stream flush");
  if (s->write_error) co_return detail::unsent(*s);
  co_return Result<void>{};
}

Task<Result<void>> Stream::shutdown_write() {
  auto s = s_;
  if (auto r = co_await flush(); !r) co_return r;
  if (s->tls.valid()) {  // close_notify, then the socket's own end of stream
    if (auto r = co_await s->tls.shutdown(); !r) co_return r;
    co_return co_await s->loop->shutdown(s->tls.fd(), Shutdown::write);
  }
  co_return co_await s->loop->shutdown(s->fd, Shutdown::write);
}

Task<Result<void>> Stream::close() {
  auto s = s_;
  s->stop_reader();  // a local close is no event for the callbacks
  detail::start_flush(s);
  // Only this close's own wait being cancelled gives up. A send that ended
  // with ECANCELED for another reason (the fd cancelled elsewhere, a
  // teardown) is a write error like any other: reported, and the fd closed.
  const bool drained = co_await detail::WaitBelow{*s, 0};
  if (!drained) co_return detail::give_up(*s);
  Result<void> flushed{};
  if (s->write_error) flushed = detail::unsent(*s);
  if (s->tls.valid()) {
    // close_notify after the queue (a failed stream has none to send); the
    // socket closes with the connection.
    if (flushed && !s->tls.unusable()) flushed = co_await s->tls.shutdown();
    s->tls = {};
  }
  if (s->fd) (void)co_await s->loop->close(s->fd);
  co_return flushed;
}

}  // namespace lev::net
