// Connect: getaddrinfo through Loop::offload (the coroutine resumes from the
// completion queue); then connect attempts under one deadline.
#include "lev/net/connect.hpp"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>

#include "lev/loop.hpp"

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

Task<Result<std::vector<SocketAddress>>> resolve(Loop& loop, std::string host, std::uint16_t port) {
  if (auto numeric = SocketAddress::ip(host, port)) co_return std::vector<SocketAddress>{*numeric};
  std::vector<SocketAddress> out;
  const int rc = co_await loop.offload([&] {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;  // no AI_ADDRCONFIG: it hides localhost on loopback-only hosts
    addrinfo* res = nullptr;
    const std::string service = std::to_string(port);
    const int r = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
    for (addrinfo* ai = res; ai; ai = ai->ai_next) out.emplace_back(ai->ai_addr, ai->ai_addrlen);
    if (res) ::freeaddrinfo(res);
    return r;
  });
  if (rc != 0) co_return Error{std::error_code(rc, resolve_category()), "resolve", -1, 0};
  if (out.empty())
    co_return Error{std::error_code(EAI_NONAME, resolve_category()), "resolve", -1, 0};
  co_return out;
}

Task<Result<Fd>> connect(Loop& loop, std::string host, std::uint16_t port, ConnectOptions o) {
  const bool bounded = o.timeout > Duration::zero();
  const TimePoint deadline = saturating_add(loop.now(), o.timeout);
  auto addrs = co_await resolve(loop, std::move(host), port);
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
