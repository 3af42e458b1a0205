#pragma once
// Included first by every public header: lev needs C++20 with coroutines.
// Without them, stop at one clear message instead of hundreds from
// <coroutine> and the headers after it (a missing include is fatal, so the
// compiler stops right here).
#if __cplusplus < 202002L || !defined(__cpp_impl_coroutine) || !defined(__cpp_concepts)
#error "lev needs C++20 with coroutines: compile with -std=c++20 (g++ 12 or later, clang 16 or later)"
#include "lev/stops-here: C++20 required"
#endif
