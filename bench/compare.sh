#!/usr/bin/env bash
# Side-by-side with what a user would otherwise pick, under the users' own
# load tools: lev's resp_server vs redis-server (redis-benchmark), lev's
# http_hello vs nginx (wrk), and the echo bench (lev vs raw liburing / epoll
# and Boost.Asio coroutines on its epoll and io_uring backends); https rows:
# bench/https_hello vs nginx with TLS (--only-https runs just those).
# Installs what it needs, builds build-release/, prints one table.
#   bash bench/compare.sh [--rounds 3] [--seconds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh python3 redis-server redis-tools nginx-light wrk libboost1.81-dev
if [ ! -f build-release/build.ninja ]; then
  meson setup build-release --buildtype=release -Dtests=disabled -Dexamples=enabled
else
  meson setup --reconfigure build-release >/dev/null  # finds Boost if it was just installed
fi
ninja -C build-release -j2
# Debian starts the packaged daemons; they would share the cores under test.
for svc in redis-server nginx; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    echo "compare: note: the system's $svc service is running and shares the CPUs" >&2
  fi
done
exec python3 bench/compare.py --build build-release "$@"
