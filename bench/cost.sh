#!/usr/bin/env bash
# The instruction budget (bench/cost.py, bench/cost_budget.txt): builds what
# it measures in release (build-release/) and runs it under callgrind.
#   bash bench/cost.sh [cost.py options]      e.g. --check --rounds 1
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh valgrind
if [ ! -f build-release/build.ninja ]; then
  meson setup build-release --buildtype=release -Dtests=disabled >/dev/null
fi
ninja -C build-release -j2 examples/echo_server examples/http_hello bench/cost_client \
  bench/cost_ops bench/raw_uring_echo >/dev/null
exec python3 bench/cost.py --build build-release "$@"
