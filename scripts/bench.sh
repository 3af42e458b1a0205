#!/usr/bin/env bash
# Installs what is missing, builds an optimised build-release/, runs the
# echo benchmark (lev proactor/reactor vs hand-written liburing and epoll
# servers), then the nop, timers and channel benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -f build-release/build.ninja ]; then
  meson setup build-release --buildtype=release -Dtests=disabled -Dexamples=enabled
fi
ninja -C build-release -j2
build-release/bench/echo_bench "$@"
build-release/bench/nop_bench
build-release/bench/timers_bench
build-release/bench/channel_bench
