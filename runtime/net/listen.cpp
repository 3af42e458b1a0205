#include "lev/net/listen.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <coroutine>
#include <deque>
#include <optional>
#include <utility>

#include "lev/log.hpp"
#include "lev/loop.hpp"

namespace lev::net {

namespace {

Error sys_error(const char* op, int fd, int err = errno) {
  return Error{std::error_code(err, std::system_category()), op, fd, 0};
}

Result<Fd> open_listening(const SocketAddress& addr, const ListenOptions& o) {
  Fd s{::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (!s) return sys_error("socket", -1);
  int one = 1;
  if (addr.family() != AF_UNIX) {
    if (o.reuse_addr) ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (o.reuse_port && ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
      return sys_error("setsockopt(SO_REUSEPORT)", s.get());
  }
  if (::bind(s.get(), addr.data(), addr.size()) != 0) return sys_error("bind", s.get());
  if (::listen(s.get(), o.backlog) != 0) return sys_error("listen", s.get());
  return s;
}

SocketAddress bound_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return SocketAddress{reinterpret_cast<sockaddr*>(&ss), len};
}

}  // namespace

Result<Listener> Listener::tcp(std::string_view host, std::uint16_t port, ListenOptions o) {
  std::string_view h = host;
  if (h.empty()) h = "0.0.0.0";
  if (h == "localhost") h = "127.0.0.1";
  auto addr = SocketAddress::ip(h, port);
  if (!addr)
    return Error{std::make_error_code(std::errc::invalid_argument), "listen: not a numeric address",
                 -1, 0};
  auto s = open_listening(*addr, o);
  if (!s) return s.error();
  Listener l;
  l.fd_ = std::move(*s);
  l.address_ = bound_address(l.fd_.get());
  return l;
}

Result<Listener> Listener::unix_socket(std::string_view path, ListenOptions o) {
  auto addr = SocketAddress::unix_path(path);
  if (!addr)
    return Error{std::make_error_code(std::errc::filename_too_long), "listen: unix path", -1, 0};
  std::string p(path);
  struct stat st {};
  if (::lstat(p.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Error{std::make_error_code(std::errc::file_exists), "listen: path is not a socket", -1,
                   0};
    // Stale (nobody accepts) or live? Ask it, without waiting: a live
    // server with a full backlog answers EAGAIN, a stale file ECONNREFUSED.
    Fd probe{::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
    if (!probe) return sys_error("socket", -1);
    if (::connect(probe.get(), addr->data(), addr->size()) == 0 || errno == EAGAIN ||
        errno == EINPROGRESS)
      return Error{std::make_error_code(std::errc::address_in_use), "listen: unix socket in use",
                   -1, 0};
    if (errno != ECONNREFUSED) return sys_error("listen: probing the unix socket", -1);
    ::unlink(p.c_str());
  }
  auto s = open_listening(*addr, o);
  if (!s) return s.error();
  Listener l;
  l.fd_ = std::move(*s);
  l.address_ = *addr;
  l.unix_path_ = std::move(p);
  return l;
}

Listener::Listener(Listener&& o) noexcept
    : fd_(std::move(o.fd_)),
      address_(std::move(o.address_)),
      unix_path_(std::exchange(o.unix_path_, {})) {}

Listener& Listener::operator=(Listener&& o) noexcept {
  if (this != &o) {
    if (fd_ && !unix_path_.empty()) ::unlink(unix_path_.c_str());  // as ~Listener does
    fd_ = std::move(o.fd_);
    address_ = std::move(o.address_);
    unix_path_ = std::exchange(o.unix_path_, {});
  }
  return *this;
}

Listener::~Listener() {
  if (fd_ && !unix_path_.empty()) ::unlink(unix_path_.c_str());
}

// ---------------------------------------------------------------- Acceptor

namespace detail {

// What the accept loop and the connection tasks share with the Acceptor:
// each holds a reference, so none of them depends on the Acceptor object.
struct AcceptorState {
  AcceptorState(Loop& l, int f, Acceptor::Handler h) : loop(l), fd(f), handler(std::move(h)) {}
  Loop& loop;
  int fd;
  Acceptor::Handler handler;
  lev::detail::OpBase* pending = nullptr;  // the accept (or back-off timer) stop() cancels
  bool stopping = false;
  std::size_t accepted = 0;
  std::size_t resource_errors = 0;
  std::size_t multishot_arms = 0;

  bool backoff_on(int err, bool& reported) {  // true: a resource error (back off)
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) return false;
    ++resource_errors;
    if (!reported)
      log_message(LogLevel::warning, "accept on fd " + std::to_string(fd) + ": " +
                                         std::generic_category().message(err) + "; backing off");
    reported = true;
    return true;
  }
};

}  // namespace detail

namespace {

using State = std::shared_ptr<detail::AcceptorState>;

// One connection: the handler is called here, inside a task that holds the
// shared state, so the handler's captures outlive every coroutine it made.
// Whatever it throws (also before it returns its task) ends this task
// only, and is reported as an escaped task exception.
Task<> serve(State s, Fd fd, SocketAddress peer) {
  Task<> handler = s->handler(std::move(fd), peer);
  co_await std::move(handler);
}

// Points `pending` (what stop() cancels) at an op for as long as the scope
// lives, then restores the outer one (a back-off inside the multishot loop):
// a frame destroyed while it waits (a loop torn down, a parent task dropped)
// leaves no pointer into freed memory for ~Acceptor to cancel.
class PendingOp {
 public:
  PendingOp(const State& s, lev::detail::OpBase& op)
      : s_(*s), outer_(std::exchange(s_.pending, &op)) {}
  PendingOp(const PendingOp&) = delete;
  PendingOp& operator=(const PendingOp&) = delete;
  ~PendingOp() { s_.pending = outer_; }

 private:
  detail::AcceptorState& s_;
  lev::detail::OpBase* outer_;
};

// Waits `d` in a way stop() can cut short.
Task<> back_off(const State& s, std::chrono::milliseconds d) {
  auto&& sleep = s->loop.after(d);
  const PendingOp pending(s, sleep.op());
  (void)co_await sleep;
}

Task<> run_single(State s) {
  auto backoff = std::chrono::milliseconds(10);
  bool reported = false;
  while (!s->stopping) {
    auto&& accept = s->loop.accept(s->fd);
    std::optional<PendingOp> pending(std::in_place, s, accept.op());
    auto conn = co_await accept;
    pending.reset();
    if (s->stopping) break;  // a connection accepted meanwhile closes with `conn`
    if (conn) {
      ++s->accepted;
      backoff = std::chrono::milliseconds(10);
      reported = false;
      s->loop.spawn(serve(s, std::move(conn->fd), conn->peer));
      continue;
    }
    const int err = conn.error().code.value();
    if (s->backoff_on(err, reported)) {
      co_await back_off(s, backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
      continue;
    }
    if (err == ECONNABORTED || err == EINTR || err == EPROTO) continue;  // the peer gave up
    log_message(LogLevel::error, "accept on fd " + std::to_string(s->fd) + ": " +
                                     conn.error().code.message() + "; accept loop ends");
    break;
  }
}

// One multishot accept: the kernel posts a CQE per connection (F_MORE set
// while it stays armed). Intermediate results are queued here by the
// backend's reap (MoreFn); the consumer is resumed through a post op, from
// the completion queue. The op's final completion (F_MORE clear: an error,
// a cancellation, or the kernel ending it) is delivered as usual.
struct MultiAccept {
  Loop& loop;
  lev::detail::OpBase op;
  lev::detail::OpBase wake;  // resumes `waiter` from the queue
  std::deque<int> ready;     // accepted fds (or -errno) not yet handed out
  std::coroutine_handle<> waiter;
  bool ended = true;
  int end_res = 0;

  MultiAccept(Loop& l, int lfd) : loop(l) {
    op.kind = lev::detail::OpKind::accept;
    op.fd = lfd;
    op.flags = lev::detail::kAcceptMultishot;
    op.args = nullptr;  // no peer addresses (AcceptOp)
    op.ctx = this;
    op.deliver = &finished;
    op.more = &more;
    wake.kind = lev::detail::OpKind::post;
  }
  MultiAccept(const MultiAccept&) = delete;
  MultiAccept& operator=(const MultiAccept&) = delete;
  ~MultiAccept() {
    waiter = nullptr;
    if (static_cast<unsigned>(op.state) - 1u < 2u) loop.abandon(op);  // cancel, wait, settle
    if (static_cast<unsigned>(wake.state) - 1u < 2u) loop.abandon(wake);
    for (int fd : ready)
      if (fd >= 0) Fd{fd};  // closes (and tells epoll engines)
  }
  void arm() {
    ended = false;
    loop.start(op);
  }
  void resume_waiter() {
    if (!waiter || wake.state == lev::detail::OpState::submitted ||
        wake.state == lev::detail::OpState::completed)
      return;
    wake.ctx = std::exchange(waiter, nullptr).address();
    wake.deliver = nullptr;
    loop.start(wake);  // a post: queued, resumed by the next drain
  }
  static void more(lev::detail::OpBase& o, int res, std::uint32_t) noexcept {
    auto* self = static_cast<MultiAccept*>(o.ctx);
    try {
      self->ready.push_back(res);
    } catch (...) {
      if (res >= 0) Fd{res};  // out of memory: drop this connection, never leak it
      return;
    }
    self->resume_waiter();
  }
  static void finished(lev::detail::OpBase& o) {
    auto* self = static_cast<MultiAccept*>(o.ctx);
    self->ended = true;
    self->end_res = o.res;
    if (o.res >= 0) {  // a last connection came with the end
      self->ready.push_back(o.res);
      self->end_res = 0;
    }
    if (self->waiter) std::exchange(self->waiter, nullptr).resume();  // we are in the drain
  }
  auto next() noexcept {
    struct Awaiter {
      MultiAccept& m;
      bool await_ready() const noexcept { return !m.ready.empty() || m.ended; }
      void await_suspend(std::coroutine_handle<> h) noexcept { m.waiter = h; }
      void await_resume() const noexcept {}
    };
    return Awaiter{*this};
  }
};

SocketAddress peer_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return SocketAddress{};
  return SocketAddress{reinterpret_cast<sockaddr*>(&ss), len};
}

Task<> run_multishot(State s) {
  MultiAccept m(s->loop, s->fd);
  auto backoff = std::chrono::milliseconds(10);
  bool reported = false;
  const PendingOp pending(s, m.op);
  m.arm();
  ++s->multishot_arms;
  while (!s->stopping) {
    co_await m.next();
    if (s->stopping) break;
    if (!m.ready.empty()) {
      const int res = m.ready.front();
      m.ready.pop_front();
      if (res < 0) continue;  // a failed accept that did not end the multishot
      ++s->accepted;
      backoff = std::chrono::milliseconds(10);
      reported = false;
      s->loop.spawn(serve(s, Fd{res}, peer_of(res)));
      continue;
    }
    // The multishot ended: re-arm it, after a back-off on resource errors.
    const int err = -m.end_res;
    if (err == EINVAL && s->accepted == 0 && s->multishot_arms == 1) {  // no multishot accept here
      s->pending = nullptr;
      co_await run_single(s);
      co_return;
    }
    if (m.end_res != 0 && s->backoff_on(err, reported)) {
      co_await back_off(s, backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    } else if (m.end_res != 0 && err != ECONNABORTED && err != EINTR && err != EPROTO &&
               err != ECANCELED) {
      log_message(LogLevel::error, "accept on fd " + std::to_string(s->fd) + ": " +
                                       std::generic_category().message(err) + "; accept loop ends");
      break;
    }
    if (s->stopping) break;
    m.arm();
    ++s->multishot_arms;
  }
}

Task<> run_accept_loop(State s) {
  if (s->loop.features().multishot_accept)
    co_await run_multishot(s);
  else
    co_await run_single(s);
}

}  // namespace

Acceptor::Acceptor(Loop& loop, const Listener& listener, Handler handler)
    : Acceptor(loop, listener.fd(), std::move(handler)) {}

Acceptor::Acceptor(Loop& loop, int listening_fd, Handler handler)
    : s_(std::make_shared<detail::AcceptorState>(loop, listening_fd, std::move(handler))) {}

Acceptor::~Acceptor() { stop(); }

void Acceptor::stop() {
  s_->stopping = true;
  if (s_->pending) s_->loop.cancel(*s_->pending);
}

Task<> Acceptor::run() { return run_accept_loop(s_); }

std::size_t Acceptor::accepted() const noexcept { return s_->accepted; }
std::size_t Acceptor::resource_errors() const noexcept { return s_->resource_errors; }
std::size_t Acceptor::multishot_arms() const noexcept { return s_->multishot_arms; }

}  // namespace lev::net
