#pragma once
// Echo servers the bench compares. Each serves the listening socket `lfd`
// on the calling thread until `stop` becomes true (checked every ~20 ms).
#include <atomic>

#include "lev/loop.hpp"

void serve_lev(int lfd, const std::atomic<bool>& stop, lev::Model model);
void serve_raw_uring(int lfd, const std::atomic<bool>& stop);
