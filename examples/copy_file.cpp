// Copies a file with N reads in flight, then fsyncs the copy.
//   copy_file [--depth N] [--chunk BYTES] [--model proactor|reactor] SRC DST
// Prints "copied B bytes in S s (M MB/s)". Exit 1 on an I/O error, 2 on a
// bad command line. On the reactor the copy runs on the epoll engine's
// file workers (as many as --depth).
#include <fcntl.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <stop_token>
#include <string>
#include <vector>

#include "common.hpp"
#include "lev/file.hpp"
#include "lev/lev.hpp"

namespace {

struct Args {
  std::string src, dst;
  long depth = 8;
  std::size_t chunk = 128 * 1024;
  example::LoopArgs loop;
};

// One of `depth` workers: takes the next chunk's offset, reads it, writes it.
lev::Task<lev::Result<void>> worker(lev::File& in, lev::File& out, std::uint64_t& next,
                                    std::uint64_t size, std::size_t chunk) {
  std::vector<char> buf(chunk);
  while (next < size) {
    const std::uint64_t at = next;
    next += chunk;
    std::size_t have = 0;
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, size - at));
    while (have < want) {
      auto n = co_await in.read_at(lev::MutableBuffer{buf.data() + have, want - have}, at + have);
      if (!n) co_return n.error();
      if (*n == 0) break;  // shorter than it was: copy what there is
      have += *n;
    }
    auto w = co_await out.write_all_at(lev::ConstBuffer{buf.data(), have}, at);
    if (!w) co_return w.error();
  }
  co_return lev::Result<void>{};
}

lev::Task<int> copy(lev::Loop& loop, const Args& a) {
  auto in = co_await lev::File::open(loop, a.src, O_RDONLY);
  if (!in) {
    std::fprintf(stderr, "copy_file: %s: %s\n", a.src.c_str(), in.error().message().c_str());
    co_return 1;
  }
  auto out = co_await lev::File::open(loop, a.dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (!out) {
    std::fprintf(stderr, "copy_file: %s: %s\n", a.dst.c_str(), out.error().message().c_str());
    co_return 1;
  }
  auto st = co_await in->stat();
  if (!st) {
    std::fprintf(stderr, "copy_file: %s\n", st.error().message().c_str());
    co_return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t next = 0;
  std::vector<lev::Task<lev::Result<void>>> workers;
  for (long i = 0; i < a.depth; ++i)
    workers.push_back(worker(*in, *out, next, st->size, a.chunk));
  auto results = co_await lev::when_all(std::move(workers));
  for (auto& r : results)
    if (!r) {
      std::fprintf(stderr, "copy_file: %s\n", r.error().message().c_str());
      co_return 1;
    }
  auto synced = co_await out->fsync();
  if (!synced) {
    std::fprintf(stderr, "copy_file: %s\n", synced.error().message().c_str());
    co_return 1;
  }
  const double s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("copied %llu bytes in %.3f s (%.1f MB/s)\n",
              static_cast<unsigned long long>(st->size), s,
              s > 0 ? static_cast<double>(st->size) / 1e6 / s : 0.0);
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  Args a;
  std::vector<std::string> files;
  example::Cli cli{"copy_file", "Copies SRC to DST with N reads in flight, then fsyncs DST."};
  cli.integer("--depth", a.depth, 1, 1024, "reads in flight (on the reactor: file workers)");
  cli.bytes("--chunk", a.chunk, 512, std::size_t(64) << 20, "bytes per read");
  a.loop.add_to(cli);
  cli.rest("SRC DST", files, "the file to copy and its copy (created or truncated)");
  cli.parse(argc, argv);
  a.loop.check(cli);
  if (files.size() != 2) cli.fail("needs SRC and DST");
  a.src = files[0];
  a.dst = files[1];
  lev::LoopOptions o = a.loop.options();
  o.file_workers = static_cast<unsigned>(a.depth);
  // Ctrl-C (or SIGTERM) cancels the copy: the reads and writes under way end.
  return lev::run(
      [&](lev::Loop& loop, std::stop_token stop) { return copy(loop, a).with_stop_token(stop); },
      {.model = a.loop.loop_model(), .loop = o});
} catch (const std::exception& e) {
  std::fprintf(stderr, "copy_file: %s\n", e.what());
  return 1;
}
