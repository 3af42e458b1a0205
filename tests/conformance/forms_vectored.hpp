#pragma once
// The forms of vectored I/O, splice and datagram messages (lev/detail/ops/vectored.hpp,
// datagram.hpp) (see forms.hpp for what a form is).
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
#include "lev/net/datagram.hpp"

namespace lev::conformance {

// ---- vectored.hpp ---------------------------------------------------------

/// readv into two buffers from a pipe until unblock() writes into it.
struct ReadvPipeForm : SourceForm {
  using Desc = detail::ReadvOp;
  static constexpr const char* name = "readv(pipe)";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  std::array<char, 9> one{};
  std::array<char, 32> two{};
  std::array<iovec, 2> iov{iovec{one.data(), one.size()}, iovec{two.data(), two.size()}};
  explicit ReadvPipeForm(Env& e) : SourceForm(e, Source::pipe, "scattered-into-two") {}
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, src.op_end, std::span<const iovec>(iov), std::uint64_t(-1));
  }
  [[nodiscard]] std::string joined(std::size_t n) const {
    std::string s(one.data(), std::min(n, one.size()));
    if (n > one.size()) s.append(two.data(), n - one.size());
    return s;
  }
  Outcome outcome(Result<std::size_t>& r) {
    return outcome_of(r, r ? got_wrong("read", joined(*r)) : "");
  }
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
struct WritevAllPipeForm : SinkForm {
  using Desc = detail::WritevOp;
  static constexpr const char* name = "writev_all(pipe)";
  static constexpr bool pends = true, has_fd = true, effect_known = true;
  static constexpr std::string_view kA = "gathered-", kB = "from-", kC = "three";
  bool first_fake = true;
  explicit WritevAllPipeForm(Env& e) : SinkForm(e, Sink::pipe) {}
  auto make(Loop& loop, Timeout t) {
    // The iovecs are a local array: writev_all copies them (its contract).
    const std::array<iovec, 3> iov{iovec{const_cast<char*>(kA.data()), kA.size()},
                                   iovec{const_cast<char*>(kB.data()), kB.size()},
                                   iovec{const_cast<char*>(kC.data()), kC.size()}};
    return loop.make_until<Desc>(t, sink.op_end, std::span<const iovec>(iov), std::uint64_t(-1),
                                 true, &loop);
  }
  static std::string all() { return std::string(kA) + std::string(kB) + std::string(kC); }
  Outcome outcome(Result<std::size_t>& r) { return count_outcome(r, all().size(), "wrote"); }
  std::string effect_wrong() { return sink_wrong(all(), "the pipe"); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    // A partial write first, so that the continuation walks the iovec copy.
    const int rest = static_cast<int>(op.total - op.done);
    f.complete(op, std::exchange(first_fake, false) ? 4 : rest);
  }
};

/// splice from an empty pipe into another until unblock() fills the first.
struct SplicePipeForm : SourceForm {
  using Desc = detail::SpliceOp;
  static constexpr const char* name = "splice(pipe->pipe)";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  Fd out_r, out_w;
  explicit SplicePipeForm(Env& e) : SourceForm(e, Source::pipe, "spliced-bytes") {
    std::tie(out_r, out_w) = make_pipe();
  }
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, src.op_end, std::int64_t{-1}, out_w.get(), std::int64_t{-1},
                                 std::size_t{64});
  }
  Outcome outcome(Result<std::size_t>& r) { return count_outcome(r, src.payload.size(), "moved"); }
  std::string effect_wrong() {
    const std::string got = take_available(out_r.get());
    return got == src.payload ? "" : "the output pipe got \"" + got + "\"";
  }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(src.payload.size()));
    take_available(src.op_end.get());
    put(out_w.get(), src.payload);  // what the kernel would have moved
  }
};

/// splice of `data`, waiting in a pipe, into a full `sink`: what the two
/// forms below share.
struct SpliceIntoFullForm : SinkForm {
  using Desc = detail::SpliceOp;
  std::string_view data;
  Fd in_r, in_w;
  SpliceIntoFullForm(Env& e, Sink::Kind kind, std::string_view d) : SinkForm(e, kind), data(d) {
    std::tie(in_r, in_w) = make_pipe();
    put(in_w.get(), data);
  }
  auto make(Loop& loop, Timeout t) {
    return loop.make_until<Desc>(t, in_r, std::int64_t{-1}, sink.op_end.get(), std::int64_t{-1},
                                 data.size());
  }
  Outcome outcome(Result<std::size_t>& r) { return count_outcome(r, data.size(), "moved"); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(data.size()));
  }
};

/// splice from a pipe holding bytes into a full pipe: it waits for its
/// OUTPUT to drain (issue 20 defect 6a: the epoll engine waits on the input).
struct SpliceFullOutForm : SpliceIntoFullForm {
  static constexpr const char* name = "splice(into full pipe)";
  static constexpr bool pends = true, effect_known = true;
  explicit SpliceFullOutForm(Env& e) : SpliceIntoFullForm(e, Sink::pipe, "spliced-once-room") {}
  std::string effect_wrong() { return sink_wrong(data, "the pipe"); }
};

/// splice from a pipe into a blocking socket whose buffer is full (issue
/// 20 defect 6b: the epoll engine blocks the loop thread in splice).
struct SpliceBlockingSocketForm : SpliceIntoFullForm {
  static constexpr const char* name = "splice(into blocking socket)";
  static constexpr bool pends = true, effect_known = true, may_stick = true;
  explicit SpliceBlockingSocketForm(Env& e)
      : SpliceIntoFullForm(e, Sink::stream, "spliced-into-socket") {}
  bool effect() {
    for (int i = 0; i < 3; ++i) sink.drain();
    return !sink.got.empty();
  }
  std::string effect_wrong() { return sink_wrong(data, "the peer"); }
  bool unstick() {
    // Another thread: read the peer (no shared state with the row's thread).
    char buf[65536];
    bool any = false;
    while (::recv(sink.peer.get(), buf, sizeof(buf), MSG_DONTWAIT) > 0) any = true;
    return any;
  }
};

// ---- datagram.hpp ---------------------------------------------------------

/// sendmsg of one datagram into a full unix datagram socket until unblock()
/// drains the peer.
struct SendmsgForm : SinkForm {
  using Desc = detail::SendmsgOp;
  static constexpr const char* name = "sendmsg(unix dgram)";
  static constexpr bool pends = true, has_fd = true, effect_known = true;
  static constexpr std::string_view kData = "one-datagram";
  explicit SendmsgForm(Env& e) : SinkForm(e, Sink::dgram) {}
  auto make(Loop& loop, Timeout t) {
    const iovec v{const_cast<char*>(kData.data()), kData.size()};
    return loop.make_until<Desc>(t, sink.op_end, std::span<const iovec>(&v, 1),
                                 static_cast<const SocketAddress*>(nullptr), 0);
  }
  Outcome outcome(Result<std::size_t>& r) { return count_outcome(r, kData.size(), "sent"); }
  std::string effect_wrong() { return sink_wrong(kData, "the peer"); }
  void fake_complete(FakeBackend& f, detail::OpBase& op) {
    f.complete(op, static_cast<int>(kData.size()));
  }
};

/// recvmsg (DatagramSocket::recv_from's op) on a unix datagram socket
/// until unblock() sends one.
struct RecvmsgForm : SourceForm {
  using Desc = detail::RecvmsgOp;
  static constexpr const char* name = "recvmsg(unix dgram)";
  static constexpr bool again = true, pends = true, has_fd = true, effect_known = true;
  std::array<char, 64> buf{};
  explicit RecvmsgForm(Env& e) : SourceForm(e, Source::dgram, "a-datagram") {}
  auto make(Loop& loop, Timeout t) {
    const iovec v{buf.data(), buf.size()};
    return loop.make_until<Desc>(t, src.op_end, std::span<const iovec>(&v, 1), 0);
  }
  Outcome outcome(Result<Datagram>& r) {
    return outcome_of(r, r ? got_wrong("received", std::string_view(buf.data(), r->size)) : "");
  }
};

/// DatagramSocket::receive: a datagram into the loop's datagram pool.
struct ReceiveForm : SourceForm {
  using Desc = detail::RecvmsgOp;
  static constexpr const char* name = "receive() pool";
  static constexpr bool again = true, pends = true, effect_known = true;
  std::optional<net::DatagramSocket> sock;
  explicit ReceiveForm(Env& e) : SourceForm(e, Source::dgram, "pooled-datagram") {}
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
    return outcome_of(r, r ? got_wrong("received", r->data.view()) : "");
  }
};

}  // namespace lev::conformance
