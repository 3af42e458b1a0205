// Connect: getaddrinfo on a two-thread pool, results handed back through an
// eventfd read by the loop (so the coroutine resumes from the completion
// queue); then connect attempts under one deadline.
#include "lev/net/connect.hpp"

#include <netdb.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "lev/loop.hpp"

namespace lev::net {

namespace {

class ResolveCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "getaddrinfo"; }
  std::string message(int ev) const override { return ::gai_strerror(ev); }
};

// A tiny pool for blocking lookups. Threads are detached and live for the
// process; jobs hold everything they touch by shared_ptr.
class ResolverPool {
 public:
  static ResolverPool& instance() {
    static ResolverPool* pool = new ResolverPool;  // never destroyed: detached workers use it
    return *pool;
  }
  void post(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(job));
      if (idle_ == 0 && threads_ < kThreads) {
        ++threads_;
        std::thread([this] { work(); }).detach();
      }
    }
    cv_.notify_one();
  }

 private:
  static constexpr int kThreads = 2;
  void work() {
    std::unique_lock lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return !jobs_.empty(); });
      --idle_;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  int threads_ = 0;
  int idle_ = 0;
};

struct Lookup {
  std::string host;
  std::uint16_t port = 0;
  int rc = 0;
  std::vector<SocketAddress> out;
  Fd done{::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
};

}  // namespace

const std::error_category& resolve_category() noexcept {
  static const ResolveCategory cat;
  return cat;
}

Task<Result<std::vector<SocketAddress>>> resolve(Loop& loop, std::string host, std::uint16_t port) {
  if (auto numeric = SocketAddress::ip(host, port)) co_return std::vector<SocketAddress>{*numeric};
  auto job = std::make_shared<Lookup>();
  job->host = std::move(host);
  job->port = port;
  if (!job->done) co_return Error::from_errno(errno, "resolve: eventfd");
  ResolverPool::instance().post([job] {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;  // no AI_ADDRCONFIG: it hides localhost on loopback-only hosts
    addrinfo* res = nullptr;
    std::string service = std::to_string(job->port);
    job->rc = ::getaddrinfo(job->host.c_str(), service.c_str(), &hints, &res);
    for (addrinfo* ai = res; ai; ai = ai->ai_next)
      job->out.emplace_back(ai->ai_addr, ai->ai_addrlen);
    if (res) ::freeaddrinfo(res);
    std::uint64_t one = 1;
    (void)!::write(job->done.get(), &one, sizeof(one));  // publishes the result
  });
  std::uint64_t count = 0;
  auto r = co_await loop.read(job->done, std::span(reinterpret_cast<char*>(&count), sizeof(count)));
  if (!r) co_return Error{r.error().code, "resolve", -1, 0};
  if (job->rc != 0) co_return Error{std::error_code(job->rc, resolve_category()), "resolve", -1, 0};
  if (job->out.empty())
    co_return Error{std::error_code(EAI_NONAME, resolve_category()), "resolve", -1, 0};
  co_return std::move(job->out);
}

Task<Result<Fd>> connect(Loop& loop, std::string host, std::uint16_t port, ConnectOptions o) {
  const bool bounded = o.timeout > Duration::zero();
  const TimePoint deadline = loop.now() + o.timeout;
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
