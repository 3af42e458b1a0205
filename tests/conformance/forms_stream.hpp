#pragma once
// The forms of the ops every fd has and of stream sockets (lev/detail/ops/basic.hpp, socket.hpp)
// (see forms.hpp for what a form is).
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

#include "conformance/form_base.hpp"
#include "lev/fake.hpp"
#include "lev/loop.hpp"

namespace lev::conformance {

// ---- basic.hpp ------------------------------------------------------------

struct NopForm : FormBase {
  using Desc = detail::NopOp;
  static constexpr const char* name = "nop()";
  using FormBase::FormBase;
  auto make(Loop& loop, Timeout t) { return loop.make_until<Desc>(t, -1); }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

/// Reads a pipe until unblock() writes into it.
struct ReadPipeForm : SourceForm {
  using Desc = detail::ReadOp;
  static constexpr const char* name = "read(pipe)";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  std::array<char, 64> buf{};
  explicit ReadPipeForm(Env& e) : SourceForm(e, Source::pipe, "read-me-please") {}
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, src.op_end, buf.data(), buf.size(), std::uint64_t(-1));
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r ? got_wrong("read", std::string_view(buf.data(), *r)) : "");
  }
};

/// write_all into a full pipe until unblock() drains it.
struct WriteAllPipeForm : SinkForm {
  using Desc = detail::WriteOp;
  static constexpr const char* name = "write_all(pipe)";
  static constexpr bool pends = true, has_fd = true, effect_known = true;
  static constexpr std::string_view kData = "written-by-write-all";
  explicit WriteAllPipeForm(Env& e) : SinkForm(e, Sink::pipe) {}
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, sink.op_end, kData.data(), kData.size(), std::uint64_t(-1),
                                 true);
  }
  Outcome outcome(Result<std::size_t>& r) { return count_outcome(r, kData.size(), "wrote"); }
  std::string effect_wrong() { return sink_wrong(kData, "the pipe"); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(op.len));
  }
};

/// close(fd) of a pipe's read end: never cancelled, the fd always closed.
struct CloseForm : FormBase {
  using Desc = detail::CloseOp;
  static constexpr const char* name = "close(pipe)";
  static constexpr bool effect_known = true, never_cancelled = true;
  Fd r, w;
  int number;
  explicit CloseForm(Env& e) : FormBase(e) {
    std::tie(r, w) = make_pipe();
    number = r.release();  // the op owns it from now on
  }
  auto make(Loop& loop, Timeout t) { return loop.make_until<Desc>(t, number); }
  Outcome outcome(Result<void>& res) { return outcome_of(res); }
  bool effect() { return ::fcntl(number, F_GETFD) == -1; }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    ::close(op.fd);  // what the kernel would do
    f.complete(op, 0);
  }
  /// A row that never ran the close (its loop failed first) leaves the
  /// number open: closed here, after the loop (nothing reuses it meanwhile).
  ~CloseForm() {
    if (::fcntl(number, F_GETFD) != -1) ::close(number);
  }
};

/// readable(pipe): a poll until unblock() writes into it.
struct PollForm : SourceForm {
  using Desc = detail::PollOp;
  static constexpr const char* name = "readable(pipe)";
  static constexpr bool again = true, pends = true, has_fd = true;
  explicit PollForm(Env& e) : SourceForm(e, Source::pipe, "poll-me") {}
  auto make(Loop& loop, Timeout t) { return loop.readable(src.op_end, t); }
  Outcome outcome(Result<unsigned>& r) {
    return outcome_of(r, r && !(*r & POLLIN) ? "revents " + std::to_string(*r) : "");
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, POLLIN); }
};

// ---- socket.hpp -----------------------------------------------------------

/// recv(fd, buf) on a stream socket until unblock() sends.
struct RecvForm : SourceForm {
  using Desc = detail::RecvOp;
  static constexpr const char* name = "recv(socket, buf)";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  std::array<char, 64> buf{};
  explicit RecvForm(Env& e) : SourceForm(e, Source::stream, "received-bytes") {}
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, src.op_end, buf.data(), buf.size(), 0);
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r ? got_wrong("received", std::string_view(buf.data(), *r)) : "");
  }
};

/// recv(fd) into a buffer of the loop's pool (io_uring: the provided-buffer
/// ring, multishot or one-shot by the engine variant).
struct RecvPoolForm : SourceForm {
  using Desc = detail::RecvOp;
  static constexpr const char* name = "recv(socket) pool";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  explicit RecvPoolForm(Env& e) : SourceForm(e, Source::stream, "pool-bytes") {}
  auto make(Loop& loop, Timeout t) { return loop.recv(src.op_end, IoOptions{.timeout = t}); }
  /// Lets go of the multishot recv (armed while the fd is open, by design).
  void quiesce() { src.op_end.reset(); }
  Outcome outcome(Result<Buffer>& r) {
    return outcome_of(r, r ? got_wrong("received", r->view()) : "");
  }
};

/// send_all into a full stream socket until unblock() drains the peer.
struct SendAllForm : SinkForm {
  using Desc = detail::SendOp;
  static constexpr const char* name = "send_all(socket)";
  static constexpr bool pends = true, has_fd = true, effect_known = true;
  std::string data = std::string(1000, 'S');
  explicit SendAllForm(Env& e) : SinkForm(e, Sink::stream) {}
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, sink.op_end, data.data(), data.size(), 0, true);
  }
  Outcome outcome(Result<std::size_t>& r) { return count_outcome(r, data.size(), "sent"); }
  std::string effect_wrong() {
    for (int i = 0; i < 100 && sink.got.size() < data.size(); ++i) sink.drain();
    return sink.got == data ? "" : "the peer got " + std::to_string(sink.got.size()) + " bytes";
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(op.len));
  }
};

/// accept on a TCP listener until unblock() connects to it.
struct AcceptForm : FormBase {
  using Desc = detail::AcceptOp;
  static constexpr const char* name = "accept(tcp)";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  Fd listener;
  SocketAddress addr;
  std::vector<Fd> clients;
  std::vector<Fd> old;
  explicit AcceptForm(Env& e) : FormBase(e) { std::tie(listener, addr) = listen(); }
  static std::pair<Fd, SocketAddress> listen() {
    Fd s{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    auto any = *SocketAddress::ip("127.0.0.1", 0);
    if (!s || ::bind(s.get(), any.data(), any.size()) != 0 || ::listen(s.get(), 8) != 0)
      fail_errno("conformance: listen");
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    return {std::move(s), SocketAddress{reinterpret_cast<sockaddr*>(&ss), len}};
  }
  void connect_to(const SocketAddress& to) {
    Fd c{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (!c || ::connect(c.get(), to.data(), to.size()) != 0) fail_errno("conformance: connect");
    clients.push_back(std::move(c));
  }
  /// Whether a connection waits in the listener's queue.
  bool queued() {
    pollfd p{listener.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  }
  auto make(Loop& loop, Timeout t) { return loop.make_until<Desc>(t, listener); }
  Outcome outcome(Result<Accepted>& r) {
    std::string wrong;
    if (r && (!r->fd || (!env.fake && r->peer.port() == 0))) wrong = "no fd or no peer";
    return outcome_of(r, wrong);  // the accepted Fd closes with `r`
  }
  void unblock() { connect_to(addr); }
  bool effect() { return !clients.empty() && !queued(); }
  Fd release_fd() { return std::move(listener); }
  void reuse(int n) {
    auto [l, a] = listen();
    listener = at_number(std::move(l), n);
    addr = a;
    connect_to(a);
  }
  std::string reuse_wrong() {
    return queued() ? "" : "the new listener at the old number lost its connection";
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    auto [a, b] = make_socketpair(SOCK_STREAM);
    old.push_back(std::move(b));
    f.complete(op, a.release());  // the loop owns it now
  }
};

/// connect to a listener whose queue is full: the SYN is dropped and the
/// connect waits (seconds: the retransmission). No unblock(): rows that
/// need one end it otherwise; rows that complete it connect elsewhere.
struct ConnectForm : FormBase {
  using Desc = detail::ConnectOp;
  static constexpr const char* name = "connect(tcp)";
  static constexpr bool pends = true, has_fd = true, again_after_reuse = true;
  Fd full, filler, sock, open_listener;
  SocketAddress full_addr, open_addr;
  std::vector<Fd> old;
  explicit ConnectForm(Env& e) : FormBase(e) {
    std::tie(full, full_addr) = listen(0);
    filler = Fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (::connect(filler.get(), full_addr.data(), full_addr.size()) != 0)
      fail_errno("conformance: connect");  // backlog 0 holds one: the queue is full now
    std::tie(open_listener, open_addr) = listen(8);
    sock = Fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)};
  }
  static std::pair<Fd, SocketAddress> listen(int backlog) {
    Fd s{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    auto any = *SocketAddress::ip("127.0.0.1", 0);
    if (!s || ::bind(s.get(), any.data(), any.size()) != 0 || ::listen(s.get(), backlog) != 0)
      fail_errno("conformance: listen");
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    return {std::move(s), SocketAddress{reinterpret_cast<sockaddr*>(&ss), len}};
  }
  /// `complete`: rows that want it to succeed connect to a listener with room.
  bool complete = false;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, sock, complete ? open_addr : full_addr);
  }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  Fd release_fd() { return std::move(sock); }
  void reuse(int n) {
    sock = at_number(Fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)}, n);
  }
  std::string reuse_wrong() {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (::getpeername(sock.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0)
      return "the new socket at the old number got connected by the old op";
    return {};
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

/// shutdown(SHUT_WR) of a connected stream socket: the peer sees EOF.
struct ShutdownForm : FormBase {
  using Desc = detail::ShutdownOp;
  static constexpr const char* name = "shutdown(socket)";
  static constexpr bool has_fd = true, effect_known = true;
  Fd a, b;
  std::vector<Fd> old;
  explicit ShutdownForm(Env& e) : FormBase(e) { std::tie(a, b) = make_socketpair(SOCK_STREAM); }
  auto make(Loop& loop, Timeout t) { return loop.make_until<Desc>(t, a, int{SHUT_WR}); }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  bool effect() {
    char c;
    return ::recv(b.get(), &c, 1, MSG_DONTWAIT) == 0;  // EOF
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    ::shutdown(op.fd, SHUT_WR);
    f.complete(op, 0);
  }
};

}  // namespace lev::conformance
