// A Redis-protocol (RESP2) key-value server on one loop.
//   resp_server --port N [--max-seconds S] [--model proactor|reactor]
//               [--backend uring|epoll|auto] [--recv pool|own] [--timeout IDLE]
//               [--send-timeout T] [--max-clients N] [--query-buffer-limit BYTES]
//               [--proto-max-bulk-len BYTES] [--output-high BYTES] [--output-low BYTES]
//   (--help lists them with their defaults, which are Redis's where Redis has one)
// First line on stdout: "listening on 127.0.0.1:PORT". SIGINT/SIGTERM stop it.
//
// RESP2 arrays and inline commands, pipelining; PING, ECHO, SET (EX/PX,
// NX/XX), GET, DEL, EXISTS, INCR, DECR, MSET, MGET, EXPIRE, TTL, CONFIG GET
// (empty answer), COMMAND (empty answer), INFO (a few stats), QUIT. Unknown commands get an
// error; malformed input gets an error and the connection is closed.
//
// Hostile clients: a command split across receives is parsed on from where
// the last receive stopped (resp_parser.hpp); a connection's unfinished
// command may hold at most --query-buffer-limit bytes; replies queued for a
// client above --output-high stop its parsing until they are sent down to
// --output-low; a send that makes no progress for --send-timeout, or (with
// --timeout) a client idle that long, closes the connection.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common.hpp"
#include "lev/lev.hpp"
#include "resp_parser.hpp"

namespace {

// Expiry times are milliseconds on the monotonic clock, as long long, so
// that every expiry Redis accepts is representable (a time_point in
// nanoseconds overflows from about 292 years on).
constexpr long long kNever = std::numeric_limits<long long>::max();

long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// now + `ms`, or nullopt when that is not a time (Redis: "invalid expire time").
std::optional<long long> expiry_in(long long ms) {
  const long long now = now_ms();
  if (ms <= 0 || ms >= kNever - now) return std::nullopt;
  return now + ms;
}

/// An expiry `amount` seconds (or milliseconds) from now, checked as Redis
/// checks it: positive, and seconds that fit in milliseconds.
std::optional<long long> expiry_from(std::optional<long long> amount, bool seconds) {
  if (!amount || *amount <= 0) return std::nullopt;
  if (seconds && *amount > kNever / 1000) return std::nullopt;
  return expiry_in(seconds ? *amount * 1000 : *amount);
}

struct Entry {
  std::string value;
  long long expires = kNever;  // ms, on now_ms()'s clock
};

// Transparent hashing: look keys up by string_view without building strings.
struct Hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

/// What INFO reports (Redis's names where Redis has the figure).
struct Stats {
  std::size_t connections = 0;  // total_connections_received
  std::size_t commands = 0;     // total_commands_processed
  std::size_t reads = 0;        // total_reads_processed
  std::size_t input_bytes = 0;  // total_net_input_bytes
  std::size_t parsed = 0;       // bytes the parsers looked at (linear: about input_bytes)
};

class Store {
 public:
  Stats stats;

  Entry* find(std::string_view key) {
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    if (it->second.expires != kNever && it->second.expires <= now_ms()) {
      map_.erase(it);  // expired: gone on first touch
      return nullptr;
    }
    return &it->second;
  }
  Entry& put(std::string_view key, std::string_view value) {
    auto it = map_.find(key);
    if (it == map_.end()) it = map_.emplace(std::string(key), Entry{}).first;
    it->second.value.assign(value);
    it->second.expires = kNever;
    return it->second;
  }
  bool erase(std::string_view key) {
    if (!find(key)) return false;
    map_.erase(map_.find(key));
    return true;
  }

 private:
  std::unordered_map<std::string, Entry, Hash, std::equal_to<>> map_;
};

// ---- replies ----------------------------------------------------------

void simple(std::string& out, std::string_view s) {
  out += '+';
  out += s;
  out += "\r\n";
}
void error(std::string& out, std::string_view s) {
  out += '-';
  out += s;
  out += "\r\n";
}
void integer(std::string& out, long long v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out += ':';
  out.append(buf, r.ptr);
  out += "\r\n";
}
void bulk(std::string& out, std::string_view s) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, s.size());
  out += '$';
  out.append(buf, r.ptr);
  out += "\r\n";
  out += s;
  out += "\r\n";
}
void nil(std::string& out) { out += "$-1\r\n"; }
void array_header(std::string& out, std::size_t n) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, n);
  out += '*';
  out.append(buf, r.ptr);
  out += "\r\n";
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    if (c != b[i]) return false;  // b is upper case
  }
  return true;
}

std::optional<long long> to_int(std::string_view s) {
  long long v = 0;
  if (s.empty()) return std::nullopt;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc{} || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// ---- commands ---------------------------------------------------------

enum class After { keep_going, close };

void wrong_arity(std::string& out, std::string_view cmd) {
  std::string lower(cmd);
  for (char& c : lower)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  error(out, "ERR wrong number of arguments for '" + lower + "' command");
}

void incr_by(Store& store, std::string& out, std::string_view key, long long by) {
  Entry* e = store.find(key);
  long long v = 0;
  if (e) {
    auto cur = to_int(e->value);
    if (!cur) return error(out, "ERR value is not an integer or out of range");
    v = *cur;
  }
  if ((by > 0 && v > std::numeric_limits<long long>::max() - by) ||
      (by < 0 && v < std::numeric_limits<long long>::min() - by))
    return error(out, "ERR increment or decrement would overflow");
  v += by;
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  if (e)
    e->value.assign(buf, r.ptr);  // INCR keeps a key's expiry, as Redis does
  else
    store.put(key, std::string_view(buf, static_cast<std::size_t>(r.ptr - buf)));
  integer(out, v);
}

After execute(Store& store, const std::vector<std::string_view>& a, std::string& out) {
  const std::string_view cmd = a[0];
  const std::size_t n = a.size();
  if (iequals(cmd, "GET")) {
    if (n != 2) return wrong_arity(out, cmd), After::keep_going;
    if (Entry* e = store.find(a[1]))
      bulk(out, e->value);
    else
      nil(out);
  } else if (iequals(cmd, "SET")) {
    if (n < 3) return wrong_arity(out, cmd), After::keep_going;
    std::optional<long long> expires;
    bool nx = false, xx = false;
    for (std::size_t i = 3; i < n; ++i) {
      if ((iequals(a[i], "EX") || iequals(a[i], "PX")) && i + 1 < n) {
        if (!to_int(a[i + 1]))
          return error(out, "ERR value is not an integer or out of range"), After::keep_going;
        // Out of range (EX 9223372036854775807 overflowed once): an error, as in Redis.
        expires = expiry_from(to_int(a[i + 1]), iequals(a[i], "EX"));
        if (!expires)
          return error(out, "ERR invalid expire time in 'set' command"), After::keep_going;
        ++i;
      } else if (iequals(a[i], "NX")) {
        nx = true;
      } else if (iequals(a[i], "XX")) {
        xx = true;
      } else {
        return error(out, "ERR syntax error"), After::keep_going;
      }
    }
    if (nx && xx) return error(out, "ERR syntax error"), After::keep_going;
    const bool exists = store.find(a[1]) != nullptr;
    if ((nx && exists) || (xx && !exists)) return nil(out), After::keep_going;
    Entry& e = store.put(a[1], a[2]);
    if (expires) e.expires = *expires;
    simple(out, "OK");
  } else if (iequals(cmd, "PING")) {
    if (n > 2) return wrong_arity(out, cmd), After::keep_going;
    if (n == 2)
      bulk(out, a[1]);
    else
      simple(out, "PONG");
  } else if (iequals(cmd, "INCR") || iequals(cmd, "DECR")) {
    if (n != 2) return wrong_arity(out, cmd), After::keep_going;
    incr_by(store, out, a[1], iequals(cmd, "INCR") ? 1 : -1);
  } else if (iequals(cmd, "MSET")) {
    if (n < 3 || n % 2 == 0) return wrong_arity(out, cmd), After::keep_going;
    for (std::size_t i = 1; i < n; i += 2) store.put(a[i], a[i + 1]);
    simple(out, "OK");
  } else if (iequals(cmd, "MGET")) {
    if (n < 2) return wrong_arity(out, cmd), After::keep_going;
    array_header(out, n - 1);
    for (std::size_t i = 1; i < n; ++i) {
      if (Entry* e = store.find(a[i]))
        bulk(out, e->value);
      else
        nil(out);
    }
  } else if (iequals(cmd, "DEL") || iequals(cmd, "EXISTS")) {
    if (n < 2) return wrong_arity(out, cmd), After::keep_going;
    const bool del = iequals(cmd, "DEL");
    long long count = 0;
    for (std::size_t i = 1; i < n; ++i)
      count += del ? store.erase(a[i]) : store.find(a[i]) != nullptr;
    integer(out, count);
  } else if (iequals(cmd, "EXPIRE")) {
    if (n != 3) return wrong_arity(out, cmd), After::keep_going;
    auto secs = to_int(a[2]);
    if (!secs) return error(out, "ERR value is not an integer or out of range"), After::keep_going;
    std::optional<long long> expires;
    if (*secs > 0) {
      expires = expiry_from(secs, true);
      if (!expires)
        return error(out, "ERR invalid expire time in 'expire' command"), After::keep_going;
    }
    Entry* e = store.find(a[1]);
    if (!e) return integer(out, 0), After::keep_going;
    if (!expires)
      store.erase(a[1]);  // a time not in the future deletes, as in Redis
    else
      e->expires = *expires;
    integer(out, 1);
  } else if (iequals(cmd, "TTL")) {
    if (n != 2) return wrong_arity(out, cmd), After::keep_going;
    Entry* e = store.find(a[1]);
    if (!e) return integer(out, -2), After::keep_going;
    if (e->expires == kNever) return integer(out, -1), After::keep_going;
    integer(out, (e->expires - now_ms() + 999) / 1000);
  } else if (iequals(cmd, "ECHO")) {
    if (n != 2) return wrong_arity(out, cmd), After::keep_going;
    bulk(out, a[1]);
  } else if (iequals(cmd, "CONFIG")) {
    if (n < 2) return wrong_arity(out, cmd), After::keep_going;
    if (!iequals(a[1], "GET")) return error(out, "ERR CONFIG supports GET only"), After::keep_going;
    out += "*0\r\n";  // no configuration to report
  } else if (iequals(cmd, "INFO")) {
    const Stats& s = store.stats;
    bulk(out, "# Stats\r\ntotal_connections_received:" + std::to_string(s.connections) +
                  "\r\ntotal_commands_processed:" + std::to_string(s.commands) +
                  "\r\ntotal_reads_processed:" + std::to_string(s.reads) +
                  "\r\ntotal_net_input_bytes:" + std::to_string(s.input_bytes) +
                  "\r\nparser_bytes_examined:" + std::to_string(s.parsed) + "\r\n");
  } else if (iequals(cmd, "COMMAND")) {
    out += "*0\r\n";
  } else if (iequals(cmd, "QUIT")) {
    simple(out, "OK");
    return After::close;
  } else {
    std::string name(cmd.substr(0, 128));
    error(out, "ERR unknown command '" + name + "'");
  }
  return After::keep_going;
}

// ---- connections ------------------------------------------------------

struct Limits {
  std::size_t query_buffer = std::size_t(1) << 30;  // Redis: client-query-buffer-limit 1gb
  std::size_t max_bulk = 512 << 20;                 // Redis: proto-max-bulk-len 512mb
  std::size_t output_high = 1 << 20;                // lev::net::Stream's watermarks
  std::size_t output_low = 256 << 10;
  example::Millis idle{0};  // Redis: timeout 0 (never)
  example::Millis send{std::chrono::seconds(60)};

  [[nodiscard]] lev::IoOptions recv_options() const {
    lev::IoOptions o;
    if (idle.count() > 0) o.timeout = idle;
    return o;
  }
};

enum class Step {
  need_input,  // every complete command ran; the rest (if any) is a command's start
  flush,       // replies reached the high watermark: send some before parsing on
  close,       // QUIT, or malformed input (its error reply is in `out`)
};

// Runs the complete commands of data[pos...], appending the replies to
// `out`, until the data ends, `out` reaches the high watermark, or the
// connection is to close. `pos` ends at the first byte not yet run.
Step run_commands(Store& store, const Limits& limits, std::string_view data, std::size_t& pos,
                  resp::Parser& parser, std::string& out) {
  while (pos < data.size()) {
    if (out.size() >= limits.output_high) return Step::flush;
    const resp::Parse r = parser.next(data, pos);
    store.stats.parsed += parser.take_examined();
    if (r == resp::Parse::incomplete) return Step::need_input;
    if (r == resp::Parse::malformed) {
      error(out, std::string("ERR Protocol error: ") + parser.why());
      return Step::close;
    }
    if (parser.args().empty()) continue;  // an empty inline line, or *0
    ++store.stats.commands;
    if (execute(store, parser.args(), out) == After::close) return Step::close;
  }
  return Step::need_input;
}

// Sends all but the last `keep` bytes of `out` (within the send timeout)
// and drops what was sent. False when the connection is to close.
lev::Task<bool> send_down_to(lev::Loop& loop, lev::FdRef fd, std::string& out, std::size_t keep,
                             const Limits& limits) {
  if (out.size() <= keep) co_return true;
  const std::size_t n = out.size() - keep;
  if (!co_await example::send_all_within(loop, fd, std::string_view(out).substr(0, n), limits.send))
    co_return false;
  out.erase(0, n);
  if (out.empty() && out.capacity() > 4 * limits.output_high) std::string().swap(out);
  co_return true;
}

// An unfinished command over the limit: an error, and the connection closes.
bool over_query_limit(std::size_t buffered, const Limits& limits, std::string& out) {
  if (buffered <= limits.query_buffer) return false;
  error(out, "ERR Protocol error: query buffer limit reached");
  return true;
}

// --recv own: each connection receives into a buffer of its own.
lev::Task<> serve(lev::Loop& loop, lev::Fd fd, Store& store, const Limits& limits) {
  constexpr std::size_t kInitial = 16 * 1024;
  resp::Parser parser{limits.max_bulk};
  ++store.stats.connections;
  std::string in(kInitial, '\0'), out;
  std::size_t used = 0;  // bytes of `in` holding data
  bool open = true;
  while (open) {
    if (in.size() - used < 4096) in.resize(std::min(in.size() * 2, limits.query_buffer + 8192));
    auto n = co_await loop.recv(fd, std::span(in).subspan(used), limits.recv_options());
    if (!n || *n == 0) break;  // error, idle too long, or the peer closed
    used += *n;
    ++store.stats.reads;
    store.stats.input_bytes += *n;
    std::size_t pos = 0;
    Step step;
    while ((step = run_commands(store, limits, std::string_view(in.data(), used), pos, parser,
                                out)) == Step::flush) {
      // Backpressure: no more parsing until the replies are down to the low mark.
      if (!co_await send_down_to(loop, fd, out, limits.output_low, limits)) break;
    }
    if (step == Step::flush) break;  // the send failed
    open = step == Step::need_input;
    // keep what is left of a partial command at the front
    if (pos > 0) {
      std::memmove(in.data(), in.data() + pos, used - pos);
      used -= pos;
    }
    if (open && over_query_limit(used, limits, out)) open = false;
    if (used < kInitial && in.size() > 4 * kInitial) {  // a big command is gone: shrink back
      in.resize(kInitial);
      in.shrink_to_fit();
    }
    if (!co_await send_down_to(loop, fd, out, 0, limits)) break;
  }
  (void)co_await loop.close(fd);
}

// --recv pool: loop.recv(fd) hands over a buffer of the loop's pool (on
// io_uring: one multishot recv per connection). Commands are run in place
// in that buffer; only a command split across receives is copied.
lev::Task<> serve_pooled(lev::Loop& loop, lev::Fd fd, Store& store, const Limits& limits) {
  example::Carry carry;  // the start of a command the next receive ends
  resp::Parser parser{limits.max_bulk};
  ++store.stats.connections;
  std::string out;
  bool open = true;
  while (open) {
    auto got = co_await loop.recv(fd, limits.recv_options());
    if (!got || got->empty()) break;  // error, idle too long, or the peer closed
    ++store.stats.reads;
    store.stats.input_bytes += got->size();
    std::string_view data = carry.bytes(got->view());
    std::size_t pos = 0;
    Step step;
    while ((step = run_commands(store, limits, data, pos, parser, out)) == Step::flush) {
      // Backpressure: the rest waits in the carry, so that a client that
      // does not read holds none of the pool's buffers while we wait.
      carry.keep(data, pos);
      got->reset();
      if (!co_await send_down_to(loop, fd, out, limits.output_low, limits)) break;
      data = carry.bytes({});
      pos = 0;
    }
    if (step == Step::flush) break;  // the send failed
    open = step == Step::need_input;
    carry.keep(data, pos);
    got->reset();
    if (open && over_query_limit(carry.size(), limits, out)) open = false;
    if (!co_await send_down_to(loop, fd, out, 0, limits)) break;
  }
  (void)co_await loop.close(fd);
}

}  // namespace

int main(int argc, char** argv) try {
  example::ServerArgs args;
  std::string recv = "pool";
  Limits limits;
  example::Cli cli{"resp_server", "A Redis-protocol (RESP2) key-value server on one loop."};
  args.add_to(cli);
  cli.choice("--recv", recv, {"pool", "own"},
             "receive with loop.recv(fd) from the loop's pool, or into a buffer per connection");
  cli.duration("--timeout", limits.idle, true, std::chrono::hours(24 * 365),
               "close a connection idle this long (0: never; Redis: timeout)");
  cli.bytes("--query-buffer-limit", limits.query_buffer, 1024, std::size_t(1) << 40,
            "most bytes an unfinished command may hold (Redis: client-query-buffer-limit)");
  cli.bytes("--proto-max-bulk-len", limits.max_bulk, 1, std::size_t(1) << 40,
            "longest bulk string taken (Redis: proto-max-bulk-len)");
  cli.bytes("--output-high", limits.output_high, 1, std::size_t(1) << 40,
            "replies queued for a client above this stop its parsing...");
  cli.bytes("--output-low", limits.output_low, 0, std::size_t(1) << 40,
            "...until they are sent down to this");
  cli.parse(argc, argv);
  args.loop.check(cli);
  if (limits.output_low > limits.output_high) cli.fail("--output-low must not exceed --output-high");
  limits.send = args.send_timeout;
  Store store;
  const bool pooled = recv == "pool";
  return example::run_server(
      "resp_server", args,
      [&](lev::Loop& loop, lev::Fd fd) {
        return pooled ? serve_pooled(loop, std::move(fd), store, limits)
                      : serve(loop, std::move(fd), store, limits);
      },
      "-ERR max number of clients reached\r\n");
} catch (const std::exception& e) {
  std::fprintf(stderr, "resp_server: %s\n", e.what());
  return 1;
}
