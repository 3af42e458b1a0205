// The proactor socket lifecycle, step by step: connect, send, shutdown the
// write side, read the reply to EOF, close. The peer is an in-process echo.
//   socket_lifecycle [--backend uring|epoll|auto]
#include <cstdio>
#include <string>

#include "common.hpp"
#include "lev/lev.hpp"

lev::Task<> peer(lev::Loop& loop, const lev::net::Listener& l) {
  auto conn = (co_await loop.accept(l.fd())).value();
  std::string all;
  char buf[256];
  for (;;) {  // read to EOF (the client's shutdown), then answer
    auto n = (co_await loop.recv(conn.fd, buf)).value();
    if (n == 0) break;
    all.append(buf, n);
  }
  (co_await loop.send_all(conn.fd, "you said: " + all)).value();
  (co_await loop.close(conn.fd)).value();
}

lev::Task<> client(lev::Loop& loop, const lev::SocketAddress& to) {
  lev::Fd s{::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  (co_await loop.connect(s, to)).value();
  std::puts("1. connected");
  (co_await loop.send_all(s, std::string_view("hello, lifecycle"))).value();
  std::puts("2. sent 16 bytes");
  (co_await loop.shutdown(s, lev::Shutdown::write)).value();
  std::puts("3. shut down the write side");
  std::string reply;
  char buf[256];
  for (;;) {
    auto n = (co_await loop.recv(s, buf)).value();
    if (n == 0) break;
    reply.append(buf, n);
  }
  std::printf("4. read to EOF: \"%s\"\n", reply.c_str());
  (co_await loop.close(s)).value();
  std::puts("5. closed");
}

int main(int argc, char** argv) {
  example::LoopArgs loop_args;
  example::Cli cli{"socket_lifecycle",
                   "Connect, send, shut down the write side, read to EOF, close."};
  loop_args.add_to(cli, false);
  cli.parse(argc, argv);
  lev::Loop loop{lev::Model::proactor, loop_args.options()};
  auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
  loop.spawn(peer(loop, l));
  loop.block_on(client(loop, l.address()));
  loop.run();
}
