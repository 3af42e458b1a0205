// Runs a fuzz target without libFuzzer: every file of the seed corpus, then
// a few thousand inputs from a fixed generator (so the ordinary build tests
// the target too, and it cannot rot). Exit 0 when the target never aborts.
//   replay <corpus dir>... [count]
#include <dirent.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
  std::size_t files = 0, generated = 2000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (!arg.empty() && arg.find_first_not_of("0123456789") == std::string::npos) {
      generated = std::stoul(arg);
      continue;
    }
    DIR* d = ::opendir(arg.c_str());
    if (!d) {
      std::fprintf(stderr, "replay: cannot open %s\n", arg.c_str());
      return 2;
    }
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream in(arg + "/" + e->d_name, std::ios::binary);
      std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
      LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
      ++files;
    }
    ::closedir(d);
  }
  std::uint64_t s = 1;
  auto next = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<std::uint8_t>(s >> 56);
  };
  for (std::size_t n = 0; n < generated; ++n) {
    std::vector<std::uint8_t> bytes(10 + next() % 200 + next() % 4 * 100);
    for (auto& b : bytes) b = next();
    // Text-like bodies reach the line codec's paths more often than noise.
    if (bytes[0] % 2 == 0)
      for (std::size_t i = 10; i < bytes.size(); ++i)
        bytes[i] = bytes[i] % 8 == 0 ? '\n' : static_cast<std::uint8_t>('a' + bytes[i] % 26);
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  std::printf("replay: %zu corpus files, %zu generated inputs, no failure\n", files, generated);
  return 0;
}
