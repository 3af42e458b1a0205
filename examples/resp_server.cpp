// A Redis-protocol (RESP2) key-value server on one loop.
//   resp_server --port N [--max-seconds S] [--model proactor|reactor]
//               [--backend uring|epoll|auto] [--recv pool|own] [--timeout IDLE]
//               [--command-timeout T] [--command-min-rate BYTES]
//               [--send-timeout T] [--max-clients N] [--query-buffer-limit BYTES]
//               [--proto-max-bulk-len BYTES] [--output-high BYTES] [--output-low BYTES]
//   (--help lists them with their defaults, which are Redis's where Redis has one)
// First line on stdout: "listening on 127.0.0.1:PORT". SIGINT, SIGTERM and
// SIGHUP stop it.
//
// RESP2 arrays and inline commands, pipelining; PING, ECHO, SET (EX/PX,
// NX/XX), GET, DEL, EXISTS, INCR, DECR, MSET, MGET, EXPIRE, TTL, CONFIG GET
// (empty answer), COMMAND (empty answer), INFO (a few stats, the keyspace),
// QUIT. Unknown commands get an error; malformed input gets an error and
// the connection is closed. Keys past their expiry go when touched and, as
// in Redis, by an expiry cycle (10 times a second: samples of 20 keys with
// an expiry, at most 25 ms a round), so that keys nobody reads again do not
// stay.
//
// Hostile clients (limits: docs/servers.md): a command split across
// receives is parsed on from where the last receive stopped
// (resp_parser.hpp); a connection's unfinished command may hold at most
// --query-buffer-limit bytes and must be whole within --command-timeout of
// its first byte (plus a second per --command-min-rate bytes), however it
// trickles in; replies queued for a client above --output-high stop its
// parsing until they are sent down to --output-low; a send that makes no
// progress for --send-timeout, or a client idle for --timeout (300 s)
// between commands, closes the connection.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
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

constexpr std::size_t kNoSlot = std::numeric_limits<std::size_t>::max();

struct Entry {
  std::string value;
  long long expires = kNever;        // ms, on now_ms()'s clock
  const std::string* key = nullptr;  // its key in the map (a node's key does not move)
  std::size_t slot = kNoSlot;        // where it is in Store's list of keys with an expiry
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
  std::size_t connections = 0;   // total_connections_received
  std::size_t commands = 0;      // total_commands_processed
  std::size_t reads = 0;         // total_reads_processed
  std::size_t input_bytes = 0;   // total_net_input_bytes
  std::size_t parsed = 0;        // bytes the parsers looked at (linear: about input_bytes)
  std::size_t expired_keys = 0;  // expired_keys: on access and by the expiry cycle
};

class Store {
 public:
  Stats stats;

  Entry* find(std::string_view key) {
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    if (it->second.expires != kNever && it->second.expires <= now_ms()) {
      ++stats.expired_keys;
      remove(it);  // expired: gone on first touch
      return nullptr;
    }
    return &it->second;
  }
  Entry& put(std::string_view key, std::string_view value) {
    auto it = map_.find(key);
    if (it == map_.end()) {
      it = map_.emplace(std::string(key), Entry{}).first;
      it->second.key = &it->first;
    }
    it->second.value.assign(value);
    set_expiry(it->second, kNever);
    return it->second;
  }
  bool erase(std::string_view key) {
    if (!find(key)) return false;
    remove(map_.find(key));
    return true;
  }
  /// Sets (or, with kNever, clears) an entry's expiry.
  void set_expiry(Entry& e, long long when) {
    e.expires = when;
    if (when != kNever && e.slot == kNoSlot) {
      e.slot = volatile_.size();
      volatile_.push_back(&e);
    } else if (when == kNever && e.slot != kNoSlot) {
      unlist(e);
    }
  }

  /// One round of active expiry, as Redis's: samples 20 keys that have an
  /// expiry, removes those past it, and samples again while more than a
  /// quarter of a sample had expired, until `budget` has passed. Expired
  /// keys nobody reads again go, a few thousand per round at most.
  void expire_cycle(std::chrono::steady_clock::duration budget) {
    const auto until = std::chrono::steady_clock::now() + budget;
    for (;;) {
      const long long now = now_ms();
      int sampled = 0, expired = 0;
      for (; sampled < 20 && !volatile_.empty(); ++sampled) {
        Entry* e = volatile_[rng_() % volatile_.size()];
        if (e->expires > now) continue;
        ++expired;
        ++stats.expired_keys;
        remove(map_.find(*e->key));
      }
      if (expired * 4 <= sampled || std::chrono::steady_clock::now() >= until) break;
    }
  }
  [[nodiscard]] std::size_t keys() const noexcept { return map_.size(); }
  [[nodiscard]] std::size_t expiring() const noexcept { return volatile_.size(); }

  /// Starts the expiry cycle on `loop` (once: the first connection does).
  void start_expiry(lev::Loop& loop) {
    if (cycle_) return;
    // Redis: hz 10, at most 25% of each 100 ms period.
    cycle_ = loop.every(std::chrono::milliseconds(100),
                        [this](lev::Operation&, lev::Result<lev::Expired>) {
                          expire_cycle(std::chrono::milliseconds(25));
                        });
  }

 private:
  using Map = std::unordered_map<std::string, Entry, Hash, std::equal_to<>>;
  void unlist(Entry& e) {
    Entry* last = volatile_.back();
    volatile_[e.slot] = last;
    last->slot = e.slot;
    volatile_.pop_back();
    e.slot = kNoSlot;
  }
  void remove(Map::iterator it) {
    if (it->second.slot != kNoSlot) unlist(it->second);
    map_.erase(it);
  }

  Map map_;
  std::vector<Entry*> volatile_;  // the entries with an expiry, to sample from
  std::minstd_rand rng_{12345};
  std::optional<lev::Operation> cycle_;
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
    if (expires) store.set_expiry(e, *expires);
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
      store.set_expiry(*e, *expires);
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
                  "\r\nexpired_keys:" + std::to_string(s.expired_keys) +
                  "\r\nparser_bytes_examined:" + std::to_string(s.parsed) + "\r\n" +
                  (store.keys() ? "\r\n# Keyspace\r\ndb0:keys=" + std::to_string(store.keys()) +
                                      ",expires=" + std::to_string(store.expiring()) + "\r\n"
                                : std::string()));
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
  example::Millis idle{std::chrono::seconds(300)};    // Redis: timeout 0 (never); 300 is common
  example::Millis command{std::chrono::seconds(60)};  // a started command: whole within this...
  std::size_t command_rate = 64 << 10;                // ...plus a second per this many bytes
  example::Millis send{std::chrono::seconds(60)};
};

/// A connection's time limits on one IdleDeadline (no timer or linked
/// timeout per receive): --timeout between commands; once a command has
/// started, it must be whole within --command-timeout of its first byte
/// plus a second per --command-min-rate bytes of it, however it trickles
/// in (each byte is activity for the idle limit, not for this one). A
/// limit moved later is a store (lev/deadline.hpp).
class Timing {
 public:
  Timing(lev::Loop& loop, const Limits& limits)
      : loop_(loop), limits_(limits), deadline_(loop, limits.idle) {}
  lev::IdleDeadline& deadline() noexcept { return deadline_; }
  /// After a receive was run: `pending` bytes of an unfinished command are
  /// kept; `ran` says whether a command ended in this receive (the pending
  /// one, if any, started in it then).
  void update(std::size_t pending, bool ran) {
    if (limits_.command.count() == 0) return;
    if (!pending) {
      if (started_) deadline_.limit_until(lev::TimePoint::max());
      started_ = false;
      return;
    }
    if (!started_ || ran) start_ = loop_.now();
    started_ = true;
    lev::TimePoint until = start_ + limits_.command;
    if (limits_.command_rate)
      until += std::chrono::milliseconds(pending * 1000 / limits_.command_rate);
    deadline_.limit_until(until);
  }

 private:
  lev::Loop& loop_;
  const Limits& limits_;
  lev::IdleDeadline deadline_;
  bool started_ = false;  // an unfinished command is kept
  lev::TimePoint start_;  // when it started
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

// Sending replies: all but the last `keep` bytes of `out` go, within the
// send timeout, and what went is dropped from `out`. Each caller makes the
// first send itself (MSG_DONTWAIT, in the connection's own coroutine): a
// client that reads takes its replies with that one send, and no coroutine
// frame or timer is made for them. Only a send that fell short
// (!sent_whole) goes on in send_rest_down, a coroutine with the timeout.

// The bytes to send: all of `out` but the last `keep` (out.size() > keep).
std::string_view due(const std::string& out, std::size_t keep) {
  return std::string_view(out).substr(0, out.size() - keep);
}

// Drops the first `n` bytes of `out`, which went; an emptied big buffer is freed.
void drop_sent(std::string& out, std::size_t n, const Limits& limits) {
  out.erase(0, n);
  if (out.empty() && out.capacity() > 4 * limits.output_high) std::string().swap(out);
}

// True when `first`, the result of sending due(out, keep), took it all
// (dropped from `out`); false when send_rest_down is to go on.
bool sent_whole(std::string& out, std::size_t keep, const lev::Result<std::size_t>& first,
                const Limits& limits) {
  const std::size_t n = out.size() - keep;
  if (!first || *first != n) return false;
  drop_sent(out, n, limits);
  return true;
}

// Sends the rest of due(out, keep) after `first` fell short, then drops it
// from `out`. False when the connection is to close.
lev::Task<bool> send_rest_down(lev::Loop& loop, lev::FdRef fd, std::string& out, std::size_t keep,
                               lev::Result<std::size_t> first, const Limits& limits) {
  const std::size_t n = out.size() - keep;
  auto rest =
      co_await example::send_rest_within(loop, fd, due(out, keep), std::move(first), limits.send);
  if (!rest) co_return false;
  drop_sent(out, n, limits);
  co_return true;
}

// Backpressure (the replies reached the high mark; rare): sends them down
// to the low mark within the send timeout. False when the connection is to
// close. (A reply of the common case is sent inline by the caller, with no
// coroutine frame.)
lev::Task<bool> send_down_to_low(lev::Loop& loop, lev::FdRef fd, std::string& out,
                                 const Limits& limits) {
  if (out.size() <= limits.output_low) co_return true;
  auto sent = co_await loop.send(fd, due(out, limits.output_low), MSG_DONTWAIT);
  if (sent_whole(out, limits.output_low, sent, limits)) co_return true;
  co_return co_await send_rest_down(loop, fd, out, limits.output_low, std::move(sent), limits);
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
  store.start_expiry(loop);
  Timing timing{loop, limits};
  std::string in(kInitial, '\0'), out;
  std::size_t used = 0;  // bytes of `in` holding data
  bool open = true;
  while (open) {
    if (in.size() - used < 4096) in.resize(std::min(in.size() * 2, limits.query_buffer + 8192));
    auto n = co_await timing.deadline()(loop.recv(fd, std::span(in).subspan(used)));
    if (!n || *n == 0) break;  // error, a time limit passed, or the peer closed
    const std::size_t commands_before = store.stats.commands;
    used += *n;
    ++store.stats.reads;
    store.stats.input_bytes += *n;
    std::size_t pos = 0;
    Step step;
    while ((step = run_commands(store, limits, std::string_view(in.data(), used), pos, parser,
                                out)) == Step::flush) {
      // Backpressure: no more parsing until the replies are down to the low mark.
      if (!co_await send_down_to_low(loop, fd, out, limits)) break;
    }
    if (step == Step::flush) break;  // the send failed
    open = step == Step::need_input;
    // keep what is left of a partial command at the front
    if (pos > 0) {
      std::memmove(in.data(), in.data() + pos, used - pos);
      used -= pos;
    }
    if (open && over_query_limit(used, limits, out)) open = false;
    timing.update(used, store.stats.commands != commands_before);
    if (used < kInitial && in.size() > 4 * kInitial) {  // a big command is gone: shrink back
      in.resize(kInitial);
      in.shrink_to_fit();
    }
    if (!out.empty()) {
      auto sent = co_await loop.send(fd, due(out, 0), MSG_DONTWAIT);
      if (!sent_whole(out, 0, sent, limits)) {
        const bool ok = co_await send_rest_down(loop, fd, out, 0, std::move(sent), limits);
        if (!ok) break;
      }
    }
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
  store.start_expiry(loop);
  Timing timing{loop, limits};
  std::string out;
  bool open = true;
  while (open) {
    auto got = co_await timing.deadline()(loop.recv(fd));
    if (!got || got->empty()) break;  // error, a time limit passed, or the peer closed
    const std::size_t commands_before = store.stats.commands;
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
      if (!co_await send_down_to_low(loop, fd, out, limits)) break;
      data = carry.bytes({});
      pos = 0;
    }
    if (step == Step::flush) break;  // the send failed
    open = step == Step::need_input;
    carry.keep(data, pos);
    got->reset();
    if (open && over_query_limit(carry.size(), limits, out)) open = false;
    timing.update(carry.size(), store.stats.commands != commands_before);
    if (!out.empty()) {
      auto sent = co_await loop.send(fd, due(out, 0), MSG_DONTWAIT);
      if (!sent_whole(out, 0, sent, limits)) {
        const bool ok = co_await send_rest_down(loop, fd, out, 0, std::move(sent), limits);
        if (!ok) break;
      }
    }
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
               "close a connection idle this long between commands (0: never; Redis: timeout)");
  cli.duration("--command-timeout", limits.command, true, std::chrono::hours(24),
               "a command must arrive whole within this of its first byte... (0: no limit)");
  cli.bytes("--command-min-rate", limits.command_rate, 0, std::size_t(1) << 40,
            "...plus a second per this many bytes of it (0: no allowance for size)");
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
  if (limits.output_low > limits.output_high)
    cli.fail("--output-low must not exceed --output-high");
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
