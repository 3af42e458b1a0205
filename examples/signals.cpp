// Signals through signalfd: counts SIGUSR1s and stops on SIGINT.
//   signals [--self-test]   (--self-test sends itself 3 x SIGUSR1, then SIGINT)
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "common.hpp"
#include "lev/lev.hpp"

int main(int argc, char** argv) {
  bool self_test = false;
  example::Cli cli{"signals", "Counts SIGUSR1s through signalfd and stops on SIGINT."};
  cli.flag("--self-test", self_test, "send itself 3 x SIGUSR1, then SIGINT");
  cli.parse(argc, argv);
  lev::Loop loop{lev::Model::reactor};
  int usr1 = 0;
  auto on_usr1 = loop.signal(SIGUSR1, [&](int) { std::printf("SIGUSR1 #%d\n", ++usr1); });
  auto on_int = loop.signal(SIGINT, [&](int signo) {
    std::printf("signal %d (SIGINT): stopping\n", signo);
    loop.stop();
  });
  std::printf("pid %d: waiting for SIGUSR1 / SIGINT\n", static_cast<int>(::getpid()));
  std::fflush(stdout);
  if (self_test) {
    loop.after(std::chrono::milliseconds(10),
               [](lev::Operation&, auto) { ::kill(::getpid(), SIGUSR1); });
    loop.after(std::chrono::milliseconds(20),
               [](lev::Operation&, auto) { ::kill(::getpid(), SIGUSR1); });
    loop.after(std::chrono::milliseconds(30),
               [](lev::Operation&, auto) { ::kill(::getpid(), SIGUSR1); });
    loop.after(std::chrono::milliseconds(60),
               [](lev::Operation&, auto) { ::kill(::getpid(), SIGINT); });
  }
  loop.run();
  std::printf("got %d SIGUSR1\n", usr1);
}
