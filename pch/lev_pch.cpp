// The target that builds pch/include/lev_pch.hpp's precompiled form with the flags
// every executable of this build directory gets (pch/meson.build).
int main() { return 0; }
