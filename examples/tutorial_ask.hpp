#pragma once
// docs/tutorial.md, step 3: the client's protocol, in a header of its own
// so that a test can run it on the fake backend (step 5).
// [ask]
#include <array>
#include <lev/lev.hpp>
#include <string>
#include <system_error>

// Reads from `fd` until a newline: the line, without it.
inline lev::Task<lev::Result<std::string>> read_line(lev::Loop& loop, lev::FdRef fd) {
  std::string line;
  std::array<char, 256> buf;
  for (;;) {
    auto n = co_await loop.recv(fd, buf);
    if (!n) co_return n.error();  // reset, or cancelled (by with_timeout, by a stop request)
    if (*n == 0) co_return lev::Error{make_error_code(std::errc::connection_reset), "recv", fd.fd};
    line.append(buf.data(), *n);
    if (auto end = line.find('\n'); end != std::string::npos) co_return line.substr(0, end);
  }
}

// Sends `question` as a line and waits at most `limit` for the answer line.
inline lev::Task<lev::Result<std::string>> ask(lev::Loop& loop, lev::FdRef fd, std::string question,
                                               lev::Duration limit) {
  question += '\n';
  if (auto sent = co_await loop.send_all(fd, question); !sent) co_return sent.error();
  co_return co_await lev::with_timeout(read_line(loop, fd), limit);
}
// [/ask]
