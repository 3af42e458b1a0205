// Fork children and report their exits through pidfd.
#include <signal.h>
#include <unistd.h>

#include <cstdio>

#include "common.hpp"
#include "lev/lev.hpp"

int main(int argc, char** argv) {
  example::Cli cli{"pidfd", "Forks children and reports their exits through pidfd."};
  cli.parse(argc, argv);
  lev::Loop loop{lev::Model::reactor};
  pid_t quick = ::fork();
  if (quick == 0) ::_exit(3);
  pid_t sleeper = ::fork();
  if (sleeper == 0) {
    ::pause();
    ::_exit(0);
  }
  int left = 2;
  auto report = [&](pid_t pid, lev::Result<lev::ExitStatus> st) {
    std::printf("child %s %s\n", pid == quick ? "quick" : "sleeper",
                st ? st->describe().c_str() : st.error().message().c_str());
    if (--left == 0) loop.stop();
  };
  auto w1 = loop.pid(quick, report);
  auto w2 = loop.pid(sleeper, report);
  ::kill(sleeper, SIGKILL);
  loop.run();
}
