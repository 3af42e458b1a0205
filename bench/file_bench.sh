#!/usr/bin/env bash
# The file bench with its fio rows: installs fio (Debian), builds release.
#   bash bench/file_bench.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh fio
if [ ! -f build-release/build.ninja ]; then
  meson setup build-release --buildtype=release -Dtests=disabled
fi
ninja -C build-release -j2 bench/file_bench bench/udp_bench >/dev/null
build-release/bench/file_bench --seconds "${1:-3}"
build-release/bench/udp_bench --seconds "${1:-3}"
