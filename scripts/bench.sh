#!/usr/bin/env bash
# Installs what is missing, builds an optimised build-release/, runs the
# echo benchmark (lev vs a hand-written liburing server) and the nop bench.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -f build-release/build.ninja ]; then
  meson setup build-release --buildtype=release -Dtests=disabled -Dexamples=enabled
fi
ninja -C build-release -j2
build-release/bench/echo_bench "$@"
build-release/bench/nop_bench
