// A Redis-protocol (RESP2) key-value server on one loop.
//   resp_server --port N [--max-seconds S] [--model proactor|reactor]
//               [--recv pool|own]   (pool, the default: loop.recv(fd))
// First line on stdout: "listening on 127.0.0.1:PORT". SIGINT/SIGTERM stop it.
//
// RESP2 arrays and inline commands, pipelining; PING, ECHO, SET (EX/PX,
// NX/XX), GET, DEL, EXISTS, INCR, DECR, MSET, MGET, EXPIRE, TTL, CONFIG GET
// (empty answer), COMMAND (empty answer), QUIT. Unknown commands get an
// error; malformed input gets an error and the connection is closed.
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

namespace {

using Clock = std::chrono::steady_clock;

struct Entry {
  std::string value;
  Clock::time_point expires = Clock::time_point::max();
};

// Transparent hashing: look keys up by string_view without building strings.
struct Hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

class Store {
 public:
  Entry* find(std::string_view key) {
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    if (it->second.expires != Clock::time_point::max() && it->second.expires <= Clock::now()) {
      map_.erase(it);  // expired: gone on first touch
      return nullptr;
    }
    return &it->second;
  }
  Entry& put(std::string_view key, std::string_view value) {
    auto it = map_.find(key);
    if (it == map_.end()) it = map_.emplace(std::string(key), Entry{}).first;
    it->second.value.assign(value);
    it->second.expires = Clock::time_point::max();
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
    std::optional<Clock::duration> ttl;
    bool nx = false, xx = false;
    for (std::size_t i = 3; i < n; ++i) {
      if ((iequals(a[i], "EX") || iequals(a[i], "PX")) && i + 1 < n) {
        auto v = to_int(a[i + 1]);
        if (!v || *v <= 0)
          return error(out, "ERR invalid expire time in 'set' command"), After::keep_going;
        ttl = iequals(a[i], "EX") ? Clock::duration(std::chrono::seconds(*v))
                                  : Clock::duration(std::chrono::milliseconds(*v));
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
    if (ttl) e.expires = Clock::now() + *ttl;
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
    Entry* e = store.find(a[1]);
    if (!e) return integer(out, 0), After::keep_going;
    if (*secs <= 0)
      store.erase(a[1]);
    else
      e->expires = Clock::now() + std::chrono::seconds(*secs);
    integer(out, 1);
  } else if (iequals(cmd, "TTL")) {
    if (n != 2) return wrong_arity(out, cmd), After::keep_going;
    Entry* e = store.find(a[1]);
    if (!e) return integer(out, -2), After::keep_going;
    if (e->expires == Clock::time_point::max()) return integer(out, -1), After::keep_going;
    auto left = std::chrono::ceil<std::chrono::seconds>(e->expires - Clock::now()).count();
    integer(out, left);
  } else if (iequals(cmd, "ECHO")) {
    if (n != 2) return wrong_arity(out, cmd), After::keep_going;
    bulk(out, a[1]);
  } else if (iequals(cmd, "CONFIG")) {
    if (n < 2) return wrong_arity(out, cmd), After::keep_going;
    if (!iequals(a[1], "GET")) return error(out, "ERR CONFIG supports GET only"), After::keep_going;
    out += "*0\r\n";  // no configuration to report
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

// ---- parsing ----------------------------------------------------------

enum class Parse { complete, incomplete, malformed };

constexpr std::size_t kMaxInline = 64 * 1024;
constexpr long long kMaxBulk = 512LL * 1024 * 1024;
constexpr long long kMaxArgs = 1024 * 1024;

// Reads "<number>\r\n" at `pos` (after the type byte).
Parse read_number(std::string_view in, std::size_t& pos, long long& v, const char*& why) {
  std::size_t cr = in.find('\r', pos);
  if (cr == std::string_view::npos || cr + 1 >= in.size()) {
    if (in.size() - pos > 32) return why = "length line too long", Parse::malformed;
    return Parse::incomplete;
  }
  if (in[cr + 1] != '\n') return why = "expected CRLF", Parse::malformed;
  auto n = to_int(in.substr(pos, cr - pos));
  if (!n) return why = "invalid length", Parse::malformed;
  v = *n;
  pos = cr + 2;
  return Parse::complete;
}

// One command from in[pos...]; on `complete`, `args` views into `in` and
// `pos` is past the command.
Parse parse(std::string_view in, std::size_t& pos, std::vector<std::string_view>& args,
            const char*& why) {
  args.clear();
  std::size_t p = pos;
  if (in[p] == '*') {
    long long count = 0;
    ++p;
    if (Parse r = read_number(in, p, count, why); r != Parse::complete) return r;
    if (count > kMaxArgs) return why = "invalid multibulk length", Parse::malformed;
    for (long long i = 0; i < count; ++i) {
      if (p >= in.size()) return Parse::incomplete;
      if (in[p] != '$') return why = "expected '$'", Parse::malformed;
      long long len = 0;
      ++p;
      if (Parse r = read_number(in, p, len, why); r != Parse::complete) return r;
      if (len < 0 || len > kMaxBulk) return why = "invalid bulk length", Parse::malformed;
      const auto ulen = static_cast<std::size_t>(len);
      if (in.size() - p < ulen + 2) return Parse::incomplete;
      if (in[p + ulen] != '\r' || in[p + ulen + 1] != '\n')
        return why = "expected CRLF", Parse::malformed;
      args.push_back(in.substr(p, ulen));
      p += ulen + 2;
    }
    pos = p;
    return Parse::complete;
  }
  // inline command: one line of space-separated words
  std::size_t nl = in.find('\n', p);
  if (nl == std::string_view::npos) {
    if (in.size() - p > kMaxInline) return why = "too big inline request", Parse::malformed;
    return Parse::incomplete;
  }
  std::string_view line = in.substr(p, nl - p);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) args.push_back(line.substr(start, i - start));
  }
  pos = nl + 1;
  return Parse::complete;
}

// ---- connections ------------------------------------------------------

// Runs every complete command at the front of `data` and appends the
// replies to `out`; `pos` ends at the first byte of an incomplete command.
// False when the connection is to close (QUIT, or malformed input).
bool run_commands(Store& store, std::string_view data, std::size_t& pos,
                  std::vector<std::string_view>& args, std::string& out) {
  while (pos < data.size()) {
    const char* why = "";
    Parse r = parse(data, pos, args, why);
    if (r == Parse::incomplete) return true;
    if (r == Parse::malformed) {
      error(out, std::string("ERR Protocol error: ") + why);
      return false;
    }
    if (args.empty()) continue;  // an empty inline line
    if (execute(store, args, out) == After::close) return false;
  }
  return true;
}

// --recv own: each connection receives into a buffer of its own.
lev::Task<> serve(lev::Loop& loop, lev::Fd fd, Store& store) {
  std::string in, out;
  std::vector<std::string_view> args;
  std::size_t used = 0;  // bytes of `in` holding data
  in.resize(16 * 1024);
  bool open = true;
  while (open) {
    if (in.size() - used < 4096) in.resize(in.size() * 2);
    auto n = co_await loop.recv(fd, std::span(in).subspan(used));
    if (!n || *n == 0) break;
    used += *n;
    std::size_t pos = 0;
    open = run_commands(store, std::string_view(in.data(), used), pos, args, out);
    // keep what is left of a partial command at the front
    if (pos > 0) {
      std::memmove(in.data(), in.data() + pos, used - pos);
      used -= pos;
    }
    if (!out.empty()) {
      if (!co_await loop.send_all(fd, out)) break;
      out.clear();
    }
  }
  (void)co_await loop.close(fd);
}

// --recv pool: loop.recv(fd) hands over a buffer of the loop's pool (on
// io_uring: one multishot recv per connection). Commands are run in place
// in that buffer; only a command split across receives is copied.
lev::Task<> serve_pooled(lev::Loop& loop, lev::Fd fd, Store& store) {
  example::Carry carry;  // the start of a command the next receive ends
  std::string out;
  std::vector<std::string_view> args;
  bool open = true;
  while (open) {
    auto got = co_await loop.recv(fd);
    if (!got || got->empty()) break;
    const std::string_view data = carry.bytes(got->view());
    std::size_t pos = 0;
    open = run_commands(store, data, pos, args, out);
    carry.keep(data, pos);
    if (!out.empty()) {
      if (!co_await loop.send_all(fd, out)) break;
      out.clear();
    }
  }
  (void)co_await loop.close(fd);
}

}  // namespace

int main(int argc, char** argv) try {
  Store store;
  const bool pooled = example::recv_arg(argc, argv, "pool");
  return example::run_server("resp_server", argc, argv, [&](lev::Loop& loop, lev::Fd fd) {
    return pooled ? serve_pooled(loop, std::move(fd), store) : serve(loop, std::move(fd), store);
  });
} catch (const std::exception& e) {
  std::fprintf(stderr, "resp_server: %s\n", e.what());
  return 1;
}
