#pragma once
// resp_server's parser: RESP2 commands (arrays of bulk strings, and inline
// commands) out of a byte stream that arrives in pieces.

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <string_view>
#include <utility>
#include <vector>

namespace resp {

enum class Parse { complete, incomplete, malformed };

/// Parses one command at a time. A command split across receives is
/// resumed where the previous call stopped (the bulk strings already read
/// are remembered), so the work is linear in the bytes received however
/// the command is split: a 1M-element command arriving 4 KiB at a time is
/// read once, not a million times from its start.
class Parser {
 public:
  static constexpr std::size_t kMaxInline = 64 * 1024;  // Redis: PROTO_INLINE_MAX_SIZE
  static constexpr long long kMaxArgs = 1024 * 1024;    // Redis: unauthenticated multibulk limit
  static constexpr std::size_t kMaxLengthLine = 32;     // "$<digits>\r\n"

  /// `max_bulk`: the longest bulk string taken (Redis: proto-max-bulk-len).
  explicit Parser(std::size_t max_bulk) : max_bulk_(max_bulk) {}

  /// Parses the command that starts at `data[pos]`.
  /// - complete: args() views into `data`; `pos` is past the command.
  /// - incomplete: `pos` is unchanged. Call again with the bytes from
  ///   `pos` on followed by more (the command may have moved: only its
  ///   bytes must be the same).
  /// - malformed: why() says what is wrong; the connection is to close.
  Parse next(std::string_view data, std::size_t& pos) {
    const std::string_view cmd = data.substr(pos);
    if (cmd.empty()) return Parse::incomplete;
    if (!started_) {
      if (spans_.capacity() > 4096) {  // a huge command's memory goes once it has run
        std::vector<std::pair<std::size_t, std::size_t>>().swap(spans_);
        std::vector<std::string_view>().swap(args_);
      }
      started_ = true;
      multibulk_ = cmd.front() == '*';
      have_count_ = false;
      left_ = 0;
      at_ = 0;
      spans_.clear();
    }
    const Parse r = multibulk_ ? multibulk(cmd) : inline_command(cmd);
    if (r == Parse::incomplete) return r;
    started_ = false;
    if (r == Parse::malformed) return r;
    args_.clear();
    for (auto [off, len] : spans_) args_.push_back(cmd.substr(off, len));
    pos += at_;
    return r;
  }
  /// The command's words (for `complete`); empty for an empty command.
  [[nodiscard]] const std::vector<std::string_view>& args() const noexcept { return args_; }
  [[nodiscard]] const char* why() const noexcept { return why_; }
  /// The bytes looked at since the last call (a measure of the parser's
  /// work: linear parsing keeps it near the bytes received).
  std::size_t take_examined() noexcept { return std::exchange(examined_, 0); }

 private:
  Parse malformed(const char* why) {
    why_ = why;
    return Parse::malformed;
  }

  // "<number>\r\n" at cmd[p] (after its type byte); p moves past it.
  Parse number(std::string_view cmd, std::size_t& p, long long& v) {
    const std::string_view rest = cmd.substr(p, kMaxLengthLine + 1);
    const std::size_t cr = rest.find('\r');
    if (cr == std::string_view::npos || cr + 1 >= rest.size()) {
      examined_ += rest.size();
      if (rest.size() > kMaxLengthLine) return malformed("length line too long");
      return Parse::incomplete;
    }
    examined_ += cr + 2;
    if (rest[cr + 1] != '\n') return malformed("expected CRLF");
    auto r = std::from_chars(rest.data(), rest.data() + cr, v);
    if (cr == 0 || r.ec != std::errc{} || r.ptr != rest.data() + cr)
      return malformed("invalid length");
    p += cr + 2;
    return Parse::complete;
  }

  Parse multibulk(std::string_view cmd) {
    if (!have_count_) {
      std::size_t p = 1;
      long long count = 0;
      if (Parse r = number(cmd, p, count); r != Parse::complete) return r;
      if (count > kMaxArgs) return malformed("invalid multibulk length");
      have_count_ = true;
      left_ = std::max(count, 0LL);  // *0 and *-1: an empty command
      spans_.reserve(static_cast<std::size_t>(std::min(left_, 1024LL)));
      at_ = p;
    }
    while (left_ > 0) {
      if (at_ >= cmd.size()) return Parse::incomplete;
      if (cmd[at_] != '$') return malformed("expected '$'");
      std::size_t p = at_ + 1;  // the header is read again when its data is incomplete: <= 32 bytes
      long long len = 0;
      if (Parse r = number(cmd, p, len); r != Parse::complete) return r;
      if (len < 0 || static_cast<unsigned long long>(len) > max_bulk_)
        return malformed("invalid bulk length");
      const auto ulen = static_cast<std::size_t>(len);
      if (cmd.size() - p < ulen + 2) return Parse::incomplete;
      if (cmd[p + ulen] != '\r' || cmd[p + ulen + 1] != '\n') return malformed("expected CRLF");
      examined_ += ulen + 2;
      spans_.emplace_back(p, ulen);
      at_ = p + ulen + 2;
      --left_;
    }
    return Parse::complete;
  }

  // One line of space-separated words. at_: how far a newline was looked for.
  Parse inline_command(std::string_view cmd) {
    const std::size_t nl = cmd.find('\n', at_);
    examined_ += (nl == std::string_view::npos ? cmd.size() : nl + 1) - at_;
    if (nl == std::string_view::npos) {
      at_ = cmd.size();
      if (cmd.size() > kMaxInline) return malformed("too big inline request");
      return Parse::incomplete;
    }
    std::size_t end = nl;
    if (end > 0 && cmd[end - 1] == '\r') --end;
    std::size_t i = 0;
    while (i < end) {
      while (i < end && (cmd[i] == ' ' || cmd[i] == '\t')) ++i;
      const std::size_t start = i;
      while (i < end && cmd[i] != ' ' && cmd[i] != '\t') ++i;
      if (i > start) spans_.emplace_back(start, i - start);
    }
    at_ = nl + 1;
    return Parse::complete;
  }

  std::size_t max_bulk_;
  bool started_ = false;     // a command is under way
  bool multibulk_ = false;   // it is an array, not an inline command
  bool have_count_ = false;  // its element count has been read
  long long left_ = 0;       // bulk strings still to read
  std::size_t at_ = 0;       // its next unparsed byte, from its start
  std::vector<std::pair<std::size_t, std::size_t>> spans_;  // its words: offset, length
  std::vector<std::string_view> args_;
  const char* why_ = "";
  std::size_t examined_ = 0;
};

}  // namespace resp
