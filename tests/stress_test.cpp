// The simulation's workloads on the real engines (io_uring with the
// multishot recv, with one-shot buffer recvs, without the buffer ring, the epoll reactor, the epoll proactor), over
// socketpairs and loopback TCP, with stops, cancels and teardowns injected
// at random moments by a ticking timer. Not deterministic (the kernel
// decides the order): it catches what the fake cannot model. Bounded in
// time: LEV_STRESS_SECONDS per engine (default 2); each iteration's seed is
// printed on failure, with what it ran.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "lev/loop.hpp"
#include "sim/sim.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

class StressHost final : public lev::sim::Host {
 public:
  explicit StressHost(lev::sim::Rng& rng) : rng_(rng) {}

  std::pair<lev::Fd, lev::Fd> connect_pair() override {
    if (rng_.chance(0.7)) return lev::test::socket_pair();
    auto [listener, addr] = lev::test::tcp_listener(rng_.chance(0.3));
    lev::Fd c{::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (!c || ::connect(c.get(), addr.data(), addr.size()) != 0)
      throw std::runtime_error("stress: loopback connect");
    lev::Fd s{::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC)};
    if (!s) throw std::runtime_error("stress: loopback accept");
    int one = 1;
    ::setsockopt(c.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return {std::move(c), std::move(s)};
  }
  std::optional<std::pair<lev::Fd, lev::Fd>> datagram_pair() override {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
      throw std::runtime_error("stress: datagram socketpair");
    return std::pair<lev::Fd, lev::Fd>{lev::Fd{sv[0]}, lev::Fd{sv[1]}};
  }
  std::optional<std::pair<lev::Fd, lev::Fd>> pipe() override {
    int p[2];
    if (::pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) throw std::runtime_error("stress: pipe");
    return std::pair<lev::Fd, lev::Fd>{lev::Fd{p[0]}, lev::Fd{p[1]}};
  }
  std::optional<std::uint64_t> accepted(int) const override { return std::nullopt; }
  void cancellable(lev::Operation op) override { ops_.push_back(std::move(op)); }
  void stoppable(std::shared_ptr<std::stop_source> s) override { stops_.push_back(std::move(s)); }
  void fail(const std::string& why) override {
    if (failure_.empty()) failure_ = why;
  }
  bool in_round() const override { return in_round_; }

  // Injects one stop or cancel, now and then.
  void chaos() {
    if (!stops_.empty() && rng_.chance(0.05)) stops_[rng_.below(stops_.size())]->request_stop();
    if (!ops_.empty() && rng_.chance(0.05)) ops_[rng_.below(ops_.size())].cancel();
  }
  void clear() {
    ops_.clear();
    stops_.clear();
  }

  bool in_round_ = false;
  std::string failure_;

 private:
  lev::sim::Rng& rng_;
  std::vector<lev::Operation> ops_;
  std::vector<std::shared_ptr<std::stop_source>> stops_;
};

struct StressEngine {
  const char* name;
  lev::Model model;
  const char* backend;
  const char* env;  // set while the loop is made (a variant of the engine), or null
};

// One iteration: 1-3 workloads on a fresh loop; "" or what broke.
std::string iterate(const StressEngine& e, std::uint64_t seed) {
  lev::sim::Rng rng(seed);
  lev::sim::Swarm swarm = lev::sim::Swarm::pick(rng);
  StressHost host(rng);
  const long frames = lev::sim::FrameToken::live, witnesses = lev::sim::Witness::live;
  const auto all = lev::sim::workloads();
  std::vector<std::size_t> picked(rng.between(1, 3));
  for (auto& p : picked) p = rng.below(all.size());
  std::string names;
  for (std::size_t i : picked) names += std::string(names.empty() ? "" : ",") + all[i].first;
  bool torn_down = false;
  {
    lev::LoopOptions o;
    o.backend = e.backend;
    o.recv_buffer_count = static_cast<std::uint32_t>(rng.between(8, 256));
    o.recv_buffer_size = static_cast<std::uint32_t>(rng.between(16, 4096));
    o.datagram_buffer_count = static_cast<std::uint32_t>(rng.between(2, 64));
    o.datagram_buffer_size = static_cast<std::uint32_t>(rng.between(1, 1024));
    if (e.env) ::setenv(e.env, "1", 1);
    lev::Loop loop{e.model, o};
    if (e.env) ::unsetenv(e.env);
    lev::sim::World world{&host, &loop, &rng, &swarm};
    world.max_wait = 30ms;
    std::vector<char> done(picked.size(), 0);
    for (std::size_t i = 0; i < picked.size(); ++i)
      loop.spawn(lev::sim::run_workload(world, all[picked[i]].second, all[picked[i]].first, 20s,
                                        &done[i]));
    auto chaos = loop.every(std::chrono::milliseconds(rng.between(1, 10)),
                            [&](lev::Operation&, lev::Result<lev::Expired>) { host.chaos(); });
    const auto start = std::chrono::steady_clock::now();
    // No teardown: a bound no run reaches (max() would overflow when
    // compared with a nanosecond elapsed time).
    const std::chrono::nanoseconds teardown_after =
        rng.chance(0.25) ? std::chrono::nanoseconds(std::chrono::milliseconds(rng.between(0, 300)))
                         : std::chrono::nanoseconds(std::chrono::hours(24 * 365));
    auto all_done = [&] {
      for (char d : done)
        if (!d) return false;
      return true;
    };
    while (!all_done() && host.failure_.empty()) {
      const auto elapsed = std::chrono::steady_clock::now() - start;
      if (elapsed >= teardown_after) {
        torn_down = true;
        break;
      }
      if (elapsed > 30s) {
        host.fail("the workloads did not end within 30 s");
        break;
      }
      host.in_round_ = true;
      loop.run_once();
      host.in_round_ = false;
    }
    chaos.cancel();
    if (!torn_down && host.failure_.empty()) {
      loop.drain_callbacks();
      if (loop.recv_buffer_stats().in_use != 0)
        host.fail("pool buffers still held after every workload ended");
      if (loop.datagram_buffer_stats().in_use != 0)
        host.fail("datagram pool buffers still held after every workload ended");
    }
    host.clear();
  }  // teardown: cancels and settles what is left
  if (host.failure_.empty() && lev::sim::FrameToken::live != frames)
    host.fail("workload frames left after teardown");
  if (host.failure_.empty() && lev::sim::Witness::live != witnesses)
    host.fail("callback captures left after teardown");
  if (host.failure_.empty()) return {};
  return std::string(e.name) + " seed " + std::to_string(seed) + ": " + host.failure_ +
         "\n  workloads: " + names + (torn_down ? " (torn down)" : "") +
         "\n  replay (not exact: the kernel decides the order): LEV_STRESS_SEED=" +
         std::to_string(seed);
}

bool uring_works() {
  try {
    lev::Loop probe{lev::Model::proactor, {.backend = "uring"}};
    return true;
  } catch (const std::system_error&) {
    return false;
  }
}

double stress_seconds() {
  const char* v = std::getenv("LEV_STRESS_SECONDS");
  return v && *v ? std::strtod(v, nullptr) : 2.0;
}

}  // namespace

TEST_SUITE("stress") {
  TEST_CASE("the simulation's workloads keep their invariants on every real engine under stops, cancels and teardowns") {
    const std::vector<StressEngine> engines = {
        {"proactor/uring", lev::Model::proactor, "uring", nullptr},
        {"proactor/uring without a buffer ring", lev::Model::proactor, "uring",
         "LEV_URING_NO_BUF_RING"},
        {"proactor/uring with one-shot buffer recvs", lev::Model::proactor, "uring",
         "LEV_URING_NO_MULTISHOT_RECV"},
        {"reactor/epoll", lev::Model::reactor, "epoll", nullptr},
        {"proactor/epoll", lev::Model::proactor, "epoll", nullptr},
    };
    const char* one = std::getenv("LEV_STRESS_SEED");
    for (const StressEngine& e : engines) {
      if (e.model == lev::Model::proactor && std::string(e.backend) == "uring" &&
          !uring_works()) {
        const std::string why = std::string("skipped ") + e.name + ": io_uring is unavailable here";
        MESSAGE(why);
        continue;
      }
      const auto start = std::chrono::steady_clock::now();
      std::uint64_t iterations = 0, failed = 0;
      for (std::uint64_t seed = one ? std::strtoull(one, nullptr, 10) : 1;; ++seed) {
        const std::string failure = iterate(e, seed);
        ++iterations;
        if (!failure.empty()) {
          ++failed;
          FAIL_CHECK(failure);
        }
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (one || failed >= 3 || secs >= stress_seconds()) break;
      }
      const std::string summary = std::string(e.name) + ": " + std::to_string(iterations) +
                                  " iterations, " + std::to_string(failed) + " failed";
      MESSAGE(summary);
    }
  }
}
