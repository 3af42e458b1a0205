// Runs a child command, streams its stdout line by line, reports its exit.
//   spawn [--backend uring|epoll|auto] [--] [command args...]
//   (default command: sh -c 'echo hello; echo world; exit 7')
#include <cstdio>
#include <string>
#include <vector>

#include "common.hpp"
#include "lev/lev.hpp"

lev::Task<int> run(lev::Loop& loop, std::vector<std::string> argv) {
  auto child = lev::Child::spawn(loop, {.argv = std::move(argv)});
  if (!child) {
    std::fprintf(stderr, "spawn: %s\n", child.error().message().c_str());
    co_return 127;
  }
  lev::net::Stream out{loop, std::move(child->stdout_fd())};
  for (;;) {
    auto line = co_await out.read_message();
    if (!line || !*line) break;
    std::printf("child says: %s\n", (*line)->c_str());
  }
  auto status = co_await child->wait();
  if (!status) {
    std::fprintf(stderr, "spawn: %s\n", status.error().message().c_str());
    co_return 1;
  }
  std::printf("child %d %s\n", static_cast<int>(child->pid()), status->describe().c_str());
  co_return 0;
}

int main(int argc, char** argv) {
  std::vector<std::string> cmd;
  example::LoopArgs loop_args;
  example::Cli cli{"spawn", "Runs a command, streams its stdout line by line, reports its exit."};
  loop_args.add_to(cli, false);
  cli.rest("command", cmd,
           "the command and its arguments (default: sh -c 'echo hello; echo world; exit 7');"
           " put -- before a command that starts with -");
  cli.parse(argc, argv);
  if (cmd.empty()) cmd = {"sh", "-c", "echo hello; echo world; exit 7"};
  lev::Loop loop{lev::Model::proactor, loop_args.options()};
  return loop.block_on(run(loop, cmd));
}
