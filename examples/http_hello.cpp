// An HTTP/1.1 keep-alive server that answers every request with
// "Hello, World!".
//   http_hello --port N [--max-seconds S] [--model proactor|reactor]
//              [--recv pool|own]   (pool, the default: loop.recv(fd))
// First line on stdout: "listening on 127.0.0.1:PORT". SIGINT/SIGTERM stop it.
//
// Pipelined requests are answered in order; a request split across reads
// waits for the rest; a request body (Content-Length) is skipped; a
// malformed request gets 400 and the connection is closed; "Connection:
// close" (and HTTP/1.0 without keep-alive) is honoured.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

constexpr std::string_view kHello =
    "HTTP/1.1 200 OK\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
    "Hello, World!";
constexpr std::string_view kHelloClose =
    "HTTP/1.1 200 OK\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
    "Connection: close\r\n\r\nHello, World!";
constexpr std::string_view kBadRequest =
    "HTTP/1.1 400 Bad Request\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
    "Connection: close\r\n\r\nBad Request\n";
constexpr std::size_t kMaxHead = 16 * 1024;

bool iequals(std::string_view a, std::string_view lower) {
  if (a.size() != lower.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    if (c != lower[i]) return false;
  }
  return true;
}

bool is_token_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

struct Request {
  std::size_t head_size = 0;  // through the blank line
  std::size_t body_size = 0;
  bool keep_alive = true;
};

enum class Parse { complete, incomplete, malformed };

// Parses the head of one request at the start of `in`.
Parse parse(std::string_view in, Request& req) {
  std::size_t end = in.find("\r\n\r\n");
  if (end == std::string_view::npos)
    return in.size() > kMaxHead ? Parse::malformed : Parse::incomplete;
  if (end + 4 > kMaxHead) return Parse::malformed;
  req = Request{};
  req.head_size = end + 4;
  std::string_view head = in.substr(0, end);
  std::size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  // request line: METHOD SP TARGET SP HTTP/1.x
  std::size_t sp1 = line.find(' ');
  if (sp1 == 0 || sp1 == std::string_view::npos) return Parse::malformed;
  for (char c : line.substr(0, sp1))
    if (!is_token_char(c)) return Parse::malformed;
  std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return Parse::malformed;
  std::string_view version = line.substr(sp2 + 1);
  if (version == "HTTP/1.1")
    req.keep_alive = true;
  else if (version == "HTTP/1.0")
    req.keep_alive = false;
  else
    return Parse::malformed;
  bool saw_length = false;
  std::size_t pos = eol == std::string_view::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    std::size_t next = head.find("\r\n", pos);
    if (next == std::string_view::npos) next = head.size();
    std::string_view h = head.substr(pos, next - pos);
    pos = next + 2;
    std::size_t colon = h.find(':');
    if (colon == 0 || colon == std::string_view::npos) return Parse::malformed;
    std::string_view name = h.substr(0, colon);
    for (char c : name)
      if (!is_token_char(c)) return Parse::malformed;
    std::string_view value = trim(h.substr(colon + 1));
    if (iequals(name, "content-length")) {
      std::size_t n = 0;
      auto r = std::from_chars(value.data(), value.data() + value.size(), n);
      if (r.ec != std::errc{} || r.ptr != value.data() + value.size() || saw_length)
        return Parse::malformed;
      if (n > (1u << 30)) return Parse::malformed;
      req.body_size = n;
      saw_length = true;
    } else if (iequals(name, "transfer-encoding")) {
      return Parse::malformed;  // chunked bodies are not taken here: refuse rather than misframe
    } else if (iequals(name, "connection")) {
      if (iequals(value, "close"))
        req.keep_alive = false;
      else if (iequals(value, "keep-alive"))
        req.keep_alive = true;
    }
  }
  return Parse::complete;
}

// Answers every complete request at the front of `data` (skipping request
// bodies, `skip` bytes of which may still be due) and appends the answers
// to `out`; `pos` ends where an incomplete request starts. False when the
// connection is to close (a malformed request, or no keep-alive).
bool answer(std::string_view data, std::size_t& pos, std::size_t& skip, std::string& out) {
  for (;;) {
    if (skip) {
      const std::size_t take = std::min(skip, data.size() - pos);
      pos += take;
      skip -= take;
      if (skip) return true;
    }
    if (pos == data.size()) return true;
    Request req;
    Parse r = parse(data.substr(pos), req);
    if (r == Parse::incomplete) return true;
    if (r == Parse::malformed) {
      out += kBadRequest;
      return false;
    }
    pos += req.head_size;
    skip = req.body_size;
    out += req.keep_alive ? kHello : kHelloClose;
    if (!req.keep_alive) return false;
  }
}

// --recv own: each connection receives into a buffer of its own.
lev::Task<> serve(lev::Loop& loop, lev::Fd fd) {
  std::string in(8 * 1024, '\0'), out;
  std::size_t used = 0;
  std::size_t skip = 0;  // body bytes still to discard
  bool open = true;
  while (open) {
    if (in.size() - used < 2048) {
      if (in.size() >= 4 * kMaxHead) break;
      in.resize(in.size() * 2);
    }
    auto n = co_await loop.recv(fd, std::span(in).subspan(used));
    if (!n || *n == 0) break;
    used += *n;
    std::size_t pos = 0;
    open = answer(std::string_view(in.data(), used), pos, skip, out);
    if (pos > 0) {
      std::memmove(in.data(), in.data() + pos, used - pos);
      used -= pos;
    }
    if (!out.empty()) {
      if (!co_await loop.send_all(fd, out)) break;
      out.clear();
    }
  }
  (void)co_await loop.shutdown(fd, lev::Shutdown::write);
  (void)co_await loop.close(fd);
}

// --recv pool: loop.recv(fd) hands over a buffer of the loop's pool (on
// io_uring: one multishot recv per connection). Requests are answered in
// place in that buffer; only a request split across receives is copied.
lev::Task<> serve_pooled(lev::Loop& loop, lev::Fd fd) {
  example::Carry carry;  // the start of a request the next receive ends
  std::string out;
  std::size_t skip = 0;  // body bytes still to discard
  bool open = true;
  while (open && carry.size() < 4 * kMaxHead) {
    auto got = co_await loop.recv(fd);
    if (!got || got->empty()) break;
    const std::string_view data = carry.bytes(got->view());
    std::size_t pos = 0;
    open = answer(data, pos, skip, out);
    carry.keep(data, pos);
    if (!out.empty()) {
      if (!co_await loop.send_all(fd, out)) break;
      out.clear();
    }
  }
  (void)co_await loop.shutdown(fd, lev::Shutdown::write);
  (void)co_await loop.close(fd);
}

}  // namespace

int main(int argc, char** argv) try {
  return example::run_server("http_hello", argc, argv,
                             example::recv_arg(argc, argv, "pool") ? serve_pooled : serve);
} catch (const std::exception& e) {
  std::fprintf(stderr, "http_hello: %s\n", e.what());
  return 1;
}
