// Echo benchmark: lev's two engines against hand-written liburing and
// epoll servers, in one process. Server on core 0, load client on core 1; servers alternated
// round by round; medians. Reports msgs/s, p99 latency, the server
// thread's CPU time per message and its heap allocations per message.
//
//   echo_bench [--seconds 2] [--rounds 3] [--conns 50] [--size 64]
//   echo_bench --client PORT [--seconds 5] ...   (load only, for callgrind)
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "alloc_counter.hpp"
#include "lev/lev.hpp"
#include "load_client.hpp"
#include "servers.hpp"

namespace {

struct Args {
  double seconds = 2.0;
  int rounds = 3;
  int conns = 50;
  std::size_t size = 64;
  int client_port = 0;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i += 2) {
    std::string k = argv[i];
    if (i + 1 == argc) {
      std::fprintf(stderr, "echo_bench: %s needs a value (options: --seconds --rounds --conns "
                   "--size --client)\n", k.c_str());
      std::exit(2);
    }
    const char* v = argv[i + 1];
    if (k == "--seconds")
      a.seconds = std::atof(v);
    else if (k == "--rounds")
      a.rounds = std::atoi(v);
    else if (k == "--conns")
      a.conns = std::atoi(v);
    else if (k == "--size")
      a.size = static_cast<std::size_t>(std::atol(v));
    else if (k == "--client")
      a.client_port = std::atoi(v);
    else {
      std::fprintf(stderr, "echo_bench: unknown option %s\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

void pin(int cpu) {
  if (std::thread::hardware_concurrency() < 2) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

double thread_cpu_seconds(pthread_t t) {
  clockid_t cid;
  if (pthread_getcpuclockid(t, &cid) != 0) return 0;
  timespec ts{};
  clock_gettime(cid, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct Sample {
  double msgs_per_s = 0, p99_us = 0, cpu_ns_per_msg = 0, allocs_per_msg = 0;
  bool ok = true;
};

struct Server {
  const char* name;
  std::function<void(int, const std::atomic<bool>&)> serve;
  // Serves on threads of its own: its CPU is the process's minus the
  // client's (this thread's), and its allocations are not counted.
  bool threaded = false;
  // Or a separate program (Asio): started pinned to cpu 0 with --port 0,
  // its CPU read from /proc/PID/stat; allocations not counted.
  std::string program{};
};

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double proc_cpu_seconds(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/stat";
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return 0;
  char buf[1024];
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* p = std::strrchr(buf, ')');
  if (!p) return 0;
  unsigned long utime = 0, stime = 0;
  // after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
  std::sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime);
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

Sample run_program(const Server& server, const Args& a) {
  int out[2];
  if (::pipe(out) != 0) return Sample{0, 0, 0, -1, false};
  pid_t pid = ::fork();
  if (pid == 0) {
    pin(0);
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    ::execl(server.program.c_str(), server.program.c_str(), "--port", "0", "--max-seconds", "600",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  std::string line;
  char c;
  while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
  ::close(out[0]);
  Sample s;
  auto colon = line.rfind(':');
  if (colon == std::string::npos) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    s.ok = false;
    return s;
  }
  auto to = *lev::SocketAddress::ip("127.0.0.1",
                                    static_cast<std::uint16_t>(std::stoi(line.substr(colon + 1))));
  double cpu0 = 0, cpu1 = 0;
  LoadOptions o;
  o.connections = a.conns;
  o.size = a.size;
  o.seconds = a.seconds;
  o.on_window_start = [&] { cpu0 = proc_cpu_seconds(pid); };
  o.on_window_end = [&] { cpu1 = proc_cpu_seconds(pid); };
  LoadResult r = run_load(to, o);
  ::kill(pid, SIGTERM);
  ::waitpid(pid, nullptr, 0);
  s.ok = r.ok && r.messages > 0;
  double msgs = static_cast<double>(std::max<std::uint64_t>(r.messages, 1));
  s.msgs_per_s = msgs / r.seconds;
  s.p99_us = r.p99_us;
  s.cpu_ns_per_msg = (cpu1 - cpu0) * 1e9 / msgs;
  s.allocs_per_msg = -1;
  return s;
}

Sample run_one(const Server& server, const Args& a) {
  if (!server.program.empty()) return run_program(server, a);
  auto listener = lev::net::Listener::tcp("127.0.0.1", 0, {.backlog = 4096}).value();
  const lev::SocketAddress& bound = listener.address();
  const int lfd = listener.fd();

  std::atomic<bool> stop{false};
  std::thread t([&] {
    pin(0);
    alloc_counter::mark_server();
    server.serve(lfd, stop);
  });
  double cpu0 = 0, cpu1 = 0;
  std::uint64_t al0 = 0, al1 = 0;
  LoadOptions o;
  o.connections = a.conns;
  o.size = a.size;
  o.seconds = a.seconds;
  const pthread_t self = pthread_self();
  auto server_cpu = [&] {
    return server.threaded ? process_cpu_seconds() - thread_cpu_seconds(self)
                           : thread_cpu_seconds(t.native_handle());
  };
  o.on_window_start = [&] {
    cpu0 = server_cpu();
    al0 = alloc_counter::server();
  };
  o.on_window_end = [&] {
    cpu1 = server_cpu();
    al1 = alloc_counter::server();
  };
  LoadResult r = run_load(bound, o);
  stop = true;
  t.join();
  Sample s;
  s.ok = r.ok && r.messages > 0;
  double msgs = static_cast<double>(std::max<std::uint64_t>(r.messages, 1));
  s.msgs_per_s = msgs / r.seconds;
  s.p99_us = r.p99_us;
  s.cpu_ns_per_msg = (cpu1 - cpu0) * 1e9 / msgs;
  s.allocs_per_msg = server.threaded ? -1 : static_cast<double>(al1 - al0) / msgs;
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  pin(1);
  if (a.client_port) {
    LoadOptions o;
    o.connections = a.conns;
    o.size = a.size;
    o.seconds = a.seconds;
    o.warmup_seconds = 0;  // count every message: the profile covers the whole run
    LoadResult r = run_load(
        *lev::SocketAddress::ip("127.0.0.1", static_cast<std::uint16_t>(a.client_port)), o);
    std::printf("messages %llu\n", static_cast<unsigned long long>(r.messages));
    return r.ok ? 0 : 1;
  }
  std::vector<Server> servers = {
      {"raw liburing", [](int fd, const std::atomic<bool>& s) { serve_raw_uring(fd, s); }},
      {"lev proactor",
       [](int fd, const std::atomic<bool>& s) { serve_lev(fd, s, lev::Model::proactor); }},
      {"lev pro pool",
       [](int fd, const std::atomic<bool>& s) { serve_lev(fd, s, lev::Model::proactor, true); }},
      {"raw epoll", [](int fd, const std::atomic<bool>& s) { serve_raw_epoll(fd, s); }},
      {"lev reactor",
       [](int fd, const std::atomic<bool>& s) { serve_lev(fd, s, lev::Model::reactor); }},
      {"lev rea pool",
       [](int fd, const std::atomic<bool>& s) { serve_lev(fd, s, lev::Model::reactor, true); }},
      {"lev pro x2thr", [](int fd, const std::atomic<bool>& s) { serve_lev_threads(fd, s, 2); },
       true},
  };
#ifdef LEV_ASIO_DIR
  servers.push_back({"asio epoll", {}, false, LEV_ASIO_DIR "/asio_echo_epoll"});
  servers.push_back({"asio io_uring", {}, false, LEV_ASIO_DIR "/asio_echo_uring"});
#else
  std::fprintf(stderr, "echo_bench: Boost >= 1.78 was not found at configure time: no Asio rows\n");
#endif
  std::vector<std::vector<Sample>> samples(servers.size());
  for (int round = 0; round < a.rounds; ++round)
    for (std::size_t i = 0; i < servers.size(); ++i) {
      std::size_t k = (i + static_cast<std::size_t>(round)) % servers.size();  // rotate the order
      samples[k].push_back(run_one(servers[k], a));
    }
  std::printf(
      "echo: %d connections, %zu-byte messages, %d rounds x %.1f s, medians; "
      "server on cpu 0, client on cpu 1\n"
      "(pool: loop.recv(fd), the loop's buffer pool, a multishot recv per connection on "
      "io_uring;\n"
      " lev pro x2thr: lev proactor on a 2-loop Runtime, both loops sharing cpu 0 with\n"
      " nothing else free on this 2-core machine; its CPU is the process's minus the client's)\n",
      a.conns, a.size, a.rounds, a.seconds);
  std::printf("%-14s %11s %9s %12s %11s %10s %10s\n", "server", "msgs/s", "p99 us", "cpu ns/msg",
              "allocs/msg", "msgs/s vs", "cpu/msg vs");
  std::printf("%-14s %11s %9s %12s %11s %21s\n", "", "", "", "", "", "(vs raw liburing)");
  double base_rate = 0, base_cpu = 0;
  bool all_ok = true;
  for (std::size_t i = 0; i < servers.size(); ++i) {
    std::vector<double> rate, p99, cpu, al;
    for (auto& s : samples[i]) {
      rate.push_back(s.msgs_per_s);
      p99.push_back(s.p99_us);
      cpu.push_back(s.cpu_ns_per_msg);
      al.push_back(s.allocs_per_msg);
      all_ok = all_ok && s.ok;
    }
    double r = median(rate), c = median(cpu);
    if (i == 0) {
      base_rate = r;
      base_cpu = c;
    }
    char allocs[32];
    if (median(al) < 0)
      std::snprintf(allocs, sizeof allocs, "n/a");
    else
      std::snprintf(allocs, sizeof allocs, "%.3f", median(al));
    std::printf("%-14s %11.0f %9.1f %12.0f %11s %9.2fx %9.2fx\n", servers[i].name, r, median(p99),
                c, allocs, r / base_rate, c / base_cpu);
  }
  if (!all_ok) {
    std::fprintf(stderr, "echo_bench: a round saw errors (connection reset or short send)\n");
    return 1;
  }
}
