// What the simulation runs: ordinary lev code, the way users write it,
// with checks of what it receives (every byte at its place, every message
// in order, every callback once) and of what it was told it sent (byte
// conservation: what send_all reports, `transferred` included, is what the
// kernel took).
#include <signal.h>
#include <sys/socket.h>

#include <array>
#include <memory>
#include <string>
#include <utility>

#include "lev/channel.hpp"
#include "lev/file.hpp"
#include "lev/net/datagram.hpp"
#include "lev/net/listen.hpp"
#include "lev/net/stream.hpp"
#include "lev/task_group.hpp"
#include "lev/when.hpp"
#include "sim.hpp"

#include <sys/uio.h>

using namespace std::chrono_literals;

namespace lev::sim {

namespace {

char pattern_at(std::uint64_t i) noexcept { return static_cast<char>('a' + (i * 7 + i / 13) % 26); }

// Bytes a receiver has seen, checked against the sender's pattern.
struct Checked {
  World* w;
  const char* who;
  std::uint64_t pos = 0;
  void take(std::string_view got) {
    for (char c : got) {
      if (c != pattern_at(pos)) {
        w->fail(std::string(who) + ": byte " + std::to_string(pos) + " is not the one sent");
        return;
      }
      ++pos;
    }
  }
};

std::string pattern(std::uint64_t from, std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = pattern_at(from + i);
  return s;
}

// Links a workload's own stop source to the task's token (with_timeout's
// cancellation reaches ops that are stopped through the source).
struct Forward {
  std::shared_ptr<std::stop_source> to;
  void operator()() const noexcept { to->request_stop(); }
};

// Byte conservation: what send_all said it sent (`transferred` included)
// is what the kernel took, where the host knows it.
void conserved(World& w, const char* who, std::uint64_t reported, int fd) {
  const std::optional<std::uint64_t> took = w.accepted(fd);
  if (took && *took != reported)
    w.fail(std::string(who) + ": send_all reported " + std::to_string(reported) +
           " bytes, the kernel took " + std::to_string(*took));
}

Duration some_time(World& w) {
  const auto max_ms = std::chrono::duration_cast<std::chrono::milliseconds>(w.max_wait).count();
  return std::chrono::milliseconds(w.rng->between(1, static_cast<std::uint64_t>(max_ms)));
}

// Receives once: into `buf`, or (pool_recv) a pool buffer; "" at EOF,
// nullopt on error.
Task<std::optional<std::string>> receive(World& w, int fd, std::span<char> buf,
                                         std::stop_token tok, bool with_deadline) {
  if (w.swarm->pool_recv) {
    IoOptions o;
    if (with_deadline) o.timeout = some_time(w);
    auto b = co_await w.loop->recv(fd, o).stop_on(tok);
    w.resumed("recv(fd)");
    if (!b) co_return std::nullopt;
    co_return std::string(b->view());
  }
  Result<std::size_t> n = std::size_t{0};
  if (!with_deadline && buf.size() >= 3 && w.rng->chance(0.3)) {
    // readv into three pieces of `buf` (no deadline form): the bytes in order.
    const std::size_t x = w.rng->between(1, buf.size() - 2);
    const std::size_t y = w.rng->between(x, buf.size() - 1);
    char* p = buf.data();
    const std::array<iovec, 3> iov{iovec{p, x}, iovec{p + x, y - x}, iovec{p + y, buf.size() - y}};
    n = co_await w.loop->readv(fd, iov).stop_on(tok);
    w.resumed("readv");
    if (n && *n > buf.size()) w.fail("readv: more bytes than its iovecs hold");
  } else if (with_deadline)
    n = co_await w.loop->recv(fd, buf, IoOptions{.timeout = some_time(w)}).stop_on(tok);
  else
    n = co_await w.loop->recv(fd, buf).stop_on(tok);
  w.resumed("recv");
  if (!n) co_return std::nullopt;
  co_return std::string(buf.data(), *n);
}

// send_all, stopped by `tok`, with or without a deadline; returns whether
// it sent everything and the bytes it says it sent.
Task<std::pair<bool, std::uint64_t>> send_some(World& w, int fd, std::string_view data,
                                               std::stop_token tok) {
  Result<std::size_t> r = std::size_t{0};
  if (w.rng->chance(0.25) && data.size() >= 3) {
    // writev_all over three pieces: the same accounting through its own
    // continuation (iovecs advanced by writev_continue).
    const std::size_t a = w.rng->between(1, data.size() - 2);
    const std::size_t b = w.rng->between(a + 1, data.size() - 1);
    char* p = const_cast<char*>(data.data());
    std::array<iovec, 3> iov{iovec{p, a}, iovec{p + a, b - a}, iovec{p + b, data.size() - b}};
    if (w.rng->chance(0.5))
      r = co_await w.loop->writev_all(fd, iov, IoOptions{.timeout = some_time(w)}).stop_on(tok);
    else
      r = co_await w.loop->writev_all(fd, iov).stop_on(tok);
    w.resumed("writev_all");
  } else if (w.rng->chance(0.5)) {
    r = co_await w.loop->send_all(fd, data, IoOptions{.timeout = some_time(w)}).stop_on(tok);
    w.resumed("send_all");
  } else {
    r = co_await w.loop->send_all(fd, data).stop_on(tok);
    w.resumed("send_all");
  }
  if (r) {
    if (*r != data.size()) w.fail("send_all succeeded short");
    co_return std::pair<bool, std::uint64_t>{true, *r};
  }
  co_return std::pair<bool, std::uint64_t>{false, r.error().transferred};
}

// ---------------------------------------------------------------- echo
// A client sends a pattern in chunks (send_all, some with deadlines or a
// stop token) while it reads the echo; the server echoes what it gets.
Task<> echo(World& w) {
  FrameToken frame;
  auto [c, s] = w.connect_pair();
  const int cfd = c.get(), sfd = s.get();
  auto stop = std::make_shared<std::stop_source>();
  w.stoppable(stop);
  // (Not in one expression with the co_await: GCC 12 would destroy the
  // temporary Forward twice.)
  const std::stop_token parent = co_await current_stop_token();
  std::stop_callback<Forward> link(parent, Forward{stop});
  const std::uint64_t total = w.rng->between(1, 6000);
  std::uint64_t client_sent = 0, server_sent = 0;
  Checked server_in{&w, "echo server"}, client_in{&w, "echo client"};
  // Set before a side shuts down: only then may the other read end of stream.
  bool client_closing = false, server_closing = false;

  auto server = [&]() -> Task<> {
    FrameToken f;
    std::array<char, 512> buf{};
    for (;;) {
      auto got = co_await receive(w, sfd, buf, stop->get_token(), w.rng->chance(0.2));
      if (!got) {
        stop->request_stop();  // a failed connection: the other side stops too
        break;
      }
      if (got->empty()) {
        if (!client_closing) w.fail("echo server: end of stream before the client shut down");
        break;
      }
      server_in.take(*got);
      auto [ok, n] = co_await send_some(w, sfd, *got, stop->get_token());
      server_sent += n;
      if (!ok) {
        stop->request_stop();
        break;
      }
    }
    server_closing = true;
    (void)co_await w.loop->shutdown(sfd, Shutdown::write);
    w.resumed("shutdown");
  };
  auto client_send = [&]() -> Task<> {
    FrameToken f;
    while (client_sent < total) {
      const std::size_t n = std::min<std::uint64_t>(w.rng->between(1, 2000), total - client_sent);
      const std::string piece = pattern(client_sent, n);
      auto [ok, moved] = co_await send_some(w, cfd, piece, stop->get_token());
      client_sent += moved;
      if (!ok) {
        stop->request_stop();
        break;
      }
    }
    client_closing = true;
    (void)co_await w.loop->shutdown(cfd, Shutdown::write);
    w.resumed("shutdown");
  };
  auto client_recv = [&]() -> Task<> {
    FrameToken f;
    std::array<char, 300> buf{};
    for (;;) {
      auto got = co_await receive(w, cfd, buf, stop->get_token(), false);
      if (!got) stop->request_stop();
      if (!got) break;
      if (got->empty()) {
        if (!server_closing) w.fail("echo client: end of stream before the server shut down");
        break;
      }
      client_in.take(*got);
    }
  };
  auto sv = server();
  auto cs = client_send();
  auto cr = client_recv();
  co_await when_all(std::move(sv), std::move(cs), std::move(cr));
  w.resumed("when_all");
  conserved(w, "echo client", client_sent, cfd);
  conserved(w, "echo server", server_sent, sfd);
  if (client_in.pos > server_sent) w.fail("echo client received more than the server sent");
  (void)co_await w.loop->close(c);
  (void)co_await w.loop->close(s);
  w.resumed("close");
}

// ---------------------------------------------------------------- race
// when_any(a recv that will be answered, a send_all to a peer that never
// reads): the loser's partial send may be queued when the winner ends.
Task<> race(World& w) {
  FrameToken frame;
  auto [a1, a2] = w.connect_pair();
  auto [b1, b2] = w.connect_pair();
  const std::string big = pattern(0, w.rng->between(1000, 40000));
  std::uint64_t reported = 0;
  std::array<char, 16> buf{};
  const Duration patience = some_time(w);
  auto reader = [&]() -> Task<Result<std::size_t>> {
    FrameToken f;
    auto r = co_await w.loop->recv(a1, buf, IoOptions{.timeout = patience});
    w.resumed("race recv");
    co_return r;
  };
  auto sender = [&]() -> Task<Result<std::size_t>> {
    FrameToken f;
    auto r = co_await w.loop->send_all(b1, big);
    w.resumed("race send_all");
    reported = r ? *r : r.error().transferred;
    co_return r;
  };
  auto answer = [&]() -> Task<> {
    FrameToken f;
    (void)co_await w.loop->after(some_time(w));
    w.resumed("race sleep");
    (void)co_await w.loop->send(a2, std::string_view("!"));
    w.resumed("race answer");
  };
  const std::stop_token parent = co_await current_stop_token();
  auto answering = answer();
  auto rt = reader();
  auto st = sender();
  auto both = when_all(std::move(answering),
                       when_any(std::move(rt), std::move(st)));
  co_await std::move(both);
  w.resumed("when_any");
  // The reader ends within `patience`, so when_any must have ended then:
  // not by the workload's 120 s limit (the loser's cancel was lost).
  if (parent.stop_requested()) w.fail("race: when_any waited for its loser until the workload's limit");
  conserved(w, "race", reported, b1.get());
  for (Fd* fd : {&a1, &a2, &b1, &b2}) (void)co_await w.loop->close(*fd);
  w.resumed("close");
}

// ---------------------------------------------------------------- stream
// A Stream writer (line or length-prefixed codec, small watermarks) and a
// reader: every message arrives whole and in order, or the stream fails.
std::string message(std::size_t i, std::size_t len) { return pattern(i * 31, len); }

Task<> stream(World& w) {
  FrameToken frame;
  auto [c, s] = w.connect_pair();
  const bool lines = w.rng->chance(0.5);
  net::StreamOptions o;
  o.codec = lines ? net::Codec::line('\n', 4096) : net::Codec::length_prefixed(4096);
  o.high_watermark = w.rng->between(64, 4096);
  o.low_watermark = w.rng->below(o.high_watermark + 1);
  net::Stream writer(*w.loop, std::move(c), o);
  net::Stream reader(*w.loop, std::move(s), o);
  const std::size_t count = w.rng->between(1, 40);
  std::vector<std::size_t> lens;
  for (std::size_t i = 0; i < count; ++i) lens.push_back(w.rng->below(600));
  std::size_t read_count = 0;
  bool truncated = false;
  auto write_all = [&]() -> Task<> {
    FrameToken f;
    for (std::size_t i = 0; i < count; ++i) {
      auto r = co_await writer.write_message(message(i, lens[i]));
      w.resumed("write_message");
      if (!r) break;
    }
    auto r = co_await writer.close();
    w.resumed("stream close");
    (void)r;
  };
  auto read_all = [&]() -> Task<> {
    FrameToken f;
    for (;;) {
      auto m = co_await reader.read_message();
      w.resumed("read_message");
      if (!m || !*m) break;
      const std::string want = read_count < count ? message(read_count, lens[read_count]) : "";
      if (truncated || read_count >= count ||
          (**m != want && (!lines || !want.starts_with(**m)))) {
        w.fail("stream: message " + std::to_string(read_count) + " is not the one written");
        break;
      }
      // The line codec hands out a last line without its delimiter at the
      // end of the stream: a writer that failed mid-message leaves a prefix.
      truncated = **m != want;
      ++read_count;
    }
    auto r = co_await reader.close();
    w.resumed("stream close");
    (void)r;
  };
  auto wt = write_all();
  auto rt = read_all();
  co_await when_all(std::move(wt), std::move(rt));
  w.resumed("when_all");
}

// ---------------------------------------------------------------- group
// A TaskGroup of sleepers and small echoes, cancelled from outside.
Task<> group(World& w) {
  FrameToken frame;
  auto stop = std::make_shared<std::stop_source>();
  w.stoppable(stop);
  auto sleeper = [](World& wr, Duration d) -> Task<> {
    FrameToken f;
    (void)co_await wr.loop->sleep_for(d);
    wr.resumed("group sleeper");
  };
  auto pinger = [](World& wr) -> Task<> {
    FrameToken f;
    auto [x, y] = wr.connect_pair();
    (void)co_await wr.loop->send_all(x, std::string_view("ping"), IoOptions{.timeout = 200ms});
    wr.resumed("group send");
    std::array<char, 8> buf{};
    (void)co_await wr.loop->recv(y, buf, IoOptions{.timeout = 200ms});
    wr.resumed("group recv");
    (void)co_await wr.loop->close(x);
    (void)co_await wr.loop->close(y);
    wr.resumed("group close");
  };
  auto body = [&](TaskGroup& g) -> Task<> {
    const std::size_t n = w.rng->between(1, 6);
    for (std::size_t i = 0; i < n; ++i) {
      if (w.rng->chance(0.5))
        g.spawn(sleeper(w, some_time(w)));
      else
        g.spawn(pinger(w));
    }
    co_return;
  };
  auto t = with_task_group(body).with_stop_token(stop->get_token());
  try {
    co_await std::move(t);
  } catch (const std::system_error&) {
  }
  w.resumed("with_task_group");
}

// ---------------------------------------------------------------- channel
Task<> channel(World& w) {
  FrameToken frame;
  auto ch = std::make_shared<Channel<int>>(w.rng->between(1, 4));
  auto stop = std::make_shared<std::stop_source>();
  w.stoppable(stop);
  const int n = static_cast<int>(w.rng->between(1, 50));
  auto producer = [&]() -> Task<> {
    FrameToken f;
    for (int i = 0; i < n; ++i) {
      if (w.rng->chance(0.2)) {
        (void)co_await w.loop->sleep_for(some_time(w));
        w.resumed("producer sleep");
      }
      auto r = co_await ch->send(i);
      w.resumed("channel send");
      if (!r) break;
    }
    ch->close();
  };
  auto consumer = [&]() -> Task<> {
    FrameToken f;
    int expect = 0;
    auto tok = stop->get_token();
    auto take = [&]() -> Task<Result<int>> { co_return co_await ch->receive(); };
    for (;;) {
      auto item = co_await take().with_stop_token(tok);
      w.resumed("channel receive");
      if (!item) break;
      if (*item != expect) w.fail("channel: items out of order");
      ++expect;
    }
    ch->close();  // a consumer that stops early releases the producer
  };
  auto p = producer();
  auto c = consumer();
  co_await when_all(std::move(p), std::move(c));
  w.resumed("when_all");
}

// ---------------------------------------------------------------- timers
// every() cancelled from its own callback after k ticks; after() callbacks
// the simulator may cancel: each runs exactly once; posts run once.
Task<> timers(World& w) {
  FrameToken frame;
  struct Counts {
    int ticks = 0, fired = 0, posts = 0;
  };
  auto counts = std::make_shared<Counts>();
  const int k = static_cast<int>(w.rng->between(1, 5));
  Operation every = w.loop->every(some_time(w) / 8 + std::chrono::milliseconds(1),
                                  [counts, k, wit = Witness{}](Operation& self, Result<Expired> r) {
                                    if (!r) return;
                                    if (++counts->ticks == k) self.cancel();
                                  });
  const int afters = static_cast<int>(w.rng->between(1, 4));
  for (int i = 0; i < afters; ++i) {
    Operation op = w.loop->after(some_time(w), [counts, &w, wit = Witness{}](Operation&, Result<Expired>) {
      w.resumed("after callback");
      ++counts->fired;
    });
    w.cancellable(op);
  }
  for (int i = 0; i < 3; ++i) w.loop->post([counts, wit = Witness{}] { ++counts->posts; });
  // Long enough for every timer above (ticks at most 50 ms apart; a tick
  // that falls behind a time jump is skipped, so wait for them).
  for (int i = 0; i < 200 && (counts->ticks < k || counts->fired < afters); ++i) {
    (void)co_await w.loop->sleep_for(w.max_wait + 100ms);
    w.resumed("timers sleep");
  }
  if (counts->ticks != k && !every.is_cancelled())
    w.fail("every: " + std::to_string(counts->ticks) + " ticks, wanted " + std::to_string(k));
  if (counts->fired != afters)
    w.fail("after: " + std::to_string(counts->fired) + " callbacks for " + std::to_string(afters) +
           " timers (each must run exactly once)");
  if (counts->posts != 3) w.fail("post: " + std::to_string(counts->posts) + " of 3 ran");
}

// ---------------------------------------------------------------- sources
// A Waker, a Signal and a Watcher: each calls back from the queue, is
// dropped or disabled inside its own callback sometimes, and never calls
// back after that.
Task<> sources(World& w) {
  FrameToken frame;
  struct State {
    int wakes = 0, signals = 0, reads = 0;
    bool waker_dropped = false, signal_dropped = false, watcher_off = false;
    int wakes_after_drop = 0, signals_after_drop = 0, reads_after_off = 0;
    Waker waker;
    Signal signal;
    Watcher watcher;
  };
  auto st = std::make_shared<State>();
  const bool drop_waker = w.rng->chance(0.5), drop_signal = w.rng->chance(0.5);
  st->waker = w.loop->waker([st = st.get(), drop_waker, &w] {
    w.resumed("waker callback");
    if (st->waker_dropped) ++st->wakes_after_drop;
    ++st->wakes;
    if (drop_waker) {
      st->waker_dropped = true;
      st->waker = Waker{};  // dropped inside its own callback
    }
  });
  st->signal = w.loop->signal(SIGUSR2, [st = st.get(), drop_signal, &w](int) {
    w.resumed("signal callback");
    if (st->signal_dropped) ++st->signals_after_drop;
    ++st->signals;
    if (drop_signal) {
      st->signal_dropped = true;
      st->signal = Signal{};
    }
  });
  auto [a, b] = w.connect_pair();
  st->watcher = w.loop->watch(a, WatchOptions{.read = [st = st.get(), &w](Watcher& self) {
                                                w.resumed("watcher callback");
                                                if (st->watcher_off) ++st->reads_after_off;
                                                ++st->reads;
                                                st->watcher_off = true;
                                                self.disable();  // no callback after this
                                              },
                                              .want_write = false});
  const int rounds = static_cast<int>(w.rng->between(1, 4));
  for (int i = 0; i < rounds; ++i) {
    if (st->waker.active()) st->waker.wake();
    if (st->signal.active()) ::raise(SIGUSR2);  // blocked on this thread: waits in the signalfd
    (void)co_await w.loop->sleep_for(some_time(w));
    w.resumed("sources sleep");
  }
  for (int i = 0; i < 20; ++i) {  // makes `a` readable (a send may be cancelled by the kernel)
    auto sent = co_await w.loop->send(b, std::string_view("ping"));
    w.resumed("sources send");
    if (sent && *sent > 0) break;
  }
  for (int i = 0; i < 50 && (st->reads == 0 || st->wakes == 0 || st->signals == 0); ++i) {
    (void)co_await w.loop->sleep_for(some_time(w));
    w.resumed("sources wait");
  }
  if (st->wakes == 0) w.fail("waker: no callback for " + std::to_string(rounds) + " wakes");
  if (st->signals == 0) w.fail("signal: no callback for the raised signal");
  if (st->reads == 0) w.fail("watcher: no callback for a readable fd");
  if (st->wakes_after_drop || st->signals_after_drop || st->reads_after_off)
    w.fail("a source called back after it was dropped or disabled");
  st->watcher.cancel();
  st->signal = Signal{};
  st->waker = Waker{};
  (void)co_await w.loop->close(a);
  (void)co_await w.loop->close(b);
  w.resumed("close");
}

// ---------------------------------------------------------------- acceptor
// An Acceptor serves clients that dial over time (each sends a few bytes and
// reads them back, under deadlines); the kernel aborts some accepts and runs
// out of descriptors now and then (the Acceptor backs off); the Acceptor is
// stopped, or destroyed without stop(), at a random point, while an accept
// or a back-off waits. Its run() must end either way; every echo that
// arrives is exact; what the connection tasks capture outlives the Acceptor.
Task<> acceptor(World& w) {
  FrameToken frame;
  std::optional<Fd> listener = w.listen();
  if (!listener) co_return;  // a host without listeners
  const int lfd = listener->get();
  struct Tally {
    long served = 0;  // connections whose echo task ended
    long live = 0;    // connection tasks running (detached: they outlive the Acceptor)
  };
  auto tally = std::make_shared<Tally>();
  auto handler = [&w, tally](Fd fd, SocketAddress) -> Task<> {
    FrameToken f;
    ++tally->live;
    std::array<char, 64> buf{};
    auto got = co_await receive(w, fd.get(), buf, {}, true);
    if (got && !got->empty()) (void)co_await send_some(w, fd.get(), *got, {});
    ++tally->served;
    --tally->live;
    (void)co_await w.loop->close(fd);
    w.resumed("acceptor connection");
  };
  auto acc = std::make_unique<net::Acceptor>(*w.loop, lfd, handler);
  bool run_ended = false;
  auto runner = [&](Task<> run) -> Task<> {
    FrameToken f;
    co_await std::move(run);
    w.resumed("acceptor run");
    run_ended = true;
  };
  auto client = [&](int id) -> Task<> {
    FrameToken f;
    (void)co_await w.loop->sleep_for(some_time(w));
    w.resumed("client sleep");
    std::optional<Fd> c = w.dial(lfd);
    const std::string msg = "client " + std::to_string(id);
    auto [ok, n] = co_await send_some(w, c->get(), msg, {});
    std::string echo;
    std::array<char, 64> buf{};
    while (ok && echo.size() < msg.size()) {
      auto got = co_await receive(w, c->get(), buf, {}, true);
      if (!got || got->empty()) break;
      echo += *got;
    }
    if (!msg.starts_with(echo)) w.fail("acceptor: client " + std::to_string(id) + " got back '" + echo + "'");
    (void)co_await w.loop->close(*c);
    w.resumed("client close");
  };
  auto ender = [&]() -> Task<> {
    FrameToken f;
    (void)co_await w.loop->sleep_for(some_time(w) * 2);
    w.resumed("acceptor ender");
    if (w.rng->chance(0.5))
      acc->stop();
    else
      acc.reset();  // without stop(): the destructor stops it
  };
  const int clients = static_cast<int>(w.rng->between(1, 4));
  std::vector<Task<>> tasks;
  tasks.push_back(runner(acc->run()));
  tasks.push_back(ender());
  for (int i = 0; i < clients; ++i) tasks.push_back(client(i));
  co_await when_all(std::move(tasks));
  w.resumed("acceptor when_all");
  if (!run_ended) w.fail("acceptor: run() did not end after stop()");
  // The connection tasks run detached; each is bounded by its deadlines.
  // (A round first: a connection just accepted starts in the next one.)
  int rounds = 0;
  do {
    (void)co_await w.loop->sleep_for(10ms);
    w.resumed("acceptor drain");
  } while (tally->live > 0 && ++rounds < 10'000);
  if (tally->live > 0) w.fail("acceptor: a connection task never ended");
  if (acc && static_cast<long>(acc->accepted()) < tally->served)
    w.fail("acceptor: more connections served than accepted");
  acc.reset();
}


// ---------------------------------------------------------------- datagram
// One end sends numbered datagrams (connected send, sendmsg gathering 1-3
// pieces) while the other receives them through recv_from and recvmsg
// (scatter) into buffers of random size, a callback-form recvmsg the
// driver may cancel, and receive() (the loop's datagram pool), some
// under deadlines, all stopped by one stop source the driver may stop.
// Every datagram received was sent, in order, once, byte-exact (a cut one
// is a prefix and says so); a gap is a datagram the kernel dropped; a send
// reported done is one the kernel took; when the last one arrives, every
// datagram the kernel did not drop arrived.
Task<> datagram(World& w) {
  FrameToken frame;
  std::optional<std::pair<Fd, Fd>> pair = w.datagram_pair();
  if (!pair) co_return;  // a host without datagram sockets
  const int afd = pair->first.get(), bfd = pair->second.get();
  net::DatagramSocket a(*w.loop, std::move(pair->first));
  net::DatagramSocket b(*w.loop, std::move(pair->second));
  auto stop = std::make_shared<std::stop_source>();
  w.stoppable(stop);
  const std::stop_token parent = co_await current_stop_token();
  std::stop_callback<Forward> link(parent, Forward{stop});
  const std::uint64_t count = w.rng->between(1, 60);
  const std::uint64_t salt = w.rng->below(1000), max_len = w.rng->between(1, 700);
  // Datagram `id`: its first byte names it (mod 256); some are empty.
  auto payload = [salt, max_len](std::uint64_t id) {
    const std::size_t len = (id + salt) % 9 == 0 ? 0 : ((id + 1) * 7919 + salt) % (max_len + 1);
    std::string s = pattern(id * 101 + salt, len);
    if (len) s[0] = static_cast<char>(id);
    return s;
  };
  std::uint64_t sent_ok = 0, received = 0;
  std::int64_t last = -1;  // the id of the last datagram received
  bool receiver_done = false;

  auto sender = [&]() -> Task<> {
    FrameToken f;
    const std::stop_token tok = stop->get_token();
    for (std::uint64_t id = 0; id < count; ++id) {
      if (w.rng->chance(0.15)) {
        (void)co_await w.loop->sleep_for(some_time(w) / 4);
        w.resumed("datagram sender sleep");
      }
      const std::string d = payload(id);
      Result<std::size_t> r = std::size_t{0};
      if (w.rng->chance(0.5) || d.size() < 3) {
        r = co_await a.send(ConstBuffer{d.data(), d.size()}).stop_on(tok);
        w.resumed("datagram send");
      } else {
        const std::size_t x = w.rng->between(1, d.size() - 2);
        const std::size_t y = w.rng->between(x, d.size() - 1);
        char* p = const_cast<char*>(d.data());
        const std::array<iovec, 3> iov{iovec{p, x}, iovec{p + x, y - x}, iovec{p + y, d.size() - y}};
        r = co_await a.sendmsg(iov).stop_on(tok);
        w.resumed("datagram sendmsg");
      }
      if (!r) break;
      if (*r != d.size()) w.fail("datagram: a send reported " + std::to_string(*r) + " of " +
                                 std::to_string(d.size()) + " bytes");
      ++sent_ok;
    }
    // Gives the receiver time, then ends its wait (the last datagram may
    // have been dropped).
    for (int i = 0; i < 4 && !receiver_done; ++i) {
      (void)co_await w.loop->sleep_for(some_time(w));
      w.resumed("datagram sender wait");
    }
    stop->request_stop();
  };

  auto receiver = [&]() -> Task<> {
    FrameToken f;
    const std::stop_token tok = stop->get_token();
    std::array<char, 800> store{};
    // Once receive() armed a multishot recvmsg it stays armed and takes
    // datagrams between receives: a recv_from then would overtake them
    // (as documented), so this receiver sticks to receive() from then on.
    bool pinned = false;
    while (last + 1 < static_cast<std::int64_t>(count)) {
      std::string got;
      bool cut = false;
      const bool deadline = w.rng->chance(0.3);
      Error err{};
      bool ok = true;
      if (!pinned && w.rng->chance(0.2)) {
        // The callback form (a one-shot recvmsg whose Operation the driver
        // may cancel at any step; the stop cancels it too): its buffer and
        // result live with the callback, which may outlive this frame.
        struct Slot {
          std::array<char, 800> buf{};
          std::optional<Result<Datagram>> r;
          Channel<int> done{1};
        };
        auto slot = std::make_shared<Slot>();
        const iovec v{slot->buf.data(), w.rng->between(1, slot->buf.size())};
        Operation op = w.loop->launch_op<detail::RecvmsgOp>(
            [slot, wit = Witness{}](Operation&, Result<Datagram> r) {
              slot->r = std::move(r);
              int one = 1;
              (void)slot->done.try_send(one);
            },
            b.fd(), std::span<const iovec>(&v, 1), 0);
        w.cancellable(op);
        {
          auto cancel = [&op]() noexcept { op.cancel(); };
          std::stop_callback<decltype(cancel)> on_stop(tok, cancel);
          (void)co_await slot->done.receive();
          w.resumed("datagram recvmsg callback");
        }
        if (*slot->r) {
          const Datagram& d = **slot->r;
          if (d.size > v.iov_len) w.fail("datagram: recvmsg says more bytes than its buffer");
          got.assign(slot->buf.data(), std::min(d.size, v.iov_len));
          cut = d.truncated;
        } else {
          ok = false;
          err = slot->r->error();
        }
      } else if (pinned || w.rng->chance(0.5)) {
        std::optional<Duration> t;
        if (deadline) t = some_time(w);
        auto d = co_await b.receive(t).stop_on(tok);
        w.resumed("datagram receive");
        pinned = w.loop->datagram_buffer_stats().multishot;
        if (d) {
          got.assign(d->data.view());
          cut = d->truncated;
        } else {
          ok = false;
          err = d.error();
        }
      } else {
        const MutableBuffer buf{store.data(), w.rng->between(1, store.size())};
        Result<Datagram> d = Datagram{};
        if (deadline) {
          d = co_await b.recv_from(buf, IoOptions{.timeout = some_time(w)}).stop_on(tok);
        } else if (buf.size >= 2 && w.rng->chance(0.4)) {
          // Scatter: one datagram over two pieces of the buffer, in order.
          const std::size_t x = w.rng->between(1, buf.size - 1);
          const std::array<iovec, 2> iov{iovec{store.data(), x},
                                         iovec{store.data() + x, buf.size - x}};
          d = co_await b.recvmsg(iov).stop_on(tok);
        } else {
          d = co_await b.recv_from(buf).stop_on(tok);
        }
        w.resumed("datagram recv_from");
        if (d) {
          if (d->size > buf.size) w.fail("datagram: recv_from says more bytes than its buffer");
          got.assign(store.data(), std::min(d->size, buf.size));
          cut = d->truncated;
        } else {
          ok = false;
          err = d.error();
        }
      }
      if (!ok) {
        if (err.code == std::errc::timed_out) continue;
        // An injected cancel of the callback form's op: receive again.
        if (err.code == std::errc::operation_canceled && !tok.stop_requested()) continue;
        break;  // stopped (or the socket failed)
      }
      // The first datagram after `last` it can be (smallest id: what it
      // matches, by prefix when cut).
      std::uint64_t id = static_cast<std::uint64_t>(last + 1);
      for (; id < count; ++id) {
        const std::string want = payload(id);
        if (cut ? got.size() < want.size() && want.starts_with(got) : got == want) break;
      }
      if (id >= count || id >= sent_ok + 1) {
        w.fail("datagram: received " + std::to_string(got.size()) + (cut ? " (cut)" : "") +
               " bytes after datagram " + std::to_string(last) +
               " that match no datagram sent after it");
        break;
      }
      last = static_cast<std::int64_t>(id);
      ++received;
    }
    receiver_done = true;
    stop->request_stop();
  };

  auto st = sender();
  auto rt = receiver();
  co_await when_all(std::move(st), std::move(rt));
  w.resumed("datagram when_all");
  const auto sent = w.datagram_tally(afd);
  const auto at_b = w.datagram_tally(bfd);
  if (sent && sent->sent != sent_ok)
    w.fail("datagram: " + std::to_string(sent_ok) + " sends reported done, the kernel took " +
           std::to_string(sent->sent));
  const std::uint64_t dropped = at_b ? at_b->dropped : 0;
  const std::uint64_t gaps = static_cast<std::uint64_t>(last + 1) - received;
  if (gaps > dropped)
    w.fail("datagram: " + std::to_string(gaps) + " datagrams missing before the last received, " +
           std::to_string(dropped) + " dropped by the kernel");
  if (last + 1 == static_cast<std::int64_t>(count) && received + dropped != count)
    w.fail("datagram: the last datagram arrived, but " + std::to_string(received) + " received + " +
           std::to_string(dropped) + " dropped of " + std::to_string(count) + " sent");
}

// ---------------------------------------------------------------- splice
// A proxy moves a client's bytes to a sink without copying them: splice
// from its socket into a pipe, then from the pipe to the sink's socket,
// under one stop source the driver may stop. The sink gets a prefix of
// what the client sent, every byte at its place, and all of it when
// nothing failed.
Task<> splice(World& w) {
  FrameToken frame;
  std::optional<std::pair<Fd, Fd>> p = w.pipe();
  if (!p) co_return;  // a host without pipes
  Fd pr = std::move(p->first), pw = std::move(p->second);
  auto [c, s] = w.connect_pair();    // client -> proxy
  auto [d1, d2] = w.connect_pair();  // proxy -> sink
  auto stop = std::make_shared<std::stop_source>();
  w.stoppable(stop);
  const std::stop_token parent = co_await current_stop_token();
  std::stop_callback<Forward> link(parent, Forward{stop});
  const std::uint64_t total = w.rng->between(1, 6000);
  std::uint64_t client_sent = 0, proxied = 0;
  bool clean = false;  // the proxy forwarded everything up to the client's end
  Checked sink_in{&w, "splice sink"};
  bool sink_eof = false;

  auto client = [&]() -> Task<> {
    FrameToken f;
    while (client_sent < total) {
      const std::size_t n = std::min<std::uint64_t>(w.rng->between(1, 2000), total - client_sent);
      auto [ok, moved] = co_await send_some(w, c.get(), pattern(client_sent, n), stop->get_token());
      client_sent += moved;
      if (!ok) {
        stop->request_stop();
        break;
      }
    }
    (void)co_await w.loop->shutdown(c, Shutdown::write);
    w.resumed("splice client shutdown");
  };
  auto proxy = [&]() -> Task<> {
    FrameToken f;
    const std::stop_token tok = stop->get_token();
    for (;;) {
      auto in = co_await w.loop->splice(s, pw, w.rng->between(1, 4096)).stop_on(tok);
      w.resumed("splice in");
      if (!in) break;
      if (*in == 0) {
        clean = true;
        break;
      }
      std::size_t moved = 0;
      while (moved < *in) {
        auto out = co_await w.loop->splice(pr, d1, *in - moved).stop_on(tok);
        w.resumed("splice out");
        if (!out || *out == 0) break;
        moved += *out;
      }
      proxied += moved;
      if (moved < *in) break;
    }
    if (!clean) stop->request_stop();
    (void)co_await w.loop->shutdown(d1, Shutdown::write);  // the sink's end of stream
    w.resumed("splice proxy shutdown");
  };
  auto sink = [&]() -> Task<> {
    FrameToken f;
    std::array<char, 700> buf{};
    for (;;) {
      auto got = co_await receive(w, d2.get(), buf, stop->get_token(), false);
      if (!got) break;
      if (got->empty()) {
        sink_eof = true;
        break;
      }
      sink_in.take(*got);
    }
    stop->request_stop();  // nothing more is read: the others end too
  };
  auto ct = client();
  auto pt = proxy();
  auto st = sink();
  co_await when_all(std::move(ct), std::move(pt), std::move(st));
  w.resumed("splice when_all");
  conserved(w, "splice client", client_sent, c.get());
  conserved(w, "splice proxy", proxied, d1.get());
  if (sink_in.pos > proxied) w.fail("splice: the sink got more than the proxy moved");
  if (proxied > client_sent) w.fail("splice: the proxy moved more than the client sent");
  if (clean && sink_eof && sink_in.pos != client_sent)
    w.fail("splice: " + std::to_string(sink_in.pos) + " of " + std::to_string(client_sent) +
           " bytes reached the sink though nothing failed");
  for (Fd* fd : {&c, &s, &d1, &d2, &pr, &pw}) (void)co_await w.loop->close(*fd);
  w.resumed("close");
}


// ---------------------------------------------------------------- files
// A file written in regions by concurrent write_all_at ops (some with a
// deadline, some under a stop the driver may request), on the simulator's
// file workers (queued, running, slow, stuck), then read back: every
// region holds exactly what its op reported (`transferred` included) and
// nothing else. Then the file's fd is closed through the loop while one
// more write on it may still be queued, and a second file is opened at
// once (it gets the number): that write lands in the first file or
// nowhere, never in the second.
Task<> files(World& w) {
  FrameToken frame;
  const std::optional<std::string> dir = w.file_dir();
  if (!dir) co_return;  // a host without simulated files
  static std::uint64_t serial = 0;  // distinct paths across workloads and seeds
  const std::string one = *dir + "/one-" + std::to_string(++serial);
  const std::string two = *dir + "/two-" + std::to_string(serial);
  auto opened = co_await File::open(*w.loop, one, O_RDWR | O_CREAT, 0600);
  w.resumed("File::open");
  if (!opened) co_return;  // cancelled by teardown or a stop: nothing to check
  File f = std::move(*opened);
  auto stop = std::make_shared<std::stop_source>();
  w.stoppable(stop);
  const std::stop_token parent = co_await current_stop_token();
  std::stop_callback<Forward> link(parent, Forward{stop});
  constexpr std::size_t kRegion = 24;
  const std::size_t regions = w.rng->between(1, 6);
  std::vector<std::uint64_t> wrote(regions, 0);  // bytes each op says it wrote
  auto writer = [&](std::size_t i) -> Task<> {
    FrameToken t;
    const std::string data = pattern(i * kRegion, kRegion);
    const std::uint64_t at = i * kRegion;
    Result<std::size_t> r = std::size_t{0};
    const auto how = w.rng->below(3);
    if (how == 0) {
      r = co_await f.write_all_at(data, at);
    } else if (how == 1) {
      r = co_await f.write_all_at(data, at, IoOptions{.timeout = some_time(w)});
    } else {
      r = co_await f.write_all_at(data, at).stop_on(stop->get_token());
    }
    w.resumed("write_all_at");
    if (r) {
      if (*r != data.size()) w.fail("files: write_all_at succeeded short");
      wrote[i] = *r;
    } else {
      wrote[i] = r.error().transferred;
      if (!r.error().is_cancelled() && !r.error().is_timeout())
        w.fail("files: write_all_at failed: " + r.error().message());
    }
  };
  std::vector<Task<>> writers;
  for (std::size_t i = 0; i < regions; ++i) writers.push_back(writer(i));
  co_await when_all(std::move(writers));
  w.resumed("files when_all");
  // What the file must hold: each region's reported prefix, zeros between.
  std::size_t length = 0;
  for (std::size_t i = 0; i < regions; ++i)
    if (wrote[i]) length = std::max<std::size_t>(length, i * kRegion + wrote[i]);
  std::string want(length, '\0');
  for (std::size_t i = 0; i < regions; ++i)
    if (wrote[i]) want.replace(i * kRegion, wrote[i], pattern(i * kRegion, wrote[i]));
  std::string got;
  std::array<char, 64> buf{};
  for (;;) {
    auto n = co_await f.read_at(buf, got.size());
    w.resumed("read_at");
    if (!n) co_return;  // a teardown, or a stop that reached the task: nothing to compare
    if (*n == 0) break;
    got.append(buf.data(), *n);
    if (got.size() > length + kRegion) break;
  }
  if (got != want)
    w.fail("files: the file holds " + std::to_string(got.size()) + " bytes, not the " +
           std::to_string(want.size()) + " its writes reported");
  if (!w.rng->chance(0.6)) {
    (void)co_await f.close();
    w.resumed("close");
    co_return;
  }
  // Close while a write on the fd may still be queued; reuse the number.
  const int number = f.fd();
  std::optional<Result<std::size_t>> orphan;
  auto late = [&]() -> Task<> {
    FrameToken t;
    auto r = co_await w.loop->write(number, std::string_view("ORPHAN"), 1000);
    w.resumed("orphan write");
    orphan = r;
  };
  JoinHandle<void> h = w.loop->spawn(late());
  (void)co_await w.loop->nop();  // the orphan write is submitted first
  w.resumed("nop");
  (void)co_await f.close();
  w.resumed("close");
  auto second = co_await File::open(*w.loop, two, O_RDWR | O_CREAT, 0600);
  w.resumed("File::open (second)");
  if (second) {
    const std::string_view mine = "SECOND";
    auto r = co_await second->write_all_at(mine, 0);
    w.resumed("write_all_at (second)");
    co_await std::move(h);
    w.resumed("orphan joined");
    std::string back;
    for (;;) {
      auto n = co_await second->read_at(buf, back.size());
      w.resumed("read_at (second)");
      if (!n || *n == 0) break;
      back.append(buf.data(), *n);
      if (back.size() > 64) break;
    }
    const std::string expect = r ? std::string(mine) : std::string(mine.substr(0, r.error().transferred));
    if (back != expect)
      w.fail("files: the second file, opened at fd " + std::to_string(number) +
             "'s number while a write on it was pending, holds \"" + back + "\"" +
             (second->fd() == number ? " (the number was reused)" : ""));
    (void)co_await second->close();
    w.resumed("close (second)");
  } else {
    co_await std::move(h);
    w.resumed("orphan joined");
  }
  (void)orphan;
}

}  // namespace

std::vector<std::pair<const char*, Workload>> workloads() {
  return {{"echo", echo},   {"race", race},       {"stream", stream}, {"group", group},
          {"channel", channel}, {"timers", timers}, {"sources", sources},
          {"acceptor", acceptor}, {"datagram", datagram},
          {"splice", splice}, {"files", files}, {"tls", tls_echo}};
}

}  // namespace lev::sim
