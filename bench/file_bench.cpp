// 4 KiB random reads from a page-cached file at queue depth 1 and 32:
// lev on io_uring, lev on epoll (file workers = queue depth), a plain
// pread loop, and fio --ioengine=io_uring (when `fio` is on PATH; the
// bench script installs it). IOPS and CPU per read (utime+stime of the
// process, workers included), and each row against fio.
//   file_bench [--seconds S] [--size-mib M] [--dir D]
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "lev/file.hpp"
#include "lev/lev.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct Row {
  std::string name;
  int qd;
  double iops;
  double cpu_ns;  // per read
};

constexpr std::size_t kBlock = 4096;

lev::Task<> reader(lev::File& f, std::uint64_t blocks, Clock::time_point until,
                   std::uint64_t& reads, unsigned seed) {
  std::minstd_rand rng(seed);
  alignas(4096) static thread_local char sink[kBlock];
  std::vector<char> buf(kBlock);
  while (Clock::now() < until) {
    const std::uint64_t at = (rng() % blocks) * kBlock;
    auto n = co_await f.read_at(buf, at);
    if (!n || *n != kBlock) break;
    ++reads;
  }
  std::memcpy(sink, buf.data(), 1);
}

Row run_lev(const char* name, lev::Model model, const std::string& path, int qd, double secs,
            std::uint64_t blocks) {
  lev::LoopOptions o;
  o.file_workers = static_cast<unsigned>(qd);
  lev::Loop loop{model, o};
  std::uint64_t reads = 0;
  double cpu0 = 0;
  Clock::time_point t0;
  auto main = [&]() -> lev::Task<> {
    auto f = co_await lev::File::open(loop, path, O_RDONLY);
    if (!f) co_return;
    cpu0 = cpu_seconds();
    t0 = Clock::now();
    const auto until = t0 + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(secs));
    std::vector<lev::Task<>> all;
    for (int i = 0; i < qd; ++i)
      all.push_back(reader(*f, blocks, until, reads, static_cast<unsigned>(i + 1)));
    co_await lev::when_all(std::move(all));
  };
  loop.block_on(main());
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;
  return {name, qd, static_cast<double>(reads) / wall, cpu * 1e9 / static_cast<double>(reads)};
}

Row run_pread(const std::string& path, double secs, std::uint64_t blocks) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  std::minstd_rand rng(7);
  std::vector<char> buf(kBlock);
  std::uint64_t reads = 0;
  const double cpu0 = cpu_seconds();
  const auto t0 = Clock::now();
  const auto until = t0 + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(secs));
  while (Clock::now() < until) {
    for (int i = 0; i < 64; ++i) {
      if (::pread(fd, buf.data(), kBlock, static_cast<off_t>((rng() % blocks) * kBlock)) !=
          static_cast<ssize_t>(kBlock))
        break;
      ++reads;
    }
  }
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;
  ::close(fd);
  return {"pread loop", 1, static_cast<double>(reads) / wall,
          cpu * 1e9 / static_cast<double>(reads)};
}

// The number after `"key" : ` following `from` in fio's JSON, or -1.
double json_number(const std::string& s, std::size_t from, const char* key) {
  const std::string k = std::string("\"") + key + "\" : ";
  const std::size_t at = s.find(k, from);
  if (at == std::string::npos) return -1;
  return std::strtod(s.c_str() + at + k.size(), nullptr);
}

bool run_fio(const std::string& path, int qd, double secs, Row& out) {
  const std::string cmd = "fio --name=lev --filename=" + path +
                          " --ioengine=io_uring --rw=randread --bs=4k --iodepth=" +
                          std::to_string(qd) + " --time_based --runtime=" +
                          std::to_string(static_cast<int>(secs + 0.5)) +
                          "s --invalidate=0 --output-format=json 2>/dev/null";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return false;
  std::string json;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) json.append(buf, n);
  if (::pclose(p) != 0) return false;
  const std::size_t read = json.find("\"read\" : {");
  if (read == std::string::npos) return false;
  const double iops = json_number(json, read, "iops");
  const double ios = json_number(json, read, "total_ios");
  const double usr = json_number(json, 0, "usr_cpu");
  const double sys = json_number(json, 0, "sys_cpu");
  const double runtime_ms = json_number(json, read, "runtime");
  if (iops <= 0 || ios <= 0 || usr < 0 || sys < 0 || runtime_ms <= 0) return false;
  out = {"fio io_uring", qd, iops, (usr + sys) / 100.0 * runtime_ms * 1e6 / ios};
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  double secs = 3;
  long size_mib = 256;
  std::string dir = "/tmp";
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--seconds" && i + 1 < argc) secs = std::atof(argv[++i]);
    else if (k == "--size-mib" && i + 1 < argc) size_mib = std::atol(argv[++i]);
    else if (k == "--dir" && i + 1 < argc) dir = argv[++i];
    else {
      std::fprintf(stderr, "usage: file_bench [--seconds S] [--size-mib M] [--dir D]\n");
      return 2;
    }
  }
  const std::string path = dir + "/lev-file-bench-" + std::to_string(::getpid());
  {  // write it: the pages stay cached
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    std::vector<char> chunk(1 << 20, 'x');
    for (long i = 0; i < size_mib; ++i)
      if (::write(fd, chunk.data(), chunk.size()) != static_cast<ssize_t>(chunk.size())) return 1;
    ::close(fd);
  }
  const std::uint64_t blocks = static_cast<std::uint64_t>(size_mib) * (1 << 20) / kBlock;
  std::vector<Row> rows;
  for (int qd : {1, 32}) {
    Row fio{};
    const bool have_fio = run_fio(path, qd, secs, fio);
    std::vector<Row> these;
    these.push_back(run_lev("lev uring", lev::Model::proactor, path, qd, secs, blocks));
    these.push_back(run_lev("lev epoll+pool", lev::Model::reactor, path, qd, secs, blocks));
    if (qd == 1) these.push_back(run_pread(path, secs, blocks));
    if (have_fio) these.push_back(fio);
    std::printf("\nfile_bench: 4 KiB random reads, %ld MiB page-cached file, queue depth %d, %.0f s per row\n",
                size_mib, qd, secs);
    std::printf("%-16s %12s %14s %10s %10s\n", "engine", "IOPS", "cpu ns/read", "IOPS/fio",
                "cpu/fio");
    for (const Row& r : these) {
      if (have_fio)
        std::printf("%-16s %12.0f %14.0f %9.2fx %9.2fx\n", r.name.c_str(), r.iops, r.cpu_ns,
                    r.iops / fio.iops, r.cpu_ns / fio.cpu_ns);
      else
        std::printf("%-16s %12.0f %14.0f %10s %10s\n", r.name.c_str(), r.iops, r.cpu_ns, "-",
                    "-");
    }
    if (!have_fio) std::printf("(fio not found: bash bench/file_bench.sh installs it)\n");
  }
  ::unlink(path.c_str());
  return 0;
}
