// An HTTP/1.1 keep-alive server that answers every request with
// "Hello, World!".
//   http_hello --port N [--max-seconds S] [--model proactor|reactor]
//              [--backend uring|epoll|auto] [--recv pool|own]
//              [--header-timeout T] [--keepalive-timeout T] [--body-timeout T]
//              [--body-min-rate BYTES] [--send-timeout T] [--max-clients N]
//              [--max-line BYTES] [--max-headers N] [--max-head BYTES]
//              [--tls-cert FILE --tls-key FILE]
//   (--help lists them with their defaults, which are nginx's where nginx has one)
// First line on stdout: "listening on 127.0.0.1:PORT". SIGINT, SIGTERM and
// SIGHUP stop it. With --tls-cert and --tls-key it serves HTTPS
// (examples/tls_common.hpp).
//
// Pipelined requests are answered in order; a request split across reads
// waits for the rest; a request body (Content-Length) is skipped; a
// malformed request gets 400 and the connection is closed (a control byte
// or a bare CR in the target or a header value, an HTTP/1.1 request
// without exactly one Host header); "Connection: close" (and HTTP/1.0
// without keep-alive) is honoured, an HTTP/1.0 keep-alive request is
// answered with "Connection: keep-alive". A request line or header line
// over --max-line, more than --max-headers header lines or a head over
// --max-head get 431.
//
// Time limits (docs/servers.md), on one IdleDeadline per connection (no
// timer or linked timeout per receive): a head must arrive whole within
// --header-timeout of its first byte (one deadline, however slowly it
// trickles in: 408 then), the next request within --keepalive-timeout; a
// body may pause at most --body-timeout between reads and must average
// --body-min-rate bytes a second after a first --body-timeout (as Apache's
// mod_reqtimeout body=60,MinRate=500), so that trickling cannot hold a
// connection for ever.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "common.hpp"
#include "lev/lev.hpp"
#include "tls_common.hpp"

namespace {

constexpr std::string_view kHello =
    "HTTP/1.1 200 OK\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
    "Hello, World!";
constexpr std::string_view kHelloKeepAlive =
    "HTTP/1.1 200 OK\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
    "Connection: keep-alive\r\n\r\nHello, World!";
constexpr std::string_view kHelloClose =
    "HTTP/1.1 200 OK\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
    "Connection: close\r\n\r\nHello, World!";
constexpr std::string_view kBadRequest =
    "HTTP/1.1 400 Bad Request\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
    "Connection: close\r\n\r\nBad Request\n";
constexpr std::string_view kTooLarge =
    "HTTP/1.1 431 Request Header Fields Too Large\r\nServer: lev\r\nContent-Type: text/plain\r\n"
    "Content-Length: 32\r\nConnection: close\r\n\r\nRequest Header Fields Too Large\n";
constexpr std::string_view kTimeout =
    "HTTP/1.1 408 Request Timeout\r\nServer: lev\r\nContent-Type: text/plain\r\n"
    "Content-Length: 16\r\nConnection: close\r\n\r\nRequest Timeout\n";
constexpr std::string_view kBusy =
    "HTTP/1.1 503 Service Unavailable\r\nServer: lev\r\nContent-Type: text/plain\r\n"
    "Content-Length: 20\r\nConnection: close\r\n\r\nService Unavailable\n";

using Millis = example::Millis;

struct Limits {
  std::size_t max_line = 8 * 1024;  // nginx: large_client_header_buffers 4 8k
  std::size_t max_headers = 100;    // Apache: LimitRequestFields 100
  std::size_t max_head = 16 * 1024;
  Millis header_timeout{std::chrono::seconds(60)};     // nginx: client_header_timeout
  Millis keepalive_timeout{std::chrono::seconds(75)};  // nginx: keepalive_timeout
  Millis body_timeout{std::chrono::seconds(60)};       // nginx: client_body_timeout
  std::size_t body_min_rate = 500;  // bytes/s after body_timeout (Apache: MinRate=500)
  Millis send_timeout{std::chrono::seconds(60)};  // nginx: send_timeout
};

// Whether `a` is `lower` but for case. `lower` holds lowercase letters and
// '-' only, and `a` is a header name (token characters) or value (no
// control byte): then OR 0x20 folds exactly (the one other byte that
// becomes '-' is CR, a control byte). Eight, then four bytes at a time.
template <std::size_t N>
bool iequals(std::string_view a, const char (&lower)[N]) {
  constexpr std::size_t n = N - 1;
  if (a.size() != n) return false;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t x, y;
    std::memcpy(&x, a.data() + i, 8);
    std::memcpy(&y, lower + i, 8);
    if ((x | 0x2020202020202020u) != y) return false;
  }
  if constexpr (n % 8 >= 4) {
    std::uint32_t x, y;
    std::memcpy(&x, a.data() + i, 4);
    std::memcpy(&y, lower + i, 4);
    if ((x | 0x20202020u) != y) return false;
    i += 4;
  }
  for (; i < n; ++i)
    if ((a[i] | 0x20) != lower[i]) return false;
  return true;
}

// What each byte may be, one table lookup per byte: a token character
// (RFC 9110: method and header names), a control byte (never in a target
// or a header value, but for HTAB in a value), a byte of a target (no
// control, no space), a byte of a header value (no control but HTAB).
enum : unsigned char { kToken = 1, kControl = 2, kTarget = 4, kValue = 8 };
constexpr auto kByteClass = [] {
  std::array<unsigned char, 256> t{};
  for (int c = 0; c < 256; ++c) {
    const bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (alnum || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) !=
                     std::string_view::npos)
      t[static_cast<std::size_t>(c)] |= kToken;
    const bool control = c < 0x20 || c == 0x7f;
    if (control) t[static_cast<std::size_t>(c)] |= kControl;
    if (!control && c != ' ') t[static_cast<std::size_t>(c)] |= kTarget;
    if (!control || c == '\t') t[static_cast<std::size_t>(c)] |= kValue;
  }
  return t;
}();

unsigned char byte_class(char c) { return kByteClass[static_cast<unsigned char>(c)]; }

struct Request {
  std::size_t head_size = 0;  // through the blank line
  std::size_t body_size = 0;
  bool keep_alive = true;
  bool http10 = false;  // an HTTP/1.0 request (keep-alive only when it asks)
};

enum class Parse { complete, incomplete, malformed, too_large };

/// Finds the end of a request head as its bytes arrive, checking the size
/// limits on the way. Resumes where the last call stopped, so a head that
/// trickles in a byte at a time is scanned once.
class HeadScan {
 public:
  /// Over `in` (the head's bytes so far, from its start): complete with
  /// size() = the head's length through the blank line, incomplete,
  /// malformed (a line not ended by CRLF) or too_large.
  Parse scan(std::string_view in, const Limits& limits) {
    while (scanned_ < in.size()) {
      const std::size_t nl = in.find('\n', scanned_);
      if (nl == std::string_view::npos) break;
      scanned_ = nl + 1;
      if (nl == line_start_ || in[nl - 1] != '\r') return Parse::malformed;
      const std::size_t len = nl - 1 - line_start_;
      line_start_ = nl + 1;
      if (len == 0) {  // the blank line: the head is complete
        size_ = nl + 1;
        return size_ > limits.max_head ? Parse::too_large : Parse::complete;
      }
      if (len > limits.max_line || ++lines_ > limits.max_headers + 1) return Parse::too_large;
    }
    scanned_ = in.size();
    if (in.size() - line_start_ > limits.max_line + 1 || in.size() > limits.max_head)
      return Parse::too_large;
    return Parse::incomplete;
  }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// Bytes of the next head seen so far (0: none).
  [[nodiscard]] std::size_t started() const noexcept { return scanned_; }
  void reset() noexcept { *this = HeadScan{}; }

 private:
  std::size_t scanned_ = 0;     // bytes looked at
  std::size_t line_start_ = 0;  // where the current line starts
  std::size_t lines_ = 0;       // lines so far, the request line included
  std::size_t size_ = 0;
};

// Parses the head at the start of `in` in one pass, a table lookup per
// byte, up to the first blank line (req.head_size: through it). `in` ends
// with CRLF CRLF (a head from HeadScan, or whole requests), so each scan
// below stops at a line's CR at the latest (CR is neither a token
// character, nor a space, nor allowed in a value) and a bare LF is
// malformed wherever it is.
Parse parse(std::string_view in, Request& req) {
  req = Request{};
  const char* p = in.data();
  const char* const end = p + in.size() - 2;  // the blank line's CRLF
  // request line: METHOD SP TARGET SP HTTP/1.x CRLF
  const char* const method = p;
  if (in.size() >= 4 && std::memcmp(p, "GET ", 4) == 0)  // a head from HeadScan may be 2 bytes
    p += 3;
  else
    while (byte_class(*p) & kToken) ++p;
  if (p == method || *p != ' ') return Parse::malformed;
  const char* const target = ++p;
  while (byte_class(*p) & kTarget) ++p;
  if (p == target || *p != ' ') return Parse::malformed;
  ++p;
  if (end - p < 10 || std::memcmp(p, "HTTP/1.", 7) != 0 || p[8] != '\r' || p[9] != '\n')
    return Parse::malformed;
  if (p[7] == '1')
    req.keep_alive = true;
  else if (p[7] == '0')
    req.keep_alive = false, req.http10 = true;
  else
    return Parse::malformed;
  p += 10;
  bool saw_length = false;
  int hosts = 0;
  while (p[0] != '\r' || p[1] != '\n') {  // header lines up to the blank one: NAME ":" OWS VALUE OWS CRLF
    const char* const name_at = p;
    while (byte_class(*p) & kToken) ++p;
    if (p == name_at || *p != ':') return Parse::malformed;
    const std::string_view name(name_at, static_cast<std::size_t>(p - name_at));
    ++p;
    while (*p == ' ' || *p == '\t') ++p;
    const char* const value_at = p;
    while (byte_class(*p) & kValue) ++p;
    if (p[0] != '\r' || p[1] != '\n') return Parse::malformed;  // NUL, a bare CR...
    const char* value_end = p;
    while (value_end > value_at && (value_end[-1] == ' ' || value_end[-1] == '\t')) --value_end;
    const std::string_view value(value_at, static_cast<std::size_t>(value_end - value_at));
    p += 2;
    switch (name.size()) {  // the names looked at, by length first
      case 4:
        if (iequals(name, "host")) ++hosts;
        break;
      case 14:
        if (iequals(name, "content-length")) {
          std::size_t n = 0;
          auto r = std::from_chars(value.data(), value.data() + value.size(), n);
          if (r.ec != std::errc{} || r.ptr != value.data() + value.size() || saw_length)
            return Parse::malformed;
          if (n > (1u << 30)) return Parse::malformed;
          req.body_size = n;
          saw_length = true;
        }
        break;
      case 17:
        // chunked bodies are not taken here: refuse rather than misframe
        if (iequals(name, "transfer-encoding")) return Parse::malformed;
        break;
      case 10:
        if (iequals(name, "connection")) {
          if (iequals(value, "close"))
            req.keep_alive = false;
          else if (iequals(value, "keep-alive"))
            req.keep_alive = true;
        }
        break;
      default:
        break;
    }
  }
  req.head_size = static_cast<std::size_t>(p + 2 - in.data());
  // HTTP/1.1: exactly one Host (RFC 9112 3.2); never two.
  if (hosts > 1 || (!req.http10 && hosts == 0)) return Parse::malformed;
  return Parse::complete;
}

/// One connection's progress: the head being received, the body being
/// skipped, and when the head must be complete.
struct Conn {
  HeadScan head;
  std::size_t skip = 0;          // body bytes still to discard
  std::size_t body = 0;          // the body being discarded: its declared size
  bool served = false;           // a request was answered: waiting is keep-alive
  lev::TimePoint head_deadline;  // set when a head's first byte arrives
  lev::TimePoint body_start;     // when the body being discarded began
};

// The most bytes of whole requests answer() parses without HeadScan: a
// line is at least 3 bytes ("x" CRLF), so within this no line is longer
// than max_line, there are at most max_headers of them, the head is
// within max_head.
std::size_t whole_limit(const Limits& limits) {
  return std::min({limits.max_line, limits.max_head, 3 * (limits.max_headers + 1)});
}

// Answers every complete request at the front of `data` (skipping request
// bodies) and appends the answers to `out`; `pos` ends where an incomplete
// request starts. False when the connection is to close (a malformed or
// oversized request, or no keep-alive).
bool answer(std::string_view data, std::size_t& pos, Conn& c, const Limits& limits,
            const lev::Loop& loop, std::string& out) {
  for (;;) {
    if (c.skip) {
      const std::size_t take = std::min(c.skip, data.size() - pos);
      pos += take;
      c.skip -= take;
      if (c.skip) return true;
    }
    if (pos == data.size()) return true;
    const std::string_view rest = data.substr(pos);
    const bool fresh = c.head.started() == 0;
    Request req;
    Parse r;
    if (fresh && rest.size() <= whole_limit(limits) && rest.ends_with("\r\n\r\n")) {
      // Whole requests, too short to break a limit: no line can be too
      // long nor too many, so HeadScan could only say what parse says
      // (a bare LF is malformed to both); parse finds the head's end.
      r = parse(rest, req);
    } else {
      r = c.head.scan(rest, limits);
      if (r == Parse::complete) r = parse(rest.substr(0, c.head.size()), req);
    }
    if (r == Parse::incomplete) {
      // One deadline for the whole head, from its first byte (a new
      // connection's first head: from the accept).
      if (fresh && c.served) c.head_deadline = loop.now() + limits.header_timeout;
      return true;
    }
    if (r != Parse::complete) {
      out += r == Parse::too_large ? kTooLarge : kBadRequest;
      return false;
    }
    c.head.reset();
    c.served = true;
    pos += req.head_size;
    c.skip = c.body = req.body_size;
    if (c.skip) c.body_start = loop.now();  // the clock only when a body follows
    out += !req.keep_alive ? kHelloClose : req.http10 ? kHelloKeepAlive : kHello;
    if (!req.keep_alive) return false;
  }
}

/// A connection's time limits on one IdleDeadline, set from its state
/// after each receive: the head's deadline (a fresh connection's first head
/// included: from the accept), keep-alive idle between requests, or a body's
/// pause limit with its total (--body-timeout + the bytes so far at
/// --body-min-rate). It calls the deadline only when a limit changes, and a
/// limit moved later is a store (lev/deadline.hpp): a connection whose
/// requests each arrive whole in one receive calls it never.
class Timing {
 public:
  Timing(lev::Loop& loop, const Limits& limits, const Conn& c)
      : limits_(limits), deadline_(loop, lev::Duration::max()) {
    update(c);
  }
  lev::IdleDeadline& deadline() noexcept { return deadline_; }
  /// The limits for what the connection waits for now.
  void update(const Conn& c) {
    lev::Duration idle = lev::Duration::max();
    lev::TimePoint until = lev::TimePoint::max();
    if (c.skip) {
      idle = limits_.body_timeout;
      if (const std::size_t rate = limits_.body_min_rate) {
        const std::size_t got = c.body - c.skip;
        until = c.body_start + limits_.body_timeout + std::chrono::milliseconds(got * 1000 / rate);
      }
    } else if (waiting_for_head(c)) {
      until = c.head_deadline;
    } else {
      idle = limits_.keepalive_timeout;
    }
    if (idle != idle_) deadline_.set_idle(idle_ = idle);
    if (until != until_) deadline_.limit_until(until_ = until);
  }
  /// A head is due (408 when its deadline passes).
  static bool waiting_for_head(const Conn& c) { return !c.skip && (c.head.started() || !c.served); }

 private:
  const Limits& limits_;
  lev::IdleDeadline deadline_;
  lev::Duration idle_ = lev::Duration::max();
  lev::TimePoint until_ = lev::TimePoint::max();
};

// The end of a connection: a head cut off by its deadline gets 408.
lev::Task<> finish(lev::Loop& loop, lev::Fd& fd, bool head_timed_out, const Limits& limits) {
  if (head_timed_out)
    (void)co_await example::send_all_within(loop, fd, kTimeout, limits.send_timeout);
  (void)co_await loop.shutdown(fd, lev::Shutdown::write);
  (void)co_await loop.close(fd);
}

// --recv own: each connection receives into a buffer of its own.
lev::Task<> serve(lev::Loop& loop, lev::Fd fd, const Limits& limits) {
  std::string in(8 * 1024, '\0'), out;
  std::size_t used = 0;
  Conn c;
  c.head_deadline = loop.now() + limits.header_timeout;
  Timing timing{loop, limits, c};
  bool open = true, timed_out = false;
  while (open) {
    if (in.size() - used < 2048) {
      if (in.size() >= 4 * limits.max_head) break;
      in.resize(in.size() * 2);
    }
    auto n = co_await timing.deadline()(loop.recv(fd, std::span(in).subspan(used)));
    if (!n || *n == 0) {  // error, a limit passed, or the peer closed
      timed_out = !n && n.error().is_timeout() && Timing::waiting_for_head(c);
      break;
    }
    used += *n;
    std::size_t pos = 0;
    open = answer(std::string_view(in.data(), used), pos, c, limits, loop, out);
    timing.update(c);
    if (pos > 0) {
      std::memmove(in.data(), in.data() + pos, used - pos);
      used -= pos;
    }
    if (!out.empty()) {
      // A client that reads takes the reply now: one send, no coroutine
      // and no timer (send_rest_within only when it fell short).
      auto sent = co_await loop.send(fd, out, MSG_DONTWAIT);
      if (!sent || *sent != out.size()) {
        if (!co_await example::send_rest_within(loop, fd, out, std::move(sent),
                                                limits.send_timeout))
          break;
      }
      out.clear();
    }
  }
  co_await finish(loop, fd, timed_out, limits);
}

// --recv pool: loop.recv(fd) hands over a buffer of the loop's pool (on
// io_uring: one multishot recv per connection). Requests are answered in
// place in that buffer; only a request split across receives is copied.
lev::Task<> serve_pooled(lev::Loop& loop, lev::Fd fd, const Limits& limits) {
  example::Carry carry;  // the start of a request the next receive ends
  std::string out;
  Conn c;
  c.head_deadline = loop.now() + limits.header_timeout;
  Timing timing{loop, limits, c};
  bool open = true, timed_out = false;
  while (open && carry.size() < 4 * limits.max_head) {
    auto got = co_await timing.deadline()(loop.recv(fd));
    if (!got || got->empty()) {  // error, a limit passed, or the peer closed
      timed_out = !got && got.error().is_timeout() && Timing::waiting_for_head(c);
      break;
    }
    const std::string_view data = carry.bytes(got->view());
    std::size_t pos = 0;
    open = answer(data, pos, c, limits, loop, out);
    timing.update(c);
    carry.keep(data, pos);
    got->reset();
    if (!out.empty()) {
      // A client that reads takes the reply now: one send, no coroutine
      // and no timer (send_rest_within only when it fell short).
      auto sent = co_await loop.send(fd, out, MSG_DONTWAIT);
      if (!sent || *sent != out.size()) {
        if (!co_await example::send_rest_within(loop, fd, out, std::move(sent),
                                                limits.send_timeout))
          break;
      }
      out.clear();
    }
  }
  co_await finish(loop, fd, timed_out, limits);
}

}  // namespace

int main(int argc, char** argv) try {
  example::ServerArgs args;
  example::TlsArgs tls;  // --tls-cert FILE --tls-key FILE: HTTPS
  std::string recv = "pool";
  Limits limits;
  long max_headers = static_cast<long>(limits.max_headers);
  example::Cli cli{"http_hello", "An HTTP/1.1 keep-alive server answering \"Hello, World!\"."};
  args.add_to(cli);
  tls.add_to(cli);
  cli.choice("--recv", recv, {"pool", "own"},
             "receive with loop.recv(fd) from the loop's pool, or into a buffer per connection");
  const auto day = std::chrono::hours(24);
  cli.duration("--header-timeout", limits.header_timeout, false, day,
               "a request head must arrive whole within this of its first byte (408 after)");
  cli.duration("--keepalive-timeout", limits.keepalive_timeout, false, day,
               "close a keep-alive connection idle this long between requests");
  cli.duration("--body-timeout", limits.body_timeout, false, day,
               "close a connection whose request body stalls this long between reads");
  cli.bytes("--body-min-rate", limits.body_min_rate, 0, std::size_t(1) << 40,
            "after --body-timeout, a body must average this many bytes a second (0: no minimum)");
  cli.bytes("--max-line", limits.max_line, 64, 1 << 20,
            "longest request line or header line (431 past it)");
  cli.integer("--max-headers", max_headers, 1, 10000, "most header lines (431 past it)");
  cli.bytes("--max-head", limits.max_head, 64, 1 << 24, "longest request head (431 past it)");
  cli.parse(argc, argv);
  args.loop.check(cli);
  limits.max_headers = static_cast<std::size_t>(max_headers);
  limits.send_timeout = args.send_timeout;
  const bool pooled = recv == "pool";
  auto plain = [&](lev::Loop& loop, lev::Fd fd) {
    return pooled ? serve_pooled(loop, std::move(fd), limits) : serve(loop, std::move(fd), limits);
  };
  return example::run_server("http_hello", args, tls.wrap(plain), kBusy);
} catch (const std::exception& e) {
  std::fprintf(stderr, "http_hello: %s\n", e.what());
  return 1;
}
