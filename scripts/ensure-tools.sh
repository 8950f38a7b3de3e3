#!/usr/bin/env bash
# Installs the system tools the test suite needs when they are missing (Debian/Ubuntu, as
# root or with sudo): a C/C++ compiler, valgrind, pkg-config, CMake, binutils (nm, readelf,
# strip, objcopy), a JDK and Maven, the proxy servers tests/proxy.rs starts (tinyproxy,
# dante's danted, microsocks), and tmux (the Python store example is driven in a pane).
set -euo pipefail
declare -A pkg=([cc]=gcc [c++]=g++ [valgrind]=valgrind [pkg-config]=pkg-config [cmake]=cmake
  [nm]=binutils [readelf]=binutils [strip]=binutils [objcopy]=binutils
  [java]=default-jdk-headless [mvn]=maven
  [tinyproxy]=tinyproxy [danted]=dante-server [microsocks]=microsocks [tmux]=tmux)
missing=()
for cmd in "${!pkg[@]}"; do
  # danted is in /usr/sbin, which a non-root PATH may lack.
  command -v "$cmd" >/dev/null || [[ -x /usr/sbin/$cmd ]] || missing+=("${pkg[$cmd]}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "installing: ${missing[*]}"
SUDO=
[[ $(id -u) -ne 0 ]] && SUDO=sudo
if ! command -v apt-get >/dev/null; then
  echo "missing tools (${missing[*]}) and no apt-get: install them by hand" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
