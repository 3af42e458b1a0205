#pragma once
// Running the example programs from the examples suites: start one (its
// stdout on a pipe, its stderr optionally kept), wait for it with a bound,
// talk to a server over loopback, read what the kernel says of a process.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "temp_dir.hpp"

namespace lev::examples_test {

inline std::string example_path(const std::string& name) {
  const char* dir = std::getenv("LEV_EXAMPLES_DIR");
  REQUIRE_MESSAGE(dir != nullptr, "LEV_EXAMPLES_DIR is not set (run through meson test)");
  return std::string(dir) + "/" + name;
}

/// The seccomp launcher that refuses io_uring_setup (tests/no_uring.cpp).
inline std::string no_uring_path() {
  const char* p = std::getenv("LEV_NO_URING");
  REQUIRE_MESSAGE(p != nullptr, "LEV_NO_URING is not set (run through meson test)");
  return p;
}

struct Child {
  pid_t pid = -1;
  int out = -1;  // its stdout
};

/// Starts `args` (argv[0] a path) with `input` on its stdin; its stderr
/// goes to `err_path` when given (else it is inherited).
inline Child start(const std::vector<std::string>& args, const std::string& input = {},
                   const std::string& err_path = {}) {
  int p[2], in[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(p[1], 1);
    ::dup2(in[0], 0);
    if (!err_path.empty()) {
      int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (e >= 0) ::dup2(e, 2);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(p[1]);
  ::close(in[0]);
  if (!input.empty()) (void)!::write(in[1], input.data(), input.size());
  ::close(in[1]);
  return {pid, p[0]};
}

/// Reads until `stop` is seen (or EOF, or the deadline passes).
inline std::string read_until(int fd, const std::string& stop, std::chrono::milliseconds limit) {
  std::string got;
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (got.find(stop) == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[512];
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

/// The exit code (128 + signal when killed); -1 when it had to be killed
/// after `limit`.
inline int wait_exit(pid_t pid, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    ::usleep(10'000);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct Run {
  int code;
  std::string out;
};

inline Run run(const std::vector<std::string>& args,
               std::chrono::milliseconds limit = std::chrono::seconds(20),
               const std::string& input = {}) {
  Child c = start(args, input);
  std::string out = read_until(c.out, "\x01never", limit);
  ::close(c.out);
  return {wait_exit(c.pid, std::chrono::seconds(5)), out};
}

/// Starts a server, returns it and its port from "listening on HOST:PORT".
inline std::pair<Child, std::string> start_server(std::vector<std::string> args,
                                                  const std::string& err_path = {}) {
  Child c = start(args, {}, err_path);
  std::string line = read_until(c.out, "\n", std::chrono::seconds(10));
  REQUIRE_MESSAGE(line.rfind("listening on 127.0.0.1:", 0) == 0, line);
  std::string port = line.substr(line.rfind(':') + 1);
  port.erase(port.find('\n'));
  return {c, port};
}

/// SIGTERM, then the exit code (-1: still running after `limit`, killed).
inline int stop_server(Child& c, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  ::kill(c.pid, SIGTERM);
  int code = wait_exit(c.pid, limit);
  ::close(c.out);
  return code;
}

inline int connect_to(const std::string& port, int rcvbuf = 0) {
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<std::uint16_t>(std::stoi(port)));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  if (rcvbuf) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
  return fd;
}

inline void send_str(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    REQUIRE(n > 0);
    done += static_cast<std::size_t>(n);
  }
}

/// Everything until the peer closes (or 5 s pass without data).
inline std::string read_all(int fd) {
  std::string got;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) got.append(buf, static_cast<std::size_t>(n));
  return got;
}

/// Reads until the peer closes (EOF or reset): true, or false when it is
/// still open after `limit` (what arrives meanwhile is dropped).
inline bool closed_within(int fd, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char sink[65536];
    if (::recv(fd, sink, sizeof sink, MSG_DONTWAIT) <= 0) return true;
  }
}

/// A process's resident memory, in KiB (VmRSS).
inline long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

/// A process's CPU time so far (user + system), in seconds.
inline double cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::istringstream rest(all.substr(all.rfind(')') + 2));  // after "pid (comm) "
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i)
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

inline std::string slurp(const std::string& path) {
  std::ifstream f(path);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

/// How often `needle` occurs in `hay`.
inline std::size_t count_of(const std::string& hay, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1))
    ++n;
  return n;
}

}  // namespace lev::examples_test
