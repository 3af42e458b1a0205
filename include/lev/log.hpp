#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Where lev's own messages go: a process-wide log hook.
///
///     lev::set_log_handler([](lev::LogLevel level, std::string_view text) {
///       my_logger.write(lev::to_string(level), text);
///     });

#include <functional>
#include <string_view>

namespace lev {

/// How much a library message matters.
enum class LogLevel {
  debug,    ///< detail for whoever is chasing a problem
  info,     ///< a choice lev made that a user may want to know (a backend fallback)
  warning,  ///< something went wrong and lev carries on (accept backing off)
  error,    ///< something was lost (an exception escaping a spawned task)
};

/// "debug", "info", "warning" or "error".
[[nodiscard]] const char* to_string(LogLevel level) noexcept;

/// Receives every message the library emits. It may be called from any
/// thread that runs a Loop, from several at once, so it must be thread-safe;
/// it must not throw (an exception it throws is caught and dropped). The
/// text has no trailing newline and no "lev: " prefix.
using LogHandler = std::function<void(LogLevel level, std::string_view text)>;

/// Installs `handler` for the whole process and returns the previous one
/// (empty when it was the default). An empty handler restores the default, which writes "lev:
/// <text>" and a newline to stderr. Callable from any thread; a message being logged at the same
/// moment goes to either the old or the new handler.
LogHandler set_log_handler(LogHandler handler);

/// Sends `text` to the installed handler. What the library itself calls;
/// users may call it too, to share the hook.
void log_message(LogLevel level, std::string_view text) noexcept;

}  // namespace lev
