#pragma once
// Echo servers the bench compares. Each serves the listening socket `lfd`
// on the calling thread until `stop` becomes true (checked every ~20 ms).
#include <atomic>
#include <chrono>

#include "lev/loop.hpp"

/// `stop_fd` (>= 0): a descriptor that becomes readable to stop (a signalfd).
void serve_raw_epoll(
    int lfd, const std::atomic<bool>& stop,
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max(),
    int stop_fd = -1);
/// `pooled`: receive with loop.recv(fd) (the loop's buffer pool; multishot
/// on io_uring) instead of into a buffer of the connection's own.
void serve_lev(int lfd, const std::atomic<bool>& stop, lev::Model model, bool pooled = false);
/// lev proactor on `threads` loops of a lev::Runtime.
void serve_lev_threads(int lfd, const std::atomic<bool>& stop, unsigned threads);
/// Also returns at `deadline` (the standalone program's --max-seconds:
/// valgrind cannot wake a thread blocked in io_uring_enter, so no helper
/// thread may be relied on to set `stop`).
/// `http`: answer HTTP requests with a fixed response instead of echoing.
void serve_raw_uring(
    int lfd, const std::atomic<bool>& stop,
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max(),
    bool http = false, int stop_fd = -1);
/// The raw liburing loop resuming a C++20 coroutine per connection (no
/// runtime): the floor a coroutine echo server can reach (bench/cost.py).
void serve_raw_coro(int lfd, const std::atomic<bool>& stop,
                    std::chrono::steady_clock::time_point deadline, int stop_fd);
