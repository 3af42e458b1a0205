#include "lev/log.hpp"

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace lev {

namespace {

// The handler is shared so that log_message calls a copy it holds outside
// the lock: a slow handler does not serialise set_log_handler, and a handler
// may itself log or install another handler.
std::mutex handler_mutex;
std::shared_ptr<const LogHandler> installed;  // empty: the default

void write_default(std::string_view text) noexcept {
  std::string line = "lev: ";
  line.append(text);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace

const char* to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::debug:
      return "debug";
    case LogLevel::info:
      return "info";
    case LogLevel::warning:
      return "warning";
    case LogLevel::error:
      return "error";
  }
  return "unknown";
}

LogHandler set_log_handler(LogHandler handler) {
  std::shared_ptr<const LogHandler> next;
  if (handler) next = std::make_shared<const LogHandler>(std::move(handler));
  std::shared_ptr<const LogHandler> previous;
  {
    std::lock_guard lock(handler_mutex);
    previous = std::exchange(installed, std::move(next));
  }
  return previous ? *previous : LogHandler{};
}

void log_message(LogLevel level, std::string_view text) noexcept {
  std::shared_ptr<const LogHandler> handler;
  {
    std::lock_guard lock(handler_mutex);
    handler = installed;
  }
  try {
    if (handler)
      (*handler)(level, text);
    else
      write_default(text);
  } catch (...) {
    // A handler must not throw; the message is dropped rather than let an
    // exception out of the noexcept paths that log.
  }
}

}  // namespace lev
