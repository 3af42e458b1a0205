#!/usr/bin/env bash
# Uses lev the way another project would, from outside this tree:
#   1. installs lev (the library only) into a temporary prefix, and checks
#      that every header under include/ was installed and the soname;
#   2. builds and runs tests/consumer with pkg-config;
#   3. checks that a consumer compiling without C++20 is told so first;
#   4. builds and runs it with CMake: find_package(lev) + lev::lev;
#   5. builds and runs it with lev as a Meson subproject through a wrap
#      (a tarball of this working tree), and checks that lev's tests stay
#      out of the parent's build and lev's warning settings out of its
#      options.
# Compiler: $CXX (default g++). Needs cmake, pkg-config, meson, ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
cxx=${CXX:-g++}
work=$(mktemp -d /tmp/lev-consumer.XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
consumer=$src/tests/consumer
step() { echo "consumer: $*"; }
fail() {
  echo "consumer: FAILED: $*" >&2
  exit 1
}

step "installing into $prefix"
# Unoptimised: this checks packaging, not speed, and -O0 compiles fastest.
meson setup "$work/build" --prefix="$prefix" --libdir=lib --buildtype=debug \
  -Dtests=disabled -Dbench=disabled -Dexamples=disabled >"$work/setup.log" ||
  { cat "$work/setup.log"; fail "meson setup"; }
ninja -C "$work/build" -j2 >/dev/null
meson install -C "$work/build" --quiet >/dev/null
version=$(meson introspect --projectinfo "$work/build" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])')

diff <(cd include && find lev -name '*.hpp' | sort) <(cd "$prefix/include" && find lev -name '*.hpp' | sort) ||
  fail "the installed headers differ from include/ (< source, > installed)"
readelf -d "$prefix/lib/liblev.so" | grep -q 'SONAME.*\[liblev\.so\.0\]' || fail "soname is not liblev.so.0"
for f in pkgconfig/lev.pc cmake/lev/levConfig.cmake cmake/lev/levConfigVersion.cmake cmake/lev/levTargets.cmake; do
  [ -f "$prefix/lib/$f" ] || fail "lib/$f was not installed"
done

step "pkg-config"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
# shellcheck disable=SC2046  # pkg-config's output is meant to split
"$cxx" -std=c++20 -o "$work/pc-consumer" "$consumer/main.cpp" $(pkg-config --cflags --libs lev)
readelf -d "$work/pc-consumer" | grep -q 'NEEDED.*\[liblev\.so\.0\]' || fail "the program does not need liblev.so.0"
LD_LIBRARY_PATH=$prefix/lib "$work/pc-consumer" | grep -qx 'consumer: hello' || fail "pkg-config consumer"

step "without C++20, the first error says lev needs C++20"
# shellcheck disable=SC2046
if out=$("$cxx" -std=c++17 -fsyntax-only $(pkg-config --cflags lev) "$consumer/main.cpp" 2>&1); then
  fail "a C++17 compile of lev.hpp succeeded"
fi
first=$(grep -m1 'error' <<<"$out")
[[ $first == *"lev needs C++20"* ]] || fail "first error was: $first"
[ "$(grep -c 'error' <<<"$out")" -le 3 ] || fail "more than the one error: $out"

step "CMake find_package(lev)"
cmake -S "$consumer" -B "$work/cmake" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_PREFIX_PATH="$prefix" >"$work/cmake.log" || { cat "$work/cmake.log"; fail "cmake configure"; }
cmake --build "$work/cmake" >/dev/null || fail "cmake build"
"$work/cmake/consumer" | grep -qx 'consumer: hello' || fail "CMake consumer"

step "Meson subproject through a wrap"
parent=$work/parent
mkdir -p "$parent/subprojects"
cp "$consumer/main.cpp" "$consumer/meson.build" "$parent/"
# The wrap fetches a release-style tarball of this working tree.
tarball=$work/lev-$version.tar.gz
git ls-files -z --cached --others --exclude-standard |
  tar --null -T - --ignore-failed-read --transform "s,^,lev-$version/," -czf "$tarball" 2>/dev/null
cat >"$parent/subprojects/lev.wrap" <<WRAP
[wrap-file]
directory = lev-$version
source_url = file://$tarball
source_filename = lev-$version.tar.gz
source_hash = $(sha256sum "$tarball" | cut -d' ' -f1)

[provide]
lev = lev_dep
WRAP
CXX=$cxx meson setup "$parent/build" "$parent" >"$work/parent.log" || { cat "$work/parent.log"; fail "meson setup"; }
ninja -C "$parent/build" -j2 >/dev/null || fail "build of the parent"
"$parent/build/consumer" | grep -qx 'consumer: hello' || fail "Meson subproject consumer"
meson introspect --buildoptions "$parent/build" | python3 -c '
import json, sys
opts = {(o["name"]): o["value"] for o in json.load(sys.stdin)}
assert opts["werror"] is False, "lev turned werror on in the parent"
assert opts["warning_level"] == "1", "lev changed warning_level in the parent"
'
listed=$(meson test -C "$parent/build" --no-rebuild --list 2>/dev/null || true)
[ -z "$listed" ] || [ "$listed" = "No tests defined." ] ||
  fail "tests in the parent (lev's run there): $listed"
if meson introspect --targets "$parent/build" | grep -q '"name": "echo_server"'; then
  fail "lev's examples are built in the parent"
fi
step "all three ways build and run"
