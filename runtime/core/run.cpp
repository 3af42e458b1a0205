// lev::run: the loop, the stop signals, the grace period and the hard stop
// around a program's main task.
#include "lev/run.hpp"

#include <string.h>

#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>

#include "lev/join_handle.hpp"
#include "lev/log.hpp"
#include "lev/sync.hpp"
#include "lev/watchers.hpp"
#include "lev/when.hpp"  // detail::is_cancellation

namespace lev {

namespace {

std::string signal_name(int signo) {
  const char* abbrev = ::sigabbrev_np(signo);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(signo);
}

std::string seconds(Duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception that is no std::exception";
  }
}

Task<int> join(JoinHandle<int>& main) { co_return co_await main; }

}  // namespace

Task<void> until_stopped(std::stop_token token) {
  if (token.stop_requested()) co_return;
  Loop* loop = co_await current_loop();
  if (!loop) throw std::logic_error("lev::until_stopped: the calling task runs on no loop");
  Event never{*loop};
  auto wait = [](Event& e) -> Task<Result<void>> { co_return co_await e.wait(); };
  // Ends cancelled: by the token, or by the caller's own cancellation.
  (void)co_await wait(never).with_stop_token(std::move(token));
}

namespace detail {

int run_main(RunOptions o, const RunMain& main) {
  if (o.model == Model::proactor && o.loop.backend.name().empty() && !o.loop.backend.object())
    o.loop.backend = "auto";
  std::optional<Loop> loop;
  try {
    loop.emplace(o.model, std::move(o.loop));
  } catch (const std::exception& e) {
    log_message(LogLevel::error, std::string("lev::run: no loop: ") + e.what());
    return 1;
  }
  std::stop_source stop;
  JoinHandle<int> task;
  Operation grace_timer;
  int signalled = 0;
  bool hard = false;
  auto hard_stop = [&](const std::string& why) {
    if (hard) return;
    hard = true;
    grace_timer.cancel();
    log_message(LogLevel::warning, "lev::run: " + why + ": cancelling the main task");
    task.abort();
  };
  std::vector<Signal> signals;
  auto on_signal = [&](int s) {
    if (signalled != 0) {
      hard_stop(signal_name(s) + " again");
      return;
    }
    signalled = s;
    stop.request_stop();  // the main task hears of it and winds down
    if (o.grace <= Duration::zero()) {
      hard_stop(signal_name(s) + " with no grace period");
      return;
    }
    grace_timer = loop->after(o.grace, [&, s](Operation&, Result<Expired> r) {
      if (r) hard_stop("still running " + seconds(o.grace) + " after " + signal_name(s));
    });
  };
  int code = 0;
  try {
    signals.reserve(o.stop_signals.size());
    for (int signo : o.stop_signals) signals.push_back(loop->signal(signo, on_signal));
    task = loop->spawn(main(*loop, stop.get_token()));
    code = loop->block_on(join(task));
  } catch (...) {
    const std::exception_ptr e = std::current_exception();
    if (hard && detail::is_cancellation(e)) {
      code = 128 + signalled;
    } else {
      log_message(LogLevel::error, "lev::run: the main task threw: " + what_of(e));
      code = 1;
    }
  }
  grace_timer.cancel();
  return code;
  // Then, in reverse order: the signals go (the mask is restored), and the
  // loop cancels and reaps what is still running on it.
}

}  // namespace detail
}  // namespace lev
