// Copies a file with N reads in flight, then fsyncs the copy.
//   copy_file SRC DST [--depth N] [--chunk BYTES] [--model proactor|reactor]
// Prints "copied B bytes in S s (M MB/s)". Exit 1 on an I/O error, 2 on a
// bad command line. On the reactor the copy runs on the epoll engine's
// file workers (as many as --depth).
#include <fcntl.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lev/file.hpp"
#include "lev/lev.hpp"

namespace {

struct Args {
  std::string src, dst;
  long depth = 8;
  long chunk = 128 * 1024;
  lev::Model model = lev::Model::proactor;
};

void usage(std::FILE* to) {
  std::fputs("usage: copy_file SRC DST [--depth N] [--chunk BYTES] [--model proactor|reactor]\n", to);
}

bool parse(int argc, char** argv, Args& a) {
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto number = [&](long& out, long lo, long hi) {
      if (i + 1 >= argc) return false;
      char* end = nullptr;
      out = std::strtol(argv[++i], &end, 10);
      return end && !*end && out >= lo && out <= hi;
    };
    if (k == "--depth") {
      if (!number(a.depth, 1, 1024)) return false;
    } else if (k == "--chunk") {
      if (!number(a.chunk, 512, 64L << 20)) return false;
    } else if (k == "--model") {
      if (i + 1 >= argc) return false;
      const std::string m = argv[++i];
      if (m == "proactor") a.model = lev::Model::proactor;
      else if (m == "reactor") a.model = lev::Model::reactor;
      else return false;
    } else if (k.rfind("--", 0) == 0) {
      return false;
    } else {
      pos.push_back(k);
    }
  }
  if (pos.size() != 2) return false;
  a.src = pos[0];
  a.dst = pos[1];
  return true;
}

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
    workers.push_back(worker(*in, *out, next, st->size, static_cast<std::size_t>(a.chunk)));
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

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      return 0;
    }
  Args a;
  if (!parse(argc, argv, a)) {
    usage(stderr);
    return 2;
  }
  lev::LoopOptions o;
  o.file_workers = static_cast<unsigned>(a.depth);
  lev::Loop loop{a.model, o};
  return loop.block_on(copy(loop, a));
}
