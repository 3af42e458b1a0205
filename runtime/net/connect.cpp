// Connect: getaddrinfo on the offload pool (the coroutine resumes from the
// completion queue), then connect attempts, all under one deadline.
#include "lev/net/connect.hpp"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <utility>

#include "lev/channel.hpp"
#include "lev/loop.hpp"
#include "lev/when.hpp"

namespace lev::net {

namespace {

class ResolveCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "getaddrinfo"; }
  std::string message(int ev) const override { return ::gai_strerror(ev); }
};

}  // namespace

const std::error_category& resolve_category() noexcept {
  static const ResolveCategory cat;
  return cat;
}

namespace {

using Addresses = Result<std::vector<SocketAddress>>;

Addresses getaddrinfo_lookup(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;  // no AI_ADDRCONFIG: it hides localhost on loopback-only hosts
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  std::vector<SocketAddress> out;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) out.emplace_back(ai->ai_addr, ai->ai_addrlen);
  if (res) ::freeaddrinfo(res);
  if (rc != 0) return Error{std::error_code(rc, resolve_category()), "resolve", -1, 0};
  if (out.empty()) return Error{std::error_code(EAI_NONAME, resolve_category()), "resolve", -1, 0};
  return out;
}

// A lookup's answer, handed from the worker to the waiting task.
struct Answer {
  Addresses addresses;
};

}  // namespace

// The lookup runs on the offload pool as a job that owns everything it
// uses (host, resolver, the channel its answer goes to). The caller waits
// on the channel, so a stop request (a deadline, with_timeout) ends the
// wait at once: the job finishes in the background and its answer is
// dropped with the channel. The channel wakes the caller through the loop
// its task runs on (that is `loop`, as for every lev operation).
Task<Result<std::vector<SocketAddress>>> resolve([[maybe_unused]] Loop& loop, std::string host,
                                                 std::uint16_t port, Resolver resolver) {
  if (auto numeric = SocketAddress::ip(host, port)) co_return std::vector<SocketAddress>{*numeric};
  const std::string name = host;
  auto channel = std::make_shared<Channel<Answer>>(1);
  lev::detail::offload_run([channel, host = std::move(host), port, resolver = std::move(resolver)] {
    Answer a{Error{std::error_code(EAI_FAIL, resolve_category()), "resolve", -1, 0}};
    try {
      a.addresses = resolver ? resolver(host, port) : getaddrinfo_lookup(host, port);
    } catch (...) {  // reported as EAI_FAIL: the lookup failed for good
    }
    (void)channel->try_send(a);  // capacity 1, one send: always taken
  });
  auto got = co_await channel->receive();
  // Every error names the host ("resolve(nosuch.example): Name or service
  // not known"), a resolver's own too (unless it named something itself).
  if (!got) co_return Error{got.error().code, "resolve", -1, 0}.with_path(name);  // cancelled
  if (!got->addresses && !got->addresses.error().path)
    co_return got->addresses.error().with_path(name);
  co_return std::move(got->addresses);
}

Task<Result<Fd>> connect(Loop& loop, std::string host, std::uint16_t port, ConnectOptions o) {
  const bool bounded = o.timeout > Duration::zero();
  const TimePoint deadline = saturating_add(loop.now(), o.timeout);
  Result<std::vector<SocketAddress>> addrs = std::vector<SocketAddress>{};
  const std::string name = host;
  if (bounded) {  // the deadline covers the lookup (no co_await inside ?: with GCC 12)
    addrs = co_await with_timeout(loop, resolve(loop, std::move(host), port, std::move(o.resolver)),
                                  o.timeout);
    if (!addrs && addrs.error().is_timeout())
      co_return Error{std::make_error_code(std::errc::timed_out), "connect (resolving)", -1, 0}
          .with_path(name);
  } else {
    addrs = co_await resolve(loop, std::move(host), port, std::move(o.resolver));
  }
  if (!addrs) co_return addrs.error();
  Error last = Error{std::make_error_code(std::errc::host_unreachable), "connect", -1, 0};
  for (const SocketAddress& a : *addrs) {
    if (bounded && loop.now() >= deadline)
      co_return Error{std::make_error_code(std::errc::timed_out), "connect", -1, 0};
    Fd s{::socket(a.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
    if (!s) {
      last = Error::from_errno(errno, "socket");
      continue;
    }
    auto&& attempt = loop.connect(s, a);
    bool timed_out = false;
    Operation timer;
    if (bounded) {
      lev::detail::OpBase* op = &attempt.op();
      timer = loop.at(deadline, [&loop, op, &timed_out](Operation&, Result<Expired> r) {
        if (!r) return;  // disarmed: the connect finished first
        timed_out = true;
        loop.cancel(*op);
      });
    }
    auto r = co_await attempt;
    timer.cancel();
    if (r) co_return std::move(s);
    if (timed_out)
      co_return Error{std::make_error_code(std::errc::timed_out), "connect", s.get(), 0};
    last = r.error();
  }
  co_return last;
}

}  // namespace lev::net
