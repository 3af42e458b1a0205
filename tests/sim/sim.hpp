#pragma once
// The deterministic simulation: ordinary lev code (workloads) runs on a
// proactor Loop over the fake backend, and a simulated kernel decides,
// from one seed, which in-flight op completes next and with what (full,
// partial, end of stream, resets, ENOBUFS, EAGAIN, refused zero-copy,
// cancels racing results), when virtual time jumps, and which cancels,
// stops and teardowns are injected. The invariants are checked after
// every step; a failure names the seed and the step, and
// LEV_SIM_SEED=<seed> replays exactly that run.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "lev/fake.hpp"
#include "lev/fd.hpp"
#include "lev/loop.hpp"
#include "lev/operation.hpp"

namespace lev::sim {

/// splitmix64: small, fast, and the same on every machine.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) noexcept : s_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, n); 0 for n == 0.
  std::uint64_t below(std::uint64_t n) noexcept { return n ? next() % n : 0; }
  /// Uniform in [lo, hi].
  std::uint64_t between(std::uint64_t lo, std::uint64_t hi) noexcept {
    return lo + below(hi - lo + 1);
  }
  bool chance(double p) noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53 < p; }

 private:
  std::uint64_t s_;
};

/// Each seed picks its own engine modes and fault probabilities (swarm
/// testing: one seed resets connections often and never refuses zero-copy,
/// the next the reverse), so rare combinations come up.
struct Swarm {
  bool plain_recv = false;     // the fake serves no buffer selection
  bool multishot = false;      // recv(fd) through one multishot op per fd
  bool linked = false;         // {.timeout} as linked timeouts
  bool zero_copy = false;      // sends may be refused zero-copy (resent plain)
  bool pool_recv = false;      // workloads read through loop.recv(fd)
  std::uint32_t pool_count = 8, pool_size = 64;
  std::uint32_t dgram_count = 4, dgram_size = 64;  // the datagram pool (receive())
  std::size_t dgram_queue = 8;  // datagrams a receiver holds before the kernel drops or blocks
  double p_drop = 0;            // a datagram to a full queue is dropped (else the send waits)
  double p_partial = 0, p_reset = 0, p_enobufs = 0, p_eagain = 0, p_refuse = 0,
         p_spurious_cancel = 0, p_race = 0, p_time = 0, p_cancel = 0, p_stop = 0, p_end_multishot = 0;
  std::size_t peer_buffer = 4096;  // bytes a receiver holds before sends block
  std::size_t batch = 1;           // completions queued before a loop round (up to)
  // File ops run on a model of file workers: queued until one of
  // `file_workers` takes them, then running (a cancel no longer reaches
  // them), done at once, later (slow) or only once faults stop (stuck).
  std::size_t file_workers = 1;
  double p_slow = 0, p_stuck = 0;
  std::size_t teardown_step = 0;   // 0: no early teardown
  static Swarm pick(Rng& rng);
  [[nodiscard]] std::string describe() const;
};

/// One end of a simulated stream connection (the fd is one end of a real
/// socketpair, so fstat says "socket"; no byte ever goes through it).
struct Endpoint {
  int fd = -1;
  Endpoint* peer = nullptr;
  std::string inbound;      // bytes the peer sent that this end has not received
  bool eof = false;         // the peer shut down its write side or closed
  bool reset = false;       // the connection was reset: both ends fail
  bool closed = false;      // closed through lev (a close op)
  std::uint64_t accepted = 0;  // bytes (datagrams) the kernel took from this end's sends
  // Datagram endpoints: whole messages, in order, in a bounded queue.
  bool dgram = false;
  std::deque<std::string> datagrams;  // sent by the peer, not yet received here
  std::uint64_t dropped = 0;  // datagrams dropped here (the queue was full)
  int feeder = -1;            // a dup of the peer's real socket: writes into this end's
  bool in_real = false;       // the first datagram was also written to the real socket
};

/// What the simulated kernel did with a datagram endpoint's traffic.
struct DatagramTally {
  std::uint64_t sent = 0;     // datagrams the kernel took from sends on this end
  std::uint64_t dropped = 0;  // datagrams for this end dropped (its queue was full)
  std::uint64_t queued = 0;   // datagrams waiting at this end
};

/// What runs the workloads: the simulation (fake backend, simulated
/// kernel), or the stress driver on a real engine (tests/stress_test.cpp).
class Host {
 public:
  virtual ~Host() = default;
  /// A connected pair of stream descriptors.
  virtual std::pair<Fd, Fd> connect_pair() = 0;
  /// Bytes the kernel took from sends on `fd`; nullopt when unknown (a
  /// real kernel does not say).
  [[nodiscard]] virtual std::optional<std::uint64_t> accepted(int fd) const = 0;
  /// Something the driver may cancel or stop at any time.
  virtual void cancellable(Operation op) = 0;
  virtual void stoppable(std::shared_ptr<std::stop_source> src) = 0;
  /// Records a broken invariant (the first one is reported).
  virtual void fail(const std::string& why) = 0;
  /// True while the loop runs a round: the only time a workload may resume.
  [[nodiscard]] virtual bool in_round() const = 0;
  /// A connected pair of datagram sockets (nonblocking); nullopt when
  /// this host has none.
  virtual std::optional<std::pair<Fd, Fd>> datagram_pair() { return std::nullopt; }
  /// What the kernel did with `fd`'s datagrams; nullopt when unknown.
  [[nodiscard]] virtual std::optional<DatagramTally> datagram_tally(int fd) const {
    (void)fd;
    return std::nullopt;
  }
  /// A pipe: {read end, write end} (nonblocking); nullopt when this host
  /// has none.
  virtual std::optional<std::pair<Fd, Fd>> pipe() { return std::nullopt; }
  /// A listening stream socket; nullopt when this host has none.
  virtual std::optional<Fd> listen() { return std::nullopt; }
  /// A directory for the files workload's files (paths under it); nullopt
  /// when this host has none.
  [[nodiscard]] virtual std::optional<std::string> file_dir() const { return std::nullopt; }
  /// A connection to `listener`, queued for its accept; the client's end.
  virtual std::optional<Fd> dial(int listener) {
    (void)listener;
    return std::nullopt;
  }
};

/// What the workloads see of their host.
struct World {
  Host* host = nullptr;
  Loop* loop = nullptr;
  Rng* rng = nullptr;
  const Swarm* swarm = nullptr;
  /// The longest wait a workload picks (deadlines, sleeps): virtual time in
  /// the simulation, real time (shorter) on a real engine.
  Duration max_wait = std::chrono::milliseconds(400);
  std::pair<Fd, Fd> connect_pair() { return host->connect_pair(); }
  std::optional<Fd> listen() { return host->listen(); }
  std::optional<std::pair<Fd, Fd>> datagram_pair() { return host->datagram_pair(); }
  std::optional<std::pair<Fd, Fd>> pipe() { return host->pipe(); }
  [[nodiscard]] std::optional<DatagramTally> datagram_tally(int fd) const {
    return host->datagram_tally(fd);
  }
  std::optional<Fd> dial(int listener) { return host->dial(listener); }
  [[nodiscard]] std::optional<std::string> file_dir() const { return host->file_dir(); }
  [[nodiscard]] std::optional<std::uint64_t> accepted(int fd) const { return host->accepted(fd); }
  void cancellable(Operation op) { host->cancellable(std::move(op)); }
  void stoppable(std::shared_ptr<std::stop_source> src) { host->stoppable(std::move(src)); }
  void fail(const std::string& why) { host->fail(why); }
  /// Called by workload code right after each co_await: resumption must
  /// come from the loop's drain, never inline from a submission or cancel.
  void resumed(const char* where) {
    static const bool log = std::getenv("LEV_SIM_LOG") != nullptr;  // LEV_SIM_LOG: each resumption too
    if (log) std::fprintf(stderr, "    resumed %s\n", where);
    if (!host->in_round()) fail(std::string("resumed outside the loop's drain: ") + where);
  }
};

/// Counts live workload frames (a local in every workload coroutine).
struct FrameToken {
  static inline long live = 0;
  FrameToken() noexcept { ++live; }
  ~FrameToken() { --live; }
  FrameToken(const FrameToken&) = delete;
  FrameToken& operator=(const FrameToken&) = delete;
};

/// Counts live captures of posted functions and callbacks.
struct Witness {
  static inline long live = 0;
  Witness() noexcept { ++live; }
  Witness(const Witness&) noexcept { ++live; }
  Witness(Witness&&) noexcept { ++live; }
  Witness& operator=(const Witness&) = default;
  ~Witness() { --live; }
};

/// A workload: spawned at the start, it must end (all workloads are
/// bounded by deadlines) once the simulator stops injecting faults and
/// lets time run.
using Workload = std::function<Task<>(World&)>;
/// The workloads a seed picks from (tests/sim/workloads.cpp).
std::vector<std::pair<const char*, Workload>> workloads();
/// lev::tls client and server echoing over a simulated connection
/// (tests/sim/tls_workload.cpp).
Task<> tls_echo(World& w);
/// Runs `wl` bounded by `limit` (reaching it is a failure: every workload
/// bounds its own waits), then sets `*done`.
Task<> run_workload(World& w, Workload wl, const char* name, Duration limit, char* done);

/// Runs one seed; returns "" or the first broken invariant, with the seed,
/// the step and the swarm it ran with.
std::string run_seed(std::uint64_t seed, bool verbose = false);

/// What the seeds run so far reached of the lifecycles the conformance
/// matrix names (tests/conformance): counted over every seed of the process.
struct Reach {
  std::uint64_t file_ops = 0;         // file ops the workers ran
  std::uint64_t queued_cancelled = 0; // file ops cancelled while queued for a worker
  std::uint64_t running_cancel = 0;   // cancels (stops, deadlines) that found a file op running
  std::uint64_t slow = 0, stuck = 0;  // file ops that ran slow, that stuck until faults stopped
  std::uint64_t closed_pending = 0;   // fds closed with an op still pending on them
  std::uint64_t reused = 0;           // fd numbers given out again in the step they were closed
  std::uint64_t reused_after_pending = 0;  // numbers given out again after a close with an op pending
  std::uint64_t torn_down_running = 0;  // teardowns that waited for a running file op
  std::uint64_t f1_leaks = 0;  // fds of opens finished during teardown that lev left open (F1)
};
Reach& reach();

}  // namespace lev::sim
