// A program outside lev's tree: the app.cpp of the README's and the
// tutorial's "use it in your project" (tests/consumer/commands.sh). lev's
// build compiles and runs it; scripts/consumer.sh builds it against an
// installed lev (pkg-config, CMake find_package, Meson) and against lev as
// a Meson subproject, then runs it: it must print "consumer: hello" and
// exit 0.
#include <lev/lev.hpp>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>
#include <string_view>

namespace {

lev::Task<std::string> round_trip(lev::Loop& loop, lev::Fd& in, lev::Fd& out) {
  (co_await loop.write(out, std::string_view("hello"))).value();
  std::array<char, 16> buf{};
  auto n = co_await loop.read(in, buf);
  co_return n.transform([&](std::size_t k) { return std::string(buf.data(), k); }).value_or("");
}

}  // namespace

int main() {
#ifdef LEV_CONSUMER_WARN
  int unused_on_purpose = 0;  // a warning, not an error: lev's -Werror stays in lev
#endif
  int fds[2];
  if (::pipe(fds) != 0) return 1;
  lev::Fd in{fds[0]};
  lev::Fd out{fds[1]};
  lev::Loop loop{lev::Model::reactor};  // epoll: runs where io_uring is disabled too
  const std::string text = loop.block_on(round_trip(loop, in, out));
  std::printf("consumer: %s\n", text.c_str());
  return text == "hello" ? 0 : 1;
}
