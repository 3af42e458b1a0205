// lev.hpp, precompiled once per build directory for the tests, examples
// and benchmarks that include it (pch/meson.build). Only lev.hpp: a program
// that compiles with it compiles without it (what it sees is what lev.hpp
// would have shown it anyway).
#include <lev/lev.hpp>
