#pragma once
// Small helpers the examples share: argument parsing.

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

#include "lev/lev.hpp"

namespace example {

/// The value after `--name` in argv, or `fallback`.
inline std::string arg(int argc, char** argv, std::string_view name, std::string fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (name == argv[i]) return argv[i + 1];
  return fallback;
}

inline long arg_num(int argc, char** argv, std::string_view name, long fallback) {
  std::string v = arg(argc, argv, name, "");
  if (v.empty()) return fallback;
  char* end = nullptr;
  long n = std::strtol(v.c_str(), &end, 10);
  if (!end || *end)
    throw std::invalid_argument(std::string(name) + " needs a number, got '" + v + "'");
  return n;
}

inline lev::Model model_arg(int argc, char** argv) {
  std::string m = arg(argc, argv, "--model", "proactor");
  if (m == "proactor") return lev::Model::proactor;
  if (m == "reactor") return lev::Model::reactor;
  throw std::invalid_argument("--model must be proactor or reactor, got '" + m + "'");
}

}  // namespace example
