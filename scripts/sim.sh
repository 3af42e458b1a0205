#!/usr/bin/env bash
# Runs the deterministic simulation over any number of seeds.
#   bash scripts/sim.sh [--seeds N] [--first S] [--san]
# --san runs the AddressSanitizer + UBSan build (build-san/). A failure
# prints its seed and step first; LEV_SIM_SEED=<seed> replays it exactly
# (LEV_SIM_LOG=1 prints every step).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=100000 first=1 dir=build
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds=$2; shift 2 ;;
    --first) first=$2; shift 2 ;;
    --san) dir=build-san; shift ;;
    *) echo "usage: sim.sh [--seeds N] [--first S] [--san]" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh
if [ ! -f "$dir/build.ninja" ]; then
  if [ "$dir" = build-san ]; then
    meson setup build-san -Db_sanitize=address,undefined -Db_lundef=false -Dbench=disabled
  else
    meson setup build
  fi
fi
ninja -C "$dir" -j2 tests/sim_test
LEV_SIM_SEEDS=$seeds LEV_SIM_FIRST=$first "./$dir/tests/sim_test"
