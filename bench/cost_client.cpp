// A load client that sends a fixed number of requests, for bench/cost.py:
// the server runs under callgrind twice, with two counts, and the
// difference of its instruction totals over the difference of the counts
// is its cost per request (start-up and shutdown cancel out).
//   cost_client --port P [--mode echo|http] [--conns C] [--count M] [--size S]
// Each of C connections makes M round trips, all connections at once: echo
// sends S bytes and waits for S back; http sends a keep-alive GET and waits
// for one whole response (headers and Content-Length body). Prints
// "messages N" (N = C x M on success); exit 1 on any error.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct Args {
  int port = 0;
  bool http = false;
  int conns = 50;
  long count = 1000;
  std::size_t size = 64;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help") {
      std::printf("cost_client --port P [--mode echo|http] [--conns C] [--count M] [--size S]\n");
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "cost_client: %s needs a value\n", k.c_str());
      std::exit(2);
    }
    const char* v = argv[++i];
    if (k == "--port")
      a.port = std::atoi(v);
    else if (k == "--mode")
      a.http = std::string_view(v) == "http";
    else if (k == "--conns")
      a.conns = std::atoi(v);
    else if (k == "--count")
      a.count = std::atol(v);
    else if (k == "--size")
      a.size = static_cast<std::size_t>(std::atol(v));
    else {
      std::fprintf(stderr, "cost_client: unknown option %s\n", k.c_str());
      std::exit(2);
    }
  }
  if (a.port <= 0 || a.conns <= 0 || a.count <= 0 || a.size == 0) {
    std::fprintf(stderr, "cost_client: --port, --conns, --count and --size must be positive\n");
    std::exit(2);
  }
  return a;
}

struct Conn {
  int fd = -1;
  long left = 0;    // round trips still to make
  std::string got;  // bytes of the current response
};

constexpr std::string_view kRequest = "GET / HTTP/1.1\r\nHost: cost\r\n\r\n";

// The length of the first whole HTTP response in `s`, or 0.
std::size_t http_response_length(const std::string& s) {
  const std::size_t end = s.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  std::size_t body = 0;
  const std::size_t cl = s.find("Content-Length:");
  if (cl != std::string::npos && cl < end) body = std::strtoul(s.c_str() + cl + 15, nullptr, 10);
  const std::size_t total = end + 4 + body;
  return s.size() >= total ? total : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  const std::string out = a.http ? std::string(kRequest) : std::string(a.size, 'x');
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<std::uint16_t>(a.port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<Conn> conns(static_cast<std::size_t>(a.conns));
  for (std::size_t i = 0; i < conns.size(); ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) != 0) {
      std::perror("cost_client: connect");
      return 1;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ::fcntl(fd, F_SETFL, O_NONBLOCK);
    conns[i] = Conn{fd, a.count, {}};
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  auto send_one = [&](Conn& c) {
    if (::send(c.fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) {
      std::perror("cost_client: send");
      std::exit(1);
    }
  };
  for (Conn& c : conns) send_one(c);
  long active = a.conns;
  long messages = 0;
  std::vector<char> in(65536);
  epoll_event events[256];
  while (active > 0) {
    const int n = ::epoll_wait(ep, events, 256, 30000);
    if (n == 0) {
      std::fprintf(stderr, "cost_client: no answer for 30 s (%ld messages done)\n", messages);
      return 1;
    }
    for (int i = 0; i < n; ++i) {
      Conn& c = conns[events[i].data.u64];
      for (;;) {
        const ssize_t r = ::recv(c.fd, in.data(), in.size(), 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r <= 0) {
          std::fprintf(stderr, "cost_client: the server closed a connection (%ld messages done)\n",
                       messages);
          return 1;
        }
        c.got.append(in.data(), static_cast<std::size_t>(r));
        for (;;) {
          const std::size_t whole =
              a.http ? http_response_length(c.got) : (c.got.size() >= a.size ? a.size : 0);
          if (whole == 0) break;
          c.got.erase(0, whole);
          ++messages;
          if (--c.left > 0)
            send_one(c);
          else
            --active;
        }
      }
    }
  }
  for (Conn& c : conns) ::close(c.fd);
  ::close(ep);
  std::printf("messages %ld\n", messages);
  return 0;
}
