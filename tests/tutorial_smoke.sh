#!/usr/bin/env bash
# Runs docs/tutorial.md's programs the way the tutorial does:
#   tutorial_smoke.sh ECHO_SERVER UPPER_SERVER CLIENT
set -euo pipefail
echo_server=$1 upper_server=$2 client=$3
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Starts a server and sets `port` to its port. Not in a subshell: the
# server's pid must reach `pids`, which the cleanup trap kills (a
# `port=$(start ...)` kept it in the subshell's copy and left the server
# running for ever).
start() {
  "$1" >"$work/$2.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    if grep -q '^listening on ' "$work/$2.out"; then
      port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/$2.out")
      return
    fi
    sleep 0.05
  done
  echo "$2 did not start: $(cat "$work/$2.out")" >&2
  exit 1
}

start "$echo_server" echo
[ "$("$client" "$port" hi)" = "answer: hi" ]
start "$upper_server" upper
[ "$("$client" "$port" 'quiet please')" = "answer: QUIET PLEASE" ]
# --help prints the usage and exits 0, as every other example does (the
# tutorial's programs exited 2, a usage error)
for prog in "$echo_server" "$upper_server" "$client"; do
  "$prog" --help | grep -q '^usage: '
done
# a bad port is a usage error
status=0
"$client" 70000 2>/dev/null || status=$?
[ "$status" -eq 2 ]
echo "tutorial programs: ok"
