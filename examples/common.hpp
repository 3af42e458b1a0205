#pragma once
// What the examples share: one strict command-line parser (Cli), the loop
// flags (--model, --backend), and the one-loop server skeleton with its
// limits (connection cap, send timeout).

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lev/lev.hpp"

namespace example {

using Millis = std::chrono::milliseconds;

// ---- command line ------------------------------------------------------

/// A strict command line: every flag is declared with its help text and
/// default; `--help` prints the usage (exit 0); an unknown flag, a missing
/// or malformed value, a value out of range or a flag given twice prints
/// what is wrong and the usage on stderr and exits 2. `--name VALUE` and
/// `--name=VALUE` are both accepted.
///
///     long count = 1000;
///     example::Cli cli{"echo_client", "Sends messages to an echo server."};
///     cli.integer("--count", count, 1, 1'000'000'000, "messages to send");
///     cli.parse(argc, argv);
class Cli {
 public:
  Cli(std::string program, std::string summary)
      : program_(std::move(program)), summary_(std::move(summary)) {}

  /// An integer in [min, max].
  void integer(std::string name, long& out, long min, long max, std::string help) {
    add(std::move(name), "N", std::to_string(out), std::move(help),
        [&out, min, max](std::string_view v) -> std::string {
          long n = 0;
          auto r = std::from_chars(v.data(), v.data() + v.size(), n);
          if (r.ec != std::errc{} || r.ptr != v.data() + v.size() || n < min || n > max)
            return "needs a whole number from " + std::to_string(min) + " to " +
                   std::to_string(max);
          out = n;
          return {};
        });
  }
  /// A TCP port, 0..65535 (0: the kernel picks one, where that means something).
  void port(std::string name, std::uint16_t& out, std::string help) {
    add(std::move(name), "PORT", std::to_string(out), std::move(help),
        [&out](std::string_view v) -> std::string {
          unsigned n = 0;
          auto r = std::from_chars(v.data(), v.data() + v.size(), n);
          if (r.ec != std::errc{} || r.ptr != v.data() + v.size() || n > 65535)
            return "needs a port from 0 to 65535";
          out = static_cast<std::uint16_t>(n);
          return {};
        });
  }
  /// Any text.
  void text(std::string name, std::string& out, std::string help) {
    add(std::move(name), "TEXT", out, std::move(help), [&out](std::string_view v) -> std::string {
      out = v;
      return {};
    });
  }
  /// One of `choices`.
  void choice(std::string name, std::string& out, std::vector<std::string> choices,
              std::string help) {
    std::string meta;
    for (const auto& c : choices) meta += (meta.empty() ? "" : "|") + c;
    add(std::move(name), meta, out, std::move(help),
        [&out, choices, meta](std::string_view v) -> std::string {
          for (const auto& c : choices)
            if (v == c) return out = c, std::string{};
          return "needs one of " + meta;
        });
  }
  /// A duration: a number with a unit, ms, s, m or h (no unit: seconds),
  /// at most `max`; 0 only when `zero_ok` (0 then means "off").
  void duration(std::string name, Millis& out, bool zero_ok, Millis max, std::string help) {
    add(std::move(name), "TIME", format_duration(out), std::move(help),
        [&out, zero_ok, max](std::string_view v) -> std::string {
          auto d = parse_duration(v);
          if (!d || *d > max || (d->count() == 0 && !zero_ok))
            return std::string("needs a duration such as 500ms, 60s or 2m") +
                   (zero_ok ? " (0: off)" : ", more than 0") + ", at most " +
                   format_duration(max);
          out = *d;
          return {};
        });
  }
  /// A size in bytes: a number with an optional unit as Redis writes them
  /// (k = 1000, kb = 1024, m, mb, g, gb), in [min, max].
  void bytes(std::string name, std::size_t& out, std::size_t min, std::size_t max,
             std::string help) {
    add(std::move(name), "BYTES", std::to_string(out), std::move(help),
        [&out, min, max](std::string_view v) -> std::string {
          auto n = parse_bytes(v);
          if (!n || *n < min || *n > max)
            return "needs a size from " + std::to_string(min) + " to " + std::to_string(max) +
                   " bytes (units: k, kb, m, mb, g, gb)";
          out = *n;
          return {};
        });
  }
  /// A flag without a value.
  void flag(std::string name, bool& out, std::string help) {
    options_.push_back({std::move(name), "", "", std::move(help), nullptr, &out});
  }
  /// The words after the flags (or after `--`): the usage shows `name`.
  void rest(std::string name, std::vector<std::string>& out, std::string help) {
    rest_name_ = std::move(name);
    rest_help_ = std::move(help);
    rest_ = &out;
  }
  /// Whether the command line gave `name`.
  [[nodiscard]] bool given(std::string_view name) const {
    for (const auto& o : options_)
      if (o.name == name) return o.seen;
    return false;
  }

  /// Parses argv into the declared variables, or exits (0 for --help, 2
  /// for a usage error).
  void parse(int argc, char** argv) {
    int i = 1;
    for (; i < argc; ++i) {
      std::string_view a = argv[i];
      if (a == "--") {
        ++i;
        break;
      }
      if (a == "--help" || a == "-h") {
        std::fputs(usage().c_str(), stdout);
        std::exit(0);
      }
      if (a.size() < 2 || a[0] != '-') break;  // the first word of rest
      std::string_view value;
      bool inline_value = false;
      if (auto eq = a.find('='); eq != std::string_view::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        inline_value = true;
      }
      Option* o = find(a);
      if (!o) fail("unknown option " + std::string(a));
      if (o->seen) fail(o->name + " is given twice");
      o->seen = true;
      if (o->flag) {
        if (inline_value) fail(o->name + " takes no value");
        *o->flag = true;
        continue;
      }
      if (!inline_value) {
        if (i + 1 >= argc) fail(o->name + " needs a value");
        value = argv[++i];
      }
      if (std::string why = o->set(value); !why.empty())
        fail(o->name + " " + why + ", got '" + std::string(value) + "'");
    }
    if (i < argc && !rest_) fail("unexpected argument '" + std::string(argv[i]) + "'");
    for (; i < argc; ++i) rest_->emplace_back(argv[i]);
  }

  /// Prints `why` and the usage on stderr; exits 2.
  [[noreturn]] void fail(const std::string& why) const {
    std::fprintf(stderr, "%s: %s\n%s", program_.c_str(), why.c_str(), usage().c_str());
    std::exit(2);
  }

  [[nodiscard]] std::string usage() const {
    std::string u = "usage: " + program_ + " [options]";
    if (rest_) u += " [--] [" + rest_name_ + "...]";
    u += "\n" + summary_ + "\n\noptions:\n";
    for (const auto& o : options_) {
      std::string left = "  " + o.name + (o.meta.empty() ? "" : " " + o.meta);
      if (left.size() < 30) left.resize(30, ' ');
      u += left + " " + o.help;
      if (!o.flag && !o.fallback.empty()) u += " (default " + o.fallback + ")";
      u += "\n";
    }
    u += "  --help                       print this and exit\n";
    if (rest_) u += "  " + rest_name_ + "...: " + rest_help_ + "\n";
    return u;
  }

  static std::optional<Millis> parse_duration(std::string_view v) {
    long long n = 0;
    auto r = std::from_chars(v.data(), v.data() + v.size(), n);
    if (r.ec != std::errc{} || n < 0) return std::nullopt;
    const std::string_view unit(r.ptr, static_cast<std::size_t>(v.data() + v.size() - r.ptr));
    long long scale = 0;
    if (unit == "ms") scale = 1;
    if (unit.empty() || unit == "s") scale = 1000;
    if (unit == "m") scale = 60'000;
    if (unit == "h") scale = 3'600'000;
    if (!scale || n > std::numeric_limits<long long>::max() / scale) return std::nullopt;
    return Millis(n * scale);
  }
  static std::string format_duration(Millis d) {
    if (d.count() % 1000) return std::to_string(d.count()) + "ms";
    return std::to_string(d.count() / 1000) + "s";
  }
  static std::optional<std::size_t> parse_bytes(std::string_view v) {
    std::size_t n = 0;
    auto r = std::from_chars(v.data(), v.data() + v.size(), n);
    if (r.ec != std::errc{}) return std::nullopt;
    std::string unit(r.ptr, v.data() + v.size());
    for (char& c : unit) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    std::size_t scale = 0;
    if (unit.empty() || unit == "b") scale = 1;
    if (unit == "k") scale = 1000;
    if (unit == "kb") scale = 1024;
    if (unit == "m") scale = 1000 * 1000;
    if (unit == "mb") scale = 1024 * 1024;
    if (unit == "g") scale = 1000 * 1000 * 1000;
    if (unit == "gb") scale = 1024 * 1024 * 1024;
    if (!scale || n > std::numeric_limits<std::size_t>::max() / scale) return std::nullopt;
    return n * scale;
  }

 private:
  struct Option {
    std::string name, meta, fallback, help;
    std::function<std::string(std::string_view)> set;  // an error text, or empty
    bool* flag = nullptr;
    bool seen = false;
  };
  void add(std::string name, std::string meta, std::string fallback, std::string help,
           std::function<std::string(std::string_view)> set) {
    options_.push_back(
        {std::move(name), std::move(meta), std::move(fallback), std::move(help), std::move(set)});
  }
  Option* find(std::string_view name) {
    for (auto& o : options_)
      if (o.name == name) return &o;
    return nullptr;
  }

  std::string program_, summary_;
  std::vector<Option> options_;
  std::string rest_name_, rest_help_;
  std::vector<std::string>* rest_ = nullptr;
};

// ---- loop flags --------------------------------------------------------

/// `--model proactor|reactor` and `--backend uring|epoll|auto` (the
/// proactor's engine; auto: io_uring, or epoll when io_uring is refused,
/// saying why on stderr).
struct LoopArgs {
  std::string model = "proactor";
  std::string backend = "auto";

  void add_to(Cli& cli, bool with_model = true) {
    if (with_model) cli.choice("--model", model, {"proactor", "reactor"}, "which engine model");
    cli.choice("--backend", backend, {"uring", "epoll", "auto"},
               "the proactor's backend; auto falls back to epoll when io_uring is refused");
  }
  /// After parse: a reactor takes no io_uring backend.
  void check(const Cli& cli) const {
    if (model == "reactor" && backend == "uring") cli.fail("--backend uring needs --model proactor");
  }
  [[nodiscard]] lev::Model loop_model() const {
    return model == "reactor" ? lev::Model::reactor : lev::Model::proactor;
  }
  [[nodiscard]] lev::LoopOptions options() const {
    lev::LoopOptions o;
    if (loop_model() == lev::Model::proactor) o.backend = backend;
    return o;
  }
};

// ---- servers -----------------------------------------------------------

/// The flags every example server takes, with their defaults.
struct ServerArgs {
  std::uint16_t port = 0;
  long max_seconds = 0;
  LoopArgs loop;
  /// Connections served at once; more are refused (Redis: maxclients 10000).
  long max_clients = 10000;
  /// A client that stops reading is cut off once a send has made no
  /// progress for this long (nginx: send_timeout 60s): within one to two
  /// times it after its last read (send_all_within).
  Millis send_timeout = std::chrono::seconds(60);

  void add_to(Cli& cli) {
    cli.port("--port", port, "listen on 127.0.0.1:PORT (0: any free port)");
    cli.integer("--max-seconds", max_seconds, 0, 1'000'000'000, "stop after N seconds (0: never)");
    loop.add_to(cli);
    cli.integer("--max-clients", max_clients, 1, 1'000'000,
                "connections served at once; more are refused (lowered to fit RLIMIT_NOFILE)");
    cli.duration("--send-timeout", send_timeout, false, std::chrono::hours(24),
                 "close a connection whose sends make no progress for this long "
                 "(cut off 1-2x this after its last read)");
  }
};

/// Sends what is left of `bytes` after `first`, the result of a send of
/// all of `bytes` with MSG_DONTWAIT (EAGAIN: nothing went), closing nothing
/// itself: fails on an error, or with errc::timed_out when a timed wait of
/// `timeout` moved no byte. A wait that moved some bytes starts a fresh
/// one, so a client that keeps reading, however slowly, is never cut off
/// (as with nginx's send_timeout), and one that stops is cut off one to two
/// times `timeout` after its last read. One loop timer per wait (a timeout
/// per partial send would cost an io_uring linked timeout per reply).
inline lev::Task<lev::Result<void>> send_rest_within(lev::Loop& loop, lev::FdRef fd,
                                                     std::string_view bytes,
                                                     lev::Result<std::size_t> first,
                                                     Millis timeout) {
  if (first)
    bytes.remove_prefix(*first);
  else if (first.error().code.value() != EAGAIN)
    co_return first.error();
  while (!bytes.empty()) {
    auto r = co_await loop.send_all(fd, bytes, lev::IoOptions{.timeout = timeout});
    if (r) co_return lev::Result<void>{};
    if (!r.error().is_timeout() || r.error().transferred == 0) co_return r.error();
    bytes.remove_prefix(r.error().transferred);
  }
  co_return lev::Result<void>{};
}

/// Sends every byte of `bytes` (see send_rest_within): the first attempt
/// takes what the socket has room for now, with no timer (MSG_DONTWAIT);
/// only a send that must wait arms one. A server's hot path can make that
/// first send itself and call send_rest_within only when it fell short
/// (echo_server, http_hello and resp_server do): a reply to a client
/// that reads is then one send, without a coroutine of its own.
inline lev::Task<lev::Result<void>> send_all_within(lev::Loop& loop, lev::FdRef fd,
                                                    std::string_view bytes, Millis timeout) {
  if (bytes.empty()) co_return lev::Result<void>{};
  auto now = co_await loop.send(fd, bytes, MSG_DONTWAIT);
  co_return co_await send_rest_within(loop, fd, bytes, std::move(now), timeout);
}

/// For a server that parses received bytes in place (loop.recv(fd)): the
/// start of a message that the next receive completes, kept between
/// receives. `bytes(fresh)` is what to parse: the fresh bytes alone when
/// nothing was kept (no copy), else the kept ones followed by them.
/// `keep(data, pos)` keeps what the parser left of `data` from `pos` on.
class Carry {
 public:
  std::string_view bytes(std::string_view fresh) {
    if (kept_.empty()) return fresh;
    kept_.append(fresh);
    return kept_;
  }
  void keep(std::string_view data, std::size_t pos) {
    if (pos == data.size()) {  // all taken (the common case): nothing to copy
      kept_.clear();
      return;
    }
    if (!kept_.empty() && data.data() == kept_.data())
      kept_.erase(0, pos);
    else
      kept_.assign(data.substr(pos));
  }
  [[nodiscard]] std::size_t size() const noexcept { return kept_.size(); }

 private:
  std::string kept_;
};

/// Lowers `max_clients` to what RLIMIT_NOFILE allows (raising the soft
/// limit first, as Redis does), keeping 32 descriptors for the server.
inline long fit_max_clients(const char* name, long max_clients) {
  constexpr long kReserved = 32;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return max_clients;
  const auto want = static_cast<rlim_t>(max_clients + kReserved);
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
    rlimit up = rl;
    up.rlim_cur = rl.rlim_max == RLIM_INFINITY ? want : std::min(want, rl.rlim_max);
    if (::setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
  }
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
    const long fit = std::max(1L, static_cast<long>(rl.rlim_cur) - kReserved);
    std::fprintf(stderr, "%s: RLIMIT_NOFILE is %llu: serving at most %ld clients, not %ld\n", name,
                 static_cast<unsigned long long>(rl.rlim_cur), fit, max_clients);
    return fit;
  }
  return max_clients;
}

/// Signals that would end a server by their default action although it
/// has no use for them (SIGUSR1, SIGUSR2, SIGALRM, SIGPIPE) are ignored.
inline void ignore_unused_signals() {
  for (int sig : {SIGUSR1, SIGUSR2, SIGALRM, SIGPIPE}) ::signal(sig, SIG_IGN);
}

/// The connections a server holds. It outlives the loop (run_server's
/// frame): the connections still open when the main task returns end when
/// lev::run's loop goes, and each counts itself out then.
struct Connections {
  long live = 0;
  bool full = false;  // said so on stderr; said again only after it drained
};

/// run_server's main task: serves on `loop` until `stop` (or --max-seconds),
/// then calls `on_stop` (if any) before it returns.
template <class Serve>
lev::Task<int> serve_until_stopped(lev::Loop& loop, std::stop_token stop, const char* name,
                                   const ServerArgs& args, Serve& serve,
                                   std::string_view busy_reply, long max_clients,
                                   std::function<void()>& on_stop, Connections& conns) {
  auto listener = lev::net::Listener::tcp("127.0.0.1", args.port, {.backlog = 4096}).value();
  std::printf("listening on %s\n", listener.address().to_string().c_str());
  std::fflush(stdout);

  long& live = conns.live;
  bool& full = conns.full;
  auto counted = [](lev::Task<> session, long& n) -> lev::Task<> {
    struct Leave {
      long& n;
      ~Leave() { --n; }
    } leave{n};
    co_await std::move(session);
  };
  // One coroutine per connection; EMFILE and friends back off inside.
  lev::net::Acceptor acceptor{loop, listener, [&](lev::Fd fd, lev::SocketAddress) -> lev::Task<> {
                                if (live >= max_clients) {
                                  if (!full)
                                    std::fprintf(stderr, "%s: %ld clients: refusing more\n", name,
                                                 live);
                                  full = true;
                                  if (!busy_reply.empty())
                                    (void)!::send(fd.get(), busy_reply.data(), busy_reply.size(),
                                                  MSG_DONTWAIT | MSG_NOSIGNAL);
                                  return [](lev::Fd) -> lev::Task<> { co_return; }(std::move(fd));
                                }
                                if (live < max_clients / 2 + 1) full = false;
                                ++live;
                                int one = 1;
                                ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                                return counted(serve(loop, std::move(fd)), live);
                              }};
  loop.spawn(acceptor.run());
  if (args.max_seconds > 0)
    (void)co_await lev::when_any(lev::until_stopped(stop),
                                 loop.sleep_for(std::chrono::seconds(args.max_seconds)));
  else
    co_await lev::until_stopped(stop);
  // At once, before the loop goes: what a server must stop doing now (chat
  // stops reading and broadcasting); lev::run's loop then cancels the
  // acceptor and the connections still open.
  if (on_stop) std::exchange(on_stop, nullptr)();
  co_return 0;
}

/// The one-loop TCP server every example server is: listens on
/// 127.0.0.1:--port (0: any), prints "listening on 127.0.0.1:PORT" first,
/// runs `serve(loop, fd)` per connection (TCP_NODELAY set), at most
/// --max-clients at once (a connection past the cap gets `busy_reply`, if
/// any, and is closed), stops on SIGINT / SIGTERM / SIGHUP (lev::run: a
/// server with no configuration to reload stops on a hang-up, gracefully)
/// or after --max-seconds, calling `on_stop` (if any) first, and says
/// "NAME: stopped" on stderr. Signals a server does not use are ignored
/// rather than left to kill it without that line. Returns the exit code.
template <class Serve>
int run_server(const char* name, const ServerArgs& args, Serve serve,
               std::string_view busy_reply = {}, std::function<void()> on_stop = {}) {
  const long max_clients = fit_max_clients(name, args.max_clients);
  ignore_unused_signals();
  Connections conns;
  const int code = lev::run(
      [&](lev::Loop& loop, std::stop_token stop) {
        return serve_until_stopped(loop, std::move(stop), name, args, serve, busy_reply,
                                   max_clients, on_stop, conns);
      },
      {.model = args.loop.loop_model(), .loop = args.loop.options()});
  std::fprintf(stderr, "%s: stopped\n", name);
  return code;
}

}  // namespace example
