// read and write: a pipe between two coroutines, then a file at offsets.
//   read_write [--backend uring|epoll|auto]
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>

#include "common.hpp"
#include "lev/lev.hpp"

lev::Task<> producer(lev::Loop& loop, lev::Fd w) {
  for (int i = 1; i <= 3; ++i) {
    std::string line = "line " + std::to_string(i) + "\n";
    (co_await loop.write_all(w, line)).value();
  }
  (void)co_await loop.close(w);  // the reader sees end of file
}

lev::Task<> consumer(lev::Loop& loop, lev::Fd r) {
  std::array<char, 256> buf;
  std::string all;
  for (;;) {
    auto n = co_await loop.read(r, buf);
    if (!n || *n == 0) break;
    all.append(buf.data(), *n);
  }
  std::printf("pipe carried: %s", all.c_str());
}

lev::Task<> file_demo(lev::Loop& loop) {
  char path[] = "/tmp/lev-read-write-XXXXXX";
  lev::Fd f{::mkstemp(path)};
  ::unlink(path);
  (co_await loop.write_all(f, std::string_view("hello, world"), 0)).value();
  std::array<char, 5> word{};
  auto n = (co_await loop.read(f, word, 7)).value();
  std::printf("file at offset 7: %.*s\n", static_cast<int>(n), word.data());
}

int main(int argc, char** argv) {
  example::LoopArgs loop_args;
  example::Cli cli{"read_write", "A pipe between two coroutines, then a file at offsets."};
  loop_args.add_to(cli, false);
  cli.parse(argc, argv);
  lev::Loop loop{lev::Model::proactor, loop_args.options()};
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return 1;
  loop.spawn(consumer(loop, lev::Fd{p[0]}));
  loop.spawn(producer(loop, lev::Fd{p[1]}));
  loop.run();
  loop.block_on(file_demo(loop));
}
