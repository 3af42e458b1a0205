#!/usr/bin/env bash
# User-space instructions per echoed message, lev vs the raw liburing
# baseline (and Boost.Asio's epoll and io_uring backends when they were
# built), under valgrind --tool=callgrind (repeatable, unlike time).
#   bash bench/callgrind.sh [SECONDS] [CONNS] [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh valgrind bc
secs=${1:-4}; conns=${2:-50}; size=${3:-64}; rounds=${4:-3}
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
  callgrind_control -z "$pid" >/dev/null 2>&1
  local msgs; msgs=$(build-release/bench/echo_bench --client "$port" --seconds "$secs" \
    --conns "$conns" --size "$size" | awk '/messages/ {print $2}')
  wait "$pid" || true
  local ir; ir=$(callgrind_annotate "$out/$name.cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  echo "$name $ir $msgs"
}
# Each server ROUNDS times, alternated (raw lev pool asio... raw lev ...), so
# that drift hits all alike; the median of instructions per message is shown
# (the count per message moves with how many messages a loop round carries).
declare -A per
servers=(raw lev pool)
cmd_raw=(build-release/bench/raw_uring_echo)
cmd_lev=(build-release/examples/echo_server)
cmd_pool=(build-release/examples/echo_server --recv pool)
for backend in epoll uring; do
  if [ -x "build-release/bench/asio_echo_$backend" ]; then
    servers+=("asio_$backend")
    declare -a "cmd_asio_$backend=(build-release/bench/asio_echo_$backend)"
  fi
done
for ((r = 1; r <= rounds; r++)); do
  for s in "${servers[@]}"; do
    declare -n cmd="cmd_$s"
    read -r _ ir msgs <<<"$(measure "$s" "${cmd[@]}")"
    per[$s]="${per[$s]:-} $((ir / msgs))"
    unset -n cmd
  done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
spread() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }
rpm=$(median "${per[raw]}"); lpm=$(median "${per[lev]}"); ppm=$(median "${per[pool]}")
echo "callgrind: $conns connections, $size-byte messages, ${secs}s of load per server, $rounds rounds alternated, medians"
printf "%-14s %10s %12s %8s\n" server instr/msg "(all rounds)" ratio
printf "%-14s %10s %12s %8s\n" "raw liburing" "$rpm" "$(spread "${per[raw]}")" "1.00x"
printf "%-14s %10s %12s %7.2fx\n" "lev proactor" "$lpm" "$(spread "${per[lev]}")" "$(echo "$lpm / $rpm" | bc -l)"
printf "%-14s %10s %12s %7.2fx   (loop.recv(fd): multishot, pool)\n" "lev pro pool" "$ppm" \
  "$(spread "${per[pool]}")" "$(echo "$ppm / $rpm" | bc -l)"
for backend in epoll uring; do
  [ -n "${per[asio_$backend]:-}" ] || continue
  apm=$(median "${per[asio_$backend]}")
  printf "%-14s %10s %12s %7.2fx   (lev/asio: %.3fx)\n" "asio $backend" "$apm" \
    "$(spread "${per[asio_$backend]}")" "$(echo "$apm / $rpm" | bc -l)" "$(echo "$lpm / $apm" | bc -l)"
done
rm -rf "$out"
