#!/usr/bin/env bash
# Reconnect/resume soak through the C API: tests/soak/soak.c against
# tether-backend. Short variant (the test command): 500 cycles, ~10 s.
# Long variant: tests/soak/run.sh 20000 (~4-5 min). Fails if RSS grows by 1 MiB or more after
# warm-up, or the open descriptor or thread count changes, or any event is lost or repeated.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cycles="${1:-500}"
out="$root/target/soak"
mkdir -p "$out"
cd "$root"
cargo build --quiet -p tether --lib
cargo build --quiet -p tether-testkit --bin tether-backend
cc -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror -O1 -g \
    -Iinclude -Itests/c tests/soak/soak.c -Ltarget/debug -ltether \
    -Wl,-rpath,"$root/target/debug" -lpthread -o "$out/soak"
TETHER_BACKEND="$root/target/debug/tether-backend" timeout 1800 "$out/soak" "$cycles"
