#!/usr/bin/env bash
# Installs what lev needs to build, test and benchmark on Debian 12.
# Idempotent: only missing packages are installed (through sudo when not root).
set -euo pipefail
packages=(g++ meson ninja-build pkg-config cmake liburing-dev doctest-dev libssl-dev openssl "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
