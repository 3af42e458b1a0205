#pragma once
// The echo load client: N connections ping-ponging S-byte messages over
// epoll, measured for a fixed window after a warm-up.
#include <cstddef>
#include <cstdint>
#include <functional>

#include "lev/address.hpp"

struct LoadResult {
  std::uint64_t messages = 0;
  double seconds = 0;
  double p50_us = 0;
  double p99_us = 0;
  bool ok = true;
};

struct LoadOptions {
  int connections = 50;
  std::size_t size = 64;
  double warmup_seconds = 0.3;
  double seconds = 2.0;
  std::function<void()> on_window_start;
  std::function<void()> on_window_end;
};

LoadResult run_load(const lev::SocketAddress& to, const LoadOptions& options);
