// Watchers: readiness callbacks on a socket pair. The reader watches for
// input; the writer's watcher writes once, then turns its interest off.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "common.hpp"
#include "lev/lev.hpp"

int main(int argc, char** argv) {
  example::Cli cli{"watchers", "Readiness callbacks on a socket pair."};
  cli.parse(argc, argv);
  lev::Loop loop{lev::Model::reactor};
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 1;
  lev::Fd reader{sv[0]}, writer{sv[1]};
  std::string got;
  lev::Watcher in = loop.watch(reader, {.read = [&](lev::Watcher& w) {
                                 char buf[64];
                                 ssize_t n = ::recv(w.fd(), buf, sizeof(buf), 0);
                                 if (n <= 0) {  // the writer closed
                                   std::printf("reader got: %s\n", got.c_str());
                                   w.cancel();
                                   return;
                                 }
                                 got.append(buf, static_cast<std::size_t>(n));
                               }});
  int writes = 0;
  lev::Watcher out =
      loop.watch(writer, {.write = [&](lev::Watcher& w) {
                   const char* parts[] = {"hello ", "from ", "a watcher"};
                   (void)!::send(w.fd(), parts[writes], std::string(parts[writes]).size(), 0);
                   if (++writes == 3) {
                     w.cancel();
                     writer.reset();  // EOF for the reader
                   }
                 }});
  loop.run();
}
