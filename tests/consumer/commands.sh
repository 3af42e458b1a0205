#!/usr/bin/env bash
# The commands the README and docs/tutorial.md print for using lev from a
# project of one's own (their blocks must equal these regions:
# scripts/snippets.py --check). scripts/consumer.sh runs the README's copies
# verbatim, extracted from it, in a clean clone of lev and in a directory
# holding app.cpp, CMakeLists.txt and meson.build (this directory's).
set -euo pipefail
echo "run scripts/consumer.sh: it runs these blocks as the README shows them" >&2
exit 2

# In lev's source tree: installs the library, its headers, lev.pc and the
# CMake package into ~/.local (any prefix of your own works the same way).
# [install]
meson setup build --prefix=$HOME/.local --libdir=lib --buildtype=release \
  -Dtests=disabled -Dbench=disabled -Dexamples=disabled
ninja -C build && meson install -C build
# [/install]

# In the directory of app.cpp: plain pkg-config.
# [pkg-config]
export PKG_CONFIG_PATH=$HOME/.local/lib/pkgconfig
g++ -std=c++20 app.cpp $(pkg-config --cflags --libs lev) -o app
./app
# [/pkg-config]

# Beside app.cpp, CMakeLists.txt: find_package(lev).
# [cmake]
cmake -S . -B build -DCMAKE_PREFIX_PATH=$HOME/.local
cmake --build build
./build/app
# [/cmake]

# Beside app.cpp, meson.build: dependency('lev'), installed lev.
# [meson]
meson setup build --pkg-config-path=$HOME/.local/lib/pkgconfig
ninja -C build
./build/app
# [/meson]

# Beside app.cpp, meson.build and subprojects/lev.wrap: lev as a subproject.
# [subproject]
meson setup build
ninja -C build
./build/app
# [/subproject]
