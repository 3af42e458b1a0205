// The library's precompiled header (runtime/meson.build, cpp_pch): its
// sources include most of lev's public headers, which take about as long
// to parse as the sources take to compile.
#include "lev/lev.hpp"
