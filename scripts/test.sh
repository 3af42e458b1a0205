#!/usr/bin/env bash
# Installs what is missing, configures build/, compiles, runs every suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -f build/build.ninja ]; then meson setup build; fi
ninja -C build -j2
meson test -C build --num-processes 2 --print-errorlogs "$@"
