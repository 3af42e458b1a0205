#!/usr/bin/env bash
# Uses lev the way the README tells a new user to, from outside this tree,
# running the README's own commands verbatim (extracted from README.md by
# scripts/snippets.py --extract; tests/consumer/commands.sh holds the same
# text, which the docs suite checks):
#   1. clones lev's committed HEAD into a clean directory and runs the
#      README's install block there, with HOME set to a fresh directory: the
#      prefix is $HOME/.local, not /usr; then checks that every header under
#      include/ was installed, the soname and the package files;
#   2. in a directory holding app.cpp (tests/consumer/app.cpp) and the
#      README's CMakeLists.txt and meson.build, runs the README's
#      pkg-config, CMake and Meson blocks, each building and running app;
#   3. checks that a consumer compiling without C++20 is told so first;
#   4. builds app with lev as a Meson subproject through a wrap (a tarball
#      of the clone: the README's wrap names a repository URL), and checks
#      that lev's tests stay out of the parent's build and lev's warning
#      settings out of its options.
# Nothing uncommitted is tested: commit first. Needs g++, cmake, pkg-config,
# meson, ninja, git.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
work=$(mktemp -d /tmp/lev-consumer.XXXXXX)
trap 'rm -rf "$work"' EXIT
step() { echo "consumer: $*"; }
fail() {
  echo "consumer: FAILED: $*" >&2
  exit 1
}
# The README's block marked <!-- snippet: tests/consumer/NAME -->.
block() { python3 "$src/scripts/snippets.py" --extract "tests/consumer/$1" "$src/README.md"; }
# Runs the README's block of commands NAME (commands.sh#NAME) in directory
# $1, as a user's shell would, with HOME the fresh one; its output goes to
# $work/NAME.log (shown when it fails).
run_block() {
  local dir=$1 name=$2 script
  script=$(block "commands.sh#$name") || fail "README.md has no '$name' block"
  (cd "$dir" && HOME=$home bash -euo pipefail -c "$script") >"$work/$name.log" 2>&1 ||
    { cat "$work/$name.log"; fail "the README's $name block, in $dir"; }
}
home=$work/home
prefix=$home/.local
mkdir -p "$home"

step "cloning $(git rev-parse --short HEAD) into a clean directory"
git clone --quiet --no-hardlinks "$src" "$work/lev"
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
  echo "consumer: note: uncommitted changes are not in the clone" >&2

step "the README's install block, prefix \$HOME/.local = $prefix"
run_block "$work/lev" install
version=$(meson introspect --projectinfo "$work/lev/build" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])')
diff <(cd include && find lev -name '*.hpp' | sort) <(cd "$prefix/include" && find lev -name '*.hpp' | sort) ||
  fail "the installed headers differ from include/ (< source, > installed)"
readelf -d "$prefix/lib/liblev.so" | grep -q 'SONAME.*\[liblev\.so\.0\]' || fail "soname is not liblev.so.0"
for f in pkgconfig/lev.pc cmake/lev/levConfig.cmake cmake/lev/levConfigVersion.cmake cmake/lev/levTargets.cmake; do
  [ -f "$prefix/lib/$f" ] || fail "lib/$f was not installed"
done
requires=$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --print-requires lev)
[ "$requires" = "liburing >= 2.3" ] || fail "lev.pc requires: $requires"

# The user's project: app.cpp and the README's build files.
app() {
  mkdir -p "$work/$1"
  cp "$src/tests/consumer/app.cpp" "$work/$1/"
  block CMakeLists.txt >"$work/$1/CMakeLists.txt"
  block meson.build >"$work/$1/meson.build"
}
for route in pkg-config cmake meson; do
  step "the README's $route block"
  app "$route"
  run_block "$work/$route" "$route"
  grep -qx 'consumer: hello' "$work/$route.log" || { cat "$work/$route.log"; fail "$route: app's output"; }
  # No LD_LIBRARY_PATH: the program finds liblev.so.0 in the prefix itself.
  env -u LD_LIBRARY_PATH ldd "$(find "$work/$route" -name app -type f -perm -u+x | head -1)" |
    grep -q "liblev.so.0 => $prefix/lib/liblev.so.0" || fail "$route: app does not load $prefix/lib/liblev.so.0"
done

step "without C++20, the first error says lev needs C++20"
# shellcheck disable=SC2046  # pkg-config's output is meant to split
if out=$(g++ -std=c++17 -fsyntax-only $(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags lev) \
  "$src/tests/consumer/app.cpp" 2>&1); then
  fail "a C++17 compile of lev.hpp succeeded"
fi
first=$(grep -m1 'error' <<<"$out")
[[ $first == *"lev needs C++20"* ]] || fail "first error was: $first"
[ "$(grep -c 'error' <<<"$out")" -le 3 ] || fail "more than the one error: $out"

step "Meson subproject through a wrap"
parent=$work/subproject
app subproject
mkdir -p "$parent/subprojects"
# The wrap fetches a release-style tarball of the clone.
tarball=$work/lev-$version.tar.gz
git -C "$work/lev" archive --prefix="lev-$version/" -o "$tarball" HEAD
cat >"$parent/subprojects/lev.wrap" <<WRAP
[wrap-file]
directory = lev-$version
source_url = file://$tarball
source_filename = lev-$version.tar.gz
source_hash = $(sha256sum "$tarball" | cut -d' ' -f1)

[provide]
lev = lev_dep
WRAP
# A warning in the parent's own code stays a warning: lev's -Werror is lev's.
CXXFLAGS=-DLEV_CONSUMER_WARN run_block "$parent" subproject
grep -qx 'consumer: hello' "$work/subproject.log" || fail "Meson subproject consumer"
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
step "installed from the README into \$HOME/.local, and used all four ways"
