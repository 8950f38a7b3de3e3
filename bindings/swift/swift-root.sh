#!/usr/bin/env bash
# Makes sure a Debian trixie root with Swift (Debian's `swiftlang`, Swift 6.0) exists and prints
# its path. The host may be any Debian/Ubuntu with apt: Swift only comes as a trixie package, so
# it lives in a chroot instead of on the host.
#
# The root is cached outside the clone (TETHER_SWIFT_ROOT, default
# ${XDG_CACHE_HOME:-~/.cache}/tether/swift-root) because it is ~450 MB to download and every
# fresh clone on the machine (CI's included) can share it. It is built in a temporary directory
# next to it and renamed into place only when complete, so an interrupted build never looks like
# a good root. Needs root (debootstrap, chroot, mounts).
#
# Environment: TETHER_SWIFT_ROOT (where the root lives), TETHER_DEBIAN_MIRROR (default: the
# host's Debian mirror from /etc/apt, else deb.debian.org).
set -euo pipefail

ROOTDIR=${TETHER_SWIFT_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/tether/swift-root}
STAMP=.tether-swift-root
# Bump when the package list changes so old caches are rebuilt, not trusted.
STAMP_VERSION=1
PACKAGES=swiftlang,libc6-dev,libstdc++-14-dev,ca-certificates

log() { echo "swift-root: $*" >&2; }

if [[ -f $ROOTDIR/$STAMP && $(cat "$ROOTDIR/$STAMP") == "$STAMP_VERSION" ]]; then
  echo "$ROOTDIR"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  log "building the Swift root needs root (debootstrap, chroot); run as root or with sudo"
  exit 1
fi

mirror() {
  if [[ -n ${TETHER_DEBIAN_MIRROR:-} ]]; then echo "$TETHER_DEBIAN_MIRROR"; return; fi
  # The mirror apt already uses: it is the one known to be reachable from this machine.
  local url
  url=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null |
    grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
  echo "${url:-http://deb.debian.org/debian}"
}

if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq debootstrap >/dev/null
fi
if [[ ! -e /usr/share/debootstrap/scripts/trixie ]]; then
  # Older debootstraps lack the trixie script; trixie bootstraps like its predecessors.
  ln -s sid /usr/share/debootstrap/scripts/trixie
fi

parent=$(dirname "$ROOTDIR")
mkdir -p "$parent"
# One builder at a time; a second caller waits and then finds the finished root.
exec 9>"$parent/.swift-root.lock"
flock 9
if [[ -f $ROOTDIR/$STAMP && $(cat "$ROOTDIR/$STAMP") == "$STAMP_VERSION" ]]; then
  echo "$ROOTDIR"
  exit 0
fi

# Leftovers of interrupted builds. --one-file-system never follows into a mount that an
# interrupted run may have left (a bind-mounted clone must not be deleted through it).
for old in "$parent"/.swift-root.tmp.* "$ROOTDIR"; do
  [[ -e $old ]] || continue
  if grep -qF -- "$old/" <<<"$(findmnt -rn -o TARGET)"; then
    log "$old still has mounts (see 'mount | grep $old'); unmount them first"
    exit 1
  fi
  rm -rf --one-file-system "$old"
done

TMP=$(mktemp -d "$parent/.swift-root.tmp.XXXXXX")
unmount_tmp() {
  local m
  # Deepest first; lazy so a busy mount cannot keep the trap from finishing.
  for m in $(findmnt -rn -o TARGET | grep -F "$TMP/" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}
trap unmount_tmp EXIT
# Signals end the script through exit, so the EXIT trap unmounts on Ctrl-C and kill too.
trap 'exit 130' INT
trap 'exit 143' TERM HUP

MIRROR=$(mirror)
log "building $ROOTDIR from $MIRROR (Debian trixie + swiftlang, ~450 MB; a few minutes)"
start=$SECONDS
# minbase + one apt-get inside: debootstrap's own resolver ignores Recommends and cannot pick
# among alternatives, apt can. swiftlang only recommends the C headers and libstdc++, which
# clang needs to import the C module and link, so they are named explicitly.
debootstrap --variant=minbase trixie "$TMP" "$MIRROR" >"$TMP.log" 2>&1 || {
  log "debootstrap failed; last lines of $TMP.log:"
  tail -n 20 "$TMP.log" >&2
  exit 1
}
cp /etc/resolv.conf "$TMP/etc/resolv.conf"
mount -t proc proc "$TMP/proc"
chroot "$TMP" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c \
  "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${PACKAGES//,/ } && apt-get clean" \
  >>"$TMP.log" 2>&1 || {
  log "installing swiftlang failed; last lines of $TMP.log:"
  tail -n 20 "$TMP.log" >&2
  exit 1
}
# With /proc still mounted: the toolchain finds its libraries through $ORIGIN, which glibc
# resolves by reading /proc/self/exe.
chroot "$TMP" swift --version >&2
unmount_tmp
echo "$STAMP_VERSION" >"$TMP/$STAMP"
rm -f "$TMP.log"
mv -T "$TMP" "$ROOTDIR"
log "built in $((SECONDS - start)) s"
echo "$ROOTDIR"
