#!/usr/bin/env bash
# Builds the libFuzzer targets with clang 19 (ASan + UBSan) in build-fuzz/
# and runs each for a bounded time on a copy of its seed corpus.
#   bash scripts/fuzz.sh [seconds per target, default 60]
# Prints libFuzzer's last status line (executions, exec/s, coverage) per
# target; a crash leaves its input in build-fuzz/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
bash scripts/setup.sh clang-19 libclang-rt-19-dev
if [ ! -f build-fuzz/build.ninja ]; then
  CXX=clang++-19 CC=clang-19 meson setup build-fuzz -Dfuzz=enabled -Dbench=disabled \
    -Dexamples=disabled -Db_sanitize=address,undefined -Db_lundef=false \
    -Dcpp_args='-fsanitize=fuzzer-no-link -g1' -Dwerror=false >/dev/null
fi
ninja -C build-fuzz -j2 tests/stream_codec_fuzz tests/tls_records_fuzz
for t in stream_codec tls_records; do
  corpus=build-fuzz/corpus-$t
  mkdir -p "$corpus"
  cp -n tests/fuzz/corpus/$t/* "$corpus"/
  echo "fuzz: $t for ${seconds}s"
  (cd build-fuzz && UBSAN_OPTIONS=halt_on_error=1 ./tests/${t}_fuzz -max_total_time="$seconds" \
     -print_final_stats=1 "corpus-$t" 2>&1 | tee "fuzz-$t.log" | grep -E "^#[0-9]+.*(DONE|pulse)|stat::|ERROR" | tail -8)
  if grep -q "ERROR: libFuzzer\|ERROR: AddressSanitizer\|runtime error" "build-fuzz/fuzz-$t.log"; then
    echo "fuzz: $t FAILED (see build-fuzz/fuzz-$t.log)"
    exit 1
  fi
done
