#!/usr/bin/env bash
# User-space instructions per echoed message, lev vs the raw liburing
# baseline (and Boost.Asio's epoll and io_uring backends when they were
# built), under valgrind --tool=callgrind (repeatable, unlike time).
#   bash bench/callgrind.sh [SECONDS] [CONNS] [SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh valgrind bc
secs=${1:-4}; conns=${2:-50}; size=${3:-64}
if [ ! -f build-release/build.ninja ]; then
  meson setup build-release --buildtype=release -Dtests=disabled
fi
ninja -C build-release -j2 >/dev/null
out=$(mktemp -d)
measure() {  # name, server command...
  local name=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$out/$name.cg" "$@" --port 0 \
    --max-seconds $((secs + 3)) >"$out/$name.stdout" 2>"$out/$name.vg" &
  local pid=$!
  for _ in $(seq 100); do grep -q listening "$out/$name.stdout" 2>/dev/null && break; sleep 0.1; done
  local port; port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$out/$name.stdout" | head -1)
  callgrind_control -z "$pid" >/dev/null
  local msgs; msgs=$(build-release/bench/echo_bench --client "$port" --seconds "$secs" \
    --conns "$conns" --size "$size" | awk '/messages/ {print $2}')
  wait "$pid" || true
  local ir; ir=$(callgrind_annotate "$out/$name.cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  echo "$name $ir $msgs"
}
raw=$(measure raw build-release/bench/raw_uring_echo)
lev=$(measure lev build-release/examples/echo_server)
pool=$(measure pool build-release/examples/echo_server --recv pool)
echo "callgrind: $conns connections, $size-byte messages, ${secs}s of load per server"
printf "%-14s %14s %10s %12s %8s\n" server instructions messages "instr/msg" ratio
read -r _ rir rmsg <<<"$raw"; read -r _ lir lmsg <<<"$lev"; read -r _ pir pmsg <<<"$pool"
rpm=$((rir / rmsg)); lpm=$((lir / lmsg))
printf "%-14s %14s %10s %12s %8s\n" "raw liburing" "$rir" "$rmsg" "$rpm" "1.00x"
printf "%-14s %14s %10s %12s %7.2fx\n" "lev proactor" "$lir" "$lmsg" "$lpm" "$(echo "$lpm / $rpm" | bc -l)"
ppm=$((pir / pmsg))
printf "%-14s %14s %10s %12s %7.2fx   (loop.recv(fd): multishot, pool)\n" "lev pro pool" "$pir" \
  "$pmsg" "$ppm" "$(echo "$ppm / $rpm" | bc -l)"
for backend in epoll uring; do
  bin=build-release/bench/asio_echo_$backend
  [ -x "$bin" ] || continue
  read -r _ air amsg <<<"$(measure "asio_$backend" "$bin")"
  apm=$((air / amsg))
  printf "%-14s %14s %10s %12s %7.2fx   (lev/asio: %.2fx)\n" "asio $backend" "$air" "$amsg" "$apm" \
    "$(echo "$apm / $rpm" | bc -l)" "$(echo "$lpm / $apm" | bc -l)"
done
rm -rf "$out"
