#pragma once
// The conformance suite's fixtures: for every op kind of lev::detail::AllOps,
// one or more forms (the op as a user starts it, on something it can run
// on). `Forms<D>` lists a kind's forms; a kind without an entry does not
// compile (see conformance_test.cpp's static_assert), so a new op cannot
// join AllOps without joining the matrix.
//
// A form says what it can do (the flags of FormBase) and provides:
//   using Desc;  static constexpr const char* name;
//   auto make(Loop&, Timeout)           the awaitable (prvalue); a timeout: {.timeout}
//   Outcome outcome(Result<...>&)       the result, its value checked
//   void fake_complete(FakeBackend&, detail::OpBase&)   completes it on the fake
// and, as its flags say, unblock() / effect() / effect_wrong() / unstick()
// / release_fd() + reuse() + reuse_wrong().
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

#include "conformance/world.hpp"
#include "lev/fake.hpp"
#include "lev/loop.hpp"
#include "lev/net/datagram.hpp"

namespace lev::conformance {

using Timeout = std::optional<Duration>;

/// The flags and hooks a form does not need (each form overrides what it has).
struct FormBase {
  /// A real engine holds it in flight until unblock().
  static constexpr bool pends = false;
  /// The epoll engine runs it on a file worker.
  static constexpr bool on_worker = false;
  /// ...and it blocks the worker until unblock().
  static constexpr bool stuck_on_worker = false;
  /// It works on an fd a row can close (release_fd) and reuse (reuse).
  static constexpr bool has_fd = false;
  /// effect() says whether it took effect (a real engine; never the fake).
  static constexpr bool effect_known = false;
  /// It may block a thread (a worker, the loop): rows run a watchdog that
  /// calls unstick() and fail the row when it had to.
  static constexpr bool may_stick = false;
  /// After a cancel and unblock(), a fresh op gets what unblock() provided
  /// (nothing was lost: checked by running one).
  static constexpr bool again = false;
  /// Never cancelled (close): it always takes effect.
  static constexpr bool never_cancelled = false;
  /// After its fd was closed and the number reused, one op of the form on
  /// the new fd completes at once (connect: on a fresh socket).
  static constexpr bool again_after_reuse = false;

  explicit FormBase(Env& e) : env(e) {}
  Env& env;
  void unblock() {}
  bool effect() { return false; }
  std::string effect_wrong() { return {}; }
  bool unstick() { return false; }
  Fd release_fd() { return {}; }
  void reuse(int) {}
  std::string reuse_wrong() { return {}; }
  std::string skip(Loop&) { return {}; }
};

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
struct ReadPipeForm : FormBase {
  using Desc = detail::ReadOp;
  static constexpr const char* name = "read(pipe)";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  Source src{Source::pipe, "read-me-please"};
  std::array<char, 64> buf{};
  using FormBase::FormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, src.op_end, buf.data(), buf.size(), std::uint64_t(-1));
  }
  Outcome outcome(Result<std::size_t>& r) {
    std::string wrong;
    if (r && std::string_view(buf.data(), *r) != src.payload)
      wrong = "read \"" + std::string(buf.data(), *r) + "\"";
    return outcome_of(r, wrong);
  }
  void unblock() { src.inject(); }
  bool effect() { return src.consumed(); }
  Fd release_fd() { return std::move(src.op_end); }
  void reuse(int n) { src.reuse(n); }
  std::string reuse_wrong() { return src.reuse_wrong(); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete_with_data(op, src.payload); }
};

/// write_all into a full pipe until unblock() drains it.
struct WriteAllPipeForm : FormBase {
  using Desc = detail::WriteOp;
  static constexpr const char* name = "write_all(pipe)";
  static constexpr bool pends = true, has_fd = true, effect_known = true;
  static constexpr std::string_view kData = "written-by-write-all";
  Sink sink{Sink::pipe};
  using FormBase::FormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, sink.op_end, kData.data(), kData.size(), std::uint64_t(-1),
                                 true);
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r && *r != kData.size() ? "wrote " + std::to_string(*r) : "");
  }
  void unblock() { sink.drain(); }
  bool effect() {
    sink.drain();
    return !sink.got.empty();
  }
  std::string effect_wrong() {
    return sink.got == kData ? "" : "the pipe got \"" + sink.got + "\"";
  }
  Fd release_fd() { return std::move(sink.op_end); }
  void reuse(int n) { sink.reuse(n); }
  std::string reuse_wrong() { return sink.reuse_wrong(); }
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
struct PollForm : FormBase {
  using Desc = detail::PollOp;
  static constexpr const char* name = "readable(pipe)";
  static constexpr bool again = true, pends = true, has_fd = true;
  Source src{Source::pipe, "poll-me"};
  using FormBase::FormBase;
  auto make(Loop& loop, Timeout t) { return loop.readable(src.op_end, t); }
  Outcome outcome(Result<unsigned>& r) {
    return outcome_of(r, r && !(*r & POLLIN) ? "revents " + std::to_string(*r) : "");
  }
  void unblock() { src.inject(); }
  Fd release_fd() { return std::move(src.op_end); }
  void reuse(int n) { src.reuse(n); }
  std::string reuse_wrong() { return src.reuse_wrong(); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, POLLIN); }
};

// ---- socket.hpp -----------------------------------------------------------

/// recv(fd, buf) on a stream socket until unblock() sends.
struct RecvForm : FormBase {
  using Desc = detail::RecvOp;
  static constexpr const char* name = "recv(socket, buf)";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  Source src{Source::stream, "received-bytes"};
  std::array<char, 64> buf{};
  using FormBase::FormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, src.op_end, buf.data(), buf.size(), 0);
  }
  Outcome outcome(Result<std::size_t>& r) {
    std::string wrong;
    if (r && std::string_view(buf.data(), *r) != src.payload)
      wrong = "received \"" + std::string(buf.data(), *r) + "\"";
    return outcome_of(r, wrong);
  }
  void unblock() { src.inject(); }
  bool effect() { return src.consumed(); }
  Fd release_fd() { return std::move(src.op_end); }
  void reuse(int n) { src.reuse(n); }
  std::string reuse_wrong() { return src.reuse_wrong(); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete_with_data(op, src.payload); }
};

/// recv(fd) into a buffer of the loop's pool (io_uring: the provided-buffer
/// ring, multishot or one-shot by the engine variant).
struct RecvPoolForm : FormBase {
  using Desc = detail::RecvOp;
  static constexpr const char* name = "recv(socket) pool";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  Source src{Source::stream, "pool-bytes"};
  using FormBase::FormBase;
  auto make(Loop& loop, Timeout t) { return loop.recv(src.op_end, IoOptions{.timeout = t}); }
  /// Lets go of the multishot recv (armed while the fd is open, by design).
  void quiesce() { src.op_end.reset(); }
  Outcome outcome(Result<Buffer>& r) {
    std::string wrong;
    if (r && r->view() != src.payload) wrong = "received \"" + std::string(r->view()) + "\"";
    return outcome_of(r, wrong);
  }
  void unblock() { src.inject(); }
  bool effect() { return src.consumed(); }
  Fd release_fd() { return std::move(src.op_end); }
  void reuse(int n) { src.reuse(n); }
  std::string reuse_wrong() { return src.reuse_wrong(); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete_with_data(op, src.payload); }
};

/// send_all into a full stream socket until unblock() drains the peer.
struct SendAllForm : FormBase {
  using Desc = detail::SendOp;
  static constexpr const char* name = "send_all(socket)";
  static constexpr bool pends = true, has_fd = true, effect_known = true;
  std::string data = std::string(1000, 'S');
  Sink sink{Sink::stream};
  using FormBase::FormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, sink.op_end, data.data(), data.size(), 0, true);
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r && *r != data.size() ? "sent " + std::to_string(*r) : "");
  }
  void unblock() { sink.drain(); }
  bool effect() {
    sink.drain();
    return !sink.got.empty();
  }
  std::string effect_wrong() {
    for (int i = 0; i < 100 && sink.got.size() < data.size(); ++i) sink.drain();
    return sink.got == data ? "" : "the peer got " + std::to_string(sink.got.size()) + " bytes";
  }
  Fd release_fd() { return std::move(sink.op_end); }
  void reuse(int n) { sink.reuse(n); }
  std::string reuse_wrong() { return sink.reuse_wrong(); }
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

// ---- vectored.hpp ---------------------------------------------------------

/// readv into two buffers from a pipe until unblock() writes into it.
struct ReadvPipeForm : FormBase {
  using Desc = detail::ReadvOp;
  static constexpr const char* name = "readv(pipe)";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  Source src{Source::pipe, "scattered-into-two"};
  std::array<char, 9> one{};
  std::array<char, 32> two{};
  std::array<iovec, 2> iov{iovec{one.data(), one.size()}, iovec{two.data(), two.size()}};
  using FormBase::FormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, src.op_end, std::span<const iovec>(iov), std::uint64_t(-1));
  }
  [[nodiscard]] std::string joined(std::size_t n) const {
    std::string s(one.data(), std::min(n, one.size()));
    if (n > one.size()) s.append(two.data(), n - one.size());
    return s;
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r && joined(*r) != src.payload ? "read \"" + joined(*r) + "\"" : "");
  }
  void unblock() { src.inject(); }
  bool effect() { return src.consumed(); }
  Fd release_fd() { return std::move(src.op_end); }
  void reuse(int n) { src.reuse(n); }
  std::string reuse_wrong() { return src.reuse_wrong(); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    // The fake copies into a read/recv buffer only: a test fills iovecs itself.
    const std::string& p = src.payload;
    std::memcpy(one.data(), p.data(), one.size());
    std::memcpy(two.data(), p.data() + one.size(), p.size() - one.size());
    f.complete(op, static_cast<int>(p.size()));
  }
};

/// writev_all of three pieces into a full pipe until unblock() drains it
/// (the awaiter copies the iovecs: defect 1 of issue 20 is about that copy).
struct WritevAllPipeForm : FormBase {
  using Desc = detail::WritevOp;
  static constexpr const char* name = "writev_all(pipe)";
  static constexpr bool pends = true, has_fd = true, effect_known = true;
  static constexpr std::string_view kA = "gathered-", kB = "from-", kC = "three";
  Sink sink{Sink::pipe};
  bool first_fake = true;
  using FormBase::FormBase;
  auto make(Loop& loop, Timeout t) {
    // The iovecs are a local array: writev_all copies them (its contract).
    const std::array<iovec, 3> iov{iovec{const_cast<char*>(kA.data()), kA.size()},
                                   iovec{const_cast<char*>(kB.data()), kB.size()},
                                   iovec{const_cast<char*>(kC.data()), kC.size()}};
    return loop.make_until<Desc>(t, sink.op_end, std::span<const iovec>(iov), std::uint64_t(-1),
                                 true, &loop);
  }
  static std::string all() { return std::string(kA) + std::string(kB) + std::string(kC); }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r && *r != all().size() ? "wrote " + std::to_string(*r) : "");
  }
  void unblock() { sink.drain(); }
  bool effect() {
    sink.drain();
    return !sink.got.empty();
  }
  std::string effect_wrong() {
    return sink.got == all() ? "" : "the pipe got \"" + sink.got + "\"";
  }
  Fd release_fd() { return std::move(sink.op_end); }
  void reuse(int n) { sink.reuse(n); }
  std::string reuse_wrong() { return sink.reuse_wrong(); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    // A partial write first, so that the continuation walks the iovec copy.
    const int rest = static_cast<int>(op.total - op.done);
    f.complete(op, std::exchange(first_fake, false) ? 4 : rest);
  }
};

/// splice from an empty pipe into another until unblock() fills the first.
struct SplicePipeForm : FormBase {
  using Desc = detail::SpliceOp;
  static constexpr const char* name = "splice(pipe->pipe)";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  Source src{Source::pipe, "spliced-bytes"};
  Fd out_r, out_w;
  explicit SplicePipeForm(Env& e) : FormBase(e) { std::tie(out_r, out_w) = make_pipe(); }
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, src.op_end, std::int64_t{-1}, out_w.get(), std::int64_t{-1},
                                 std::size_t{64});
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r && *r != src.payload.size() ? "moved " + std::to_string(*r) : "");
  }
  void unblock() { src.inject(); }
  bool effect() { return src.consumed(); }
  std::string effect_wrong() {
    const std::string got = take_available(out_r.get());
    return got == src.payload ? "" : "the output pipe got \"" + got + "\"";
  }
  Fd release_fd() { return std::move(src.op_end); }
  void reuse(int n) { src.reuse(n); }
  std::string reuse_wrong() { return src.reuse_wrong(); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(src.payload.size()));
    take_available(src.op_end.get());
    put(out_w.get(), src.payload);  // what the kernel would have moved
  }
};

/// splice from a pipe holding bytes into a full pipe: it waits for its
/// OUTPUT to drain (issue 20 defect 6a: the epoll engine waits on the input).
struct SpliceFullOutForm : FormBase {
  using Desc = detail::SpliceOp;
  static constexpr const char* name = "splice(into full pipe)";
  static constexpr bool pends = true, effect_known = true;
  static constexpr std::string_view kData = "spliced-once-room";
  Fd in_r, in_w;
  Sink sink{Sink::pipe};
  explicit SpliceFullOutForm(Env& e) : FormBase(e) {
    std::tie(in_r, in_w) = make_pipe();
    put(in_w.get(), kData);
  }
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, in_r, std::int64_t{-1}, sink.op_end.get(), std::int64_t{-1},
                                 kData.size());
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r && *r != kData.size() ? "moved " + std::to_string(*r) : "");
  }
  void unblock() { sink.drain(); }
  bool effect() {
    sink.drain();
    return !sink.got.empty();
  }
  std::string effect_wrong() {
    return sink.got == kData ? "" : "the pipe got \"" + sink.got + "\"";
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(kData.size()));
  }
};

/// splice from a pipe into a blocking socket whose buffer is full (issue
/// 20 defect 6b: the epoll engine blocks the loop thread in splice).
struct SpliceBlockingSocketForm : FormBase {
  using Desc = detail::SpliceOp;
  static constexpr const char* name = "splice(into blocking socket)";
  static constexpr bool pends = true, effect_known = true, may_stick = true;
  static constexpr std::string_view kData = "spliced-into-socket";
  Fd in_r, in_w;
  Sink sink{Sink::stream};
  explicit SpliceBlockingSocketForm(Env& e) : FormBase(e) {
    std::tie(in_r, in_w) = make_pipe();
    put(in_w.get(), kData);
  }
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, in_r, std::int64_t{-1}, sink.op_end.get(), std::int64_t{-1},
                                 kData.size());
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r && *r != kData.size() ? "moved " + std::to_string(*r) : "");
  }
  void unblock() { sink.drain(); }
  bool effect() {
    for (int i = 0; i < 3; ++i) sink.drain();
    return !sink.got.empty();
  }
  std::string effect_wrong() {
    return sink.got == kData ? "" : "the peer got \"" + sink.got + "\"";
  }
  bool unstick() {
    // Another thread: read the peer (no shared state with the row's thread).
    char buf[65536];
    bool any = false;
    while (::recv(sink.peer.get(), buf, sizeof(buf), MSG_DONTWAIT) > 0) any = true;
    return any;
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(kData.size()));
  }
};

// ---- datagram.hpp ---------------------------------------------------------

/// sendmsg of one datagram into a full unix datagram socket until unblock()
/// drains the peer.
struct SendmsgForm : FormBase {
  using Desc = detail::SendmsgOp;
  static constexpr const char* name = "sendmsg(unix dgram)";
  static constexpr bool pends = true, has_fd = true, effect_known = true;
  static constexpr std::string_view kData = "one-datagram";
  Sink sink{Sink::dgram};
  using FormBase::FormBase;
  auto make(Loop& loop, Timeout t) {
    const iovec v{const_cast<char*>(kData.data()), kData.size()};
    return loop.make_until<Desc>(t, sink.op_end, std::span<const iovec>(&v, 1),
                                 static_cast<const SocketAddress*>(nullptr), 0);
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r && *r != kData.size() ? "sent " + std::to_string(*r) : "");
  }
  void unblock() { sink.drain(); }
  bool effect() {
    sink.drain();
    return !sink.got.empty();
  }
  std::string effect_wrong() {
    return sink.got == kData ? "" : "the peer got \"" + sink.got + "\"";
  }
  Fd release_fd() { return std::move(sink.op_end); }
  void reuse(int n) { sink.reuse(n); }
  std::string reuse_wrong() { return sink.reuse_wrong(); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(kData.size()));
  }
};

/// recvmsg (DatagramSocket::recv_from's op) on a unix datagram socket
/// until unblock() sends one.
struct RecvmsgForm : FormBase {
  using Desc = detail::RecvmsgOp;
  static constexpr const char* name = "recvmsg(unix dgram)";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  Source src{Source::dgram, "a-datagram"};
  std::array<char, 64> buf{};
  using FormBase::FormBase;
  auto make(Loop& loop, Timeout t) {
    const iovec v{buf.data(), buf.size()};
    return loop.make_until<Desc>(t, src.op_end, std::span<const iovec>(&v, 1), 0);
  }
  Outcome outcome(Result<Datagram>& r) {
    std::string wrong;
    if (r && std::string_view(buf.data(), r->size) != src.payload)
      wrong = "received \"" + std::string(buf.data(), r->size) + "\"";
    return outcome_of(r, wrong);
  }
  void unblock() { src.inject(); }
  bool effect() { return src.consumed(); }
  Fd release_fd() { return std::move(src.op_end); }
  void reuse(int n) { src.reuse(n); }
  std::string reuse_wrong() { return src.reuse_wrong(); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete_with_data(op, src.payload); }
};

/// DatagramSocket::receive: a datagram into the loop's datagram pool.
struct ReceiveForm : FormBase {
  using Desc = detail::RecvmsgOp;
  static constexpr const char* name = "receive() pool";
  static constexpr bool again = true, pends = true, effect_known = true;
  Source src{Source::dgram, "pooled-datagram"};
  std::optional<net::DatagramSocket> sock;
  using FormBase::FormBase;
  auto make(Loop& loop, Timeout t) {
    if (!sock) {
      ::fcntl(src.op_end.get(), F_SETFL, ::fcntl(src.op_end.get(), F_GETFL) | O_NONBLOCK);
      sock.emplace(loop, std::move(src.op_end));
      src.op_end = Fd{::dup(sock->fd())};  // the test's view of the same socket
    }
    return sock->receive(t);
  }
  /// Lets go of the multishot recvmsg (armed while the socket is open).
  void quiesce() { sock.reset(); }
  Outcome outcome(Result<ReceivedDatagram>& r) {
    std::string wrong;
    if (r && r->data.view() != src.payload)
      wrong = "received \"" + std::string(r->data.view()) + "\"";
    return outcome_of(r, wrong);
  }
  void unblock() { src.inject(); }
  bool effect() { return src.consumed(); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete_with_data(op, src.payload); }
};

// ---- file.hpp -------------------------------------------------------------

/// The shared part of the forms on a regular file through its fd.
struct FileFormBase : FormBase {
  static constexpr bool on_worker = true, has_fd = true;
  FileTarget file;
  explicit FileFormBase(Env& e) : FormBase(e), file(e) {}
  Fd release_fd() { return std::move(file.fd); }
  void reuse(int n) { file.reuse(n); }
  std::string reuse_wrong() { return file.reuse_wrong(); }
};

struct ReadAtForm : FileFormBase {
  using Desc = detail::ReadOp;
  static constexpr const char* name = "read_at(file)";
  std::array<char, 64> buf{};
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, file.fd, buf.data(), buf.size(), std::uint64_t{0});
  }
  Outcome outcome(Result<std::size_t>& r) {
    std::string wrong;
    if (r && !env.fake && std::string_view(buf.data(), *r) != FileTarget::kInitial)
      wrong = "read \"" + std::string(buf.data(), *r) + "\"";
    return outcome_of(r, wrong);
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete_with_data(op, FileTarget::kInitial);
  }
};

struct WriteAtForm : FileFormBase {
  using Desc = detail::WriteOp;
  static constexpr const char* name = "write_at(file)";
  static constexpr bool effect_known = true;
  static constexpr std::string_view kData = "WRITTEN";
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, file.fd, kData.data(), kData.size(), std::uint64_t{0}, false);
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r && *r != kData.size() ? "wrote " + std::to_string(*r) : "");
  }
  bool effect() { return read_file(file.path).starts_with(kData); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(kData.size()));
  }
};

struct ReadvAtForm : FileFormBase {
  using Desc = detail::ReadvOp;
  static constexpr const char* name = "readv_at(file)";
  std::array<char, 5> one{};
  std::array<char, 64> two{};
  std::array<iovec, 2> iov{iovec{one.data(), one.size()}, iovec{two.data(), two.size()}};
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, file.fd, std::span<const iovec>(iov), std::uint64_t{0});
  }
  Outcome outcome(Result<std::size_t>& r) {
    std::string got;
    if (r) {
      got.assign(one.data(), std::min(*r, one.size()));
      if (*r > one.size()) got.append(two.data(), *r - one.size());
    }
    return outcome_of(r,
                      r && !env.fake && got != FileTarget::kInitial ? "read \"" + got + "\"" : "");
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(FileTarget::kInitial.size()));
  }
};

struct WritevAtForm : FileFormBase {
  using Desc = detail::WritevOp;
  static constexpr const char* name = "writev_at(file)";
  static constexpr bool effect_known = true;
  static constexpr std::string_view kA = "GATH", kB = "ERED";
  std::array<iovec, 2> iov{iovec{const_cast<char*>(kA.data()), kA.size()},
                           iovec{const_cast<char*>(kB.data()), kB.size()}};
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, file.fd, std::span<const iovec>(iov), std::uint64_t{0}, false);
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r && *r != 8 ? "wrote " + std::to_string(*r) : "");
  }
  bool effect() { return read_file(file.path).starts_with("GATHERED"); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 8); }
};

struct FsyncForm : FileFormBase {
  using Desc = detail::FsyncOp;
  static constexpr const char* name = "fsync(file)";
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) { return loop.make_until<Desc>(t, file.fd, false); }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

struct FallocateForm : FileFormBase {
  using Desc = detail::FallocateOp;
  static constexpr const char* name = "fallocate(file)";
  static constexpr bool effect_known = true;
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, file.fd, 0, std::uint64_t{0}, std::uint64_t{8192});
  }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  bool effect() { return file_size(file.path) == 8192; }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

struct FtruncateForm : FileFormBase {
  using Desc = detail::FtruncateOp;
  static constexpr const char* name = "ftruncate(file)";
  static constexpr bool effect_known = true;
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) { return loop.make_until<Desc>(t, file.fd, std::uint64_t{3}); }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  bool effect() { return file_size(file.path) == 3; }
  std::string skip(Loop& loop) {
    return loop.features().ftruncate_op ? "" : "the ring's probe lacks IORING_OP_FTRUNCATE";
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

/// statx of the open file (File::stat: AT_EMPTY_PATH).
struct StatxForm : FileFormBase {
  using Desc = detail::StatxOp;
  static constexpr const char* name = "statx(file)";
  using FileFormBase::FileFormBase;
  auto make(Loop& loop, Timeout t) { return loop.make_until<Desc>(t, file.fd, "", AT_EMPTY_PATH); }
  Outcome outcome(Result<FileStat>& r) {
    return outcome_of(r, r && !env.fake && r->size != FileTarget::kInitial.size()
                             ? "size " + std::to_string(r->size)
                             : "");
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

/// The shared part of the path forms (no fd: AT_FDCWD).
struct PathFormBase : FormBase {
  static constexpr bool on_worker = true, effect_known = true;
  using FormBase::FormBase;
};

/// openat(O_CREAT) of a new regular file.
struct OpenatCreateForm : PathFormBase {
  using Desc = detail::OpenatOp;
  static constexpr const char* name = "openat(create)";
  std::string path = env.path("created");
  using PathFormBase::PathFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, AT_FDCWD, path.c_str(), O_RDWR | O_CREAT, 0600u);
  }
  Outcome outcome(Result<int>& r) {
    Fd owned{r ? *r : -1};
    std::string wrong;
    struct stat st {};
    if (r && !env.fake && (::fstat(owned.get(), &st) != 0 || !S_ISREG(st.st_mode)))
      wrong = "the fd is not the file";
    return outcome_of(r, wrong);
  }
  bool effect() { return exists(path); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, ::open("/dev/null", O_RDONLY | O_CLOEXEC));
  }
};

/// openat of a FIFO with no writer. A reader's open waits for a writer,
/// unless nonblocking: io_uring opens nonblocking first and returns at
/// once, with the fd; the epoll engine runs a blocking open on a file
/// worker, which then waits for a writer (issue 20 defect 7: no deadline,
/// no cancel, ~Loop waits). The watchdog opens a writer if a row sticks.
struct OpenatFifoForm : PathFormBase {
  using Desc = detail::OpenatOp;
  static constexpr const char* name = "openat(fifo)";
  static constexpr bool effect_known = false, stuck_on_worker = true, may_stick = true;
  Fifo fifo{env.path("fifo")};
  using PathFormBase::PathFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, AT_FDCWD, fifo.path.c_str(), O_RDONLY, 0u);
  }
  Outcome outcome(Result<int>& r) {
    Fd owned{r ? *r : -1};
    struct stat st {};
    std::string wrong;
    if (r && !env.fake && (::fstat(owned.get(), &st) != 0 || !S_ISFIFO(st.st_mode)))
      wrong = "the fd is not the FIFO";
    return outcome_of(r, wrong);
  }
  bool unstick() {
    // Another thread: its writer end is closed at once (the open it ends
    // has returned by then).
    Fd w{::open(fifo.path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC)};
    return static_cast<bool>(w);
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, ::open("/dev/null", O_RDONLY | O_CLOEXEC));
  }
};

struct UnlinkatForm : PathFormBase {
  using Desc = detail::UnlinkatOp;
  static constexpr const char* name = "unlinkat(path)";
  std::string path = env.path("doomed");
  explicit UnlinkatForm(Env& e) : PathFormBase(e) { write_file(path, "x"); }
  auto make(Loop& loop, Timeout t) { return loop.make_until<Desc>(t, AT_FDCWD, path.c_str(), 0); }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  bool effect() { return !exists(path); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

struct RenameatForm : PathFormBase {
  using Desc = detail::RenameatOp;
  static constexpr const char* name = "renameat(path)";
  std::string from = env.path("from"), to = env.path("to");
  explicit RenameatForm(Env& e) : PathFormBase(e) { write_file(from, "x"); }
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, AT_FDCWD, from.c_str(), to.c_str(), 0);
  }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  bool effect() { return exists(to) && !exists(from); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

struct MkdiratForm : PathFormBase {
  using Desc = detail::MkdiratOp;
  static constexpr const char* name = "mkdirat(path)";
  std::string path = env.path("made");
  using PathFormBase::PathFormBase;
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, AT_FDCWD, path.c_str(), 0700u);
  }
  Outcome outcome(Result<void>& r) { return outcome_of(r); }
  bool effect() { return exists(path); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) { f.complete(op, 0); }
};

// ---- the table --------------------------------------------------------------

/// The forms of each op kind. No primary definition: a kind of AllOps
/// without an entry here fails to compile the suite.
template <class D>
struct Forms;
template <>
struct Forms<detail::NopOp> {
  using type = std::tuple<NopForm>;
};
template <>
struct Forms<detail::ReadOp> {
  using type = std::tuple<ReadPipeForm, ReadAtForm>;
};
template <>
struct Forms<detail::WriteOp> {
  using type = std::tuple<WriteAllPipeForm, WriteAtForm>;
};
template <>
struct Forms<detail::RecvOp> {
  using type = std::tuple<RecvForm, RecvPoolForm>;
};
template <>
struct Forms<detail::SendOp> {
  using type = std::tuple<SendAllForm>;
};
template <>
struct Forms<detail::AcceptOp> {
  using type = std::tuple<AcceptForm>;
};
template <>
struct Forms<detail::ConnectOp> {
  using type = std::tuple<ConnectForm>;
};
template <>
struct Forms<detail::ShutdownOp> {
  using type = std::tuple<ShutdownForm>;
};
template <>
struct Forms<detail::CloseOp> {
  using type = std::tuple<CloseForm>;
};
template <>
struct Forms<detail::PollOp> {
  using type = std::tuple<PollForm>;
};
template <>
struct Forms<detail::OpenatOp> {
  using type = std::tuple<OpenatCreateForm, OpenatFifoForm>;
};
template <>
struct Forms<detail::FsyncOp> {
  using type = std::tuple<FsyncForm>;
};
template <>
struct Forms<detail::FallocateOp> {
  using type = std::tuple<FallocateForm>;
};
template <>
struct Forms<detail::FtruncateOp> {
  using type = std::tuple<FtruncateForm>;
};
template <>
struct Forms<detail::StatxOp> {
  using type = std::tuple<StatxForm>;
};
template <>
struct Forms<detail::UnlinkatOp> {
  using type = std::tuple<UnlinkatForm>;
};
template <>
struct Forms<detail::RenameatOp> {
  using type = std::tuple<RenameatForm>;
};
template <>
struct Forms<detail::MkdiratOp> {
  using type = std::tuple<MkdiratForm>;
};
template <>
struct Forms<detail::ReadvOp> {
  using type = std::tuple<ReadvPipeForm, ReadvAtForm>;
};
template <>
struct Forms<detail::WritevOp> {
  using type = std::tuple<WritevAllPipeForm, WritevAtForm>;
};
template <>
struct Forms<detail::SpliceOp> {
  using type = std::tuple<SplicePipeForm, SpliceFullOutForm, SpliceBlockingSocketForm>;
};
template <>
struct Forms<detail::SendmsgOp> {
  using type = std::tuple<SendmsgForm>;
};
template <>
struct Forms<detail::RecvmsgOp> {
  using type = std::tuple<RecvmsgForm, ReceiveForm>;
};

}  // namespace lev::conformance
