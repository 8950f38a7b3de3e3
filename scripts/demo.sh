#!/usr/bin/env bash
# The main job: `tether demo` starts the embedded testkit backend and walks through connect,
# request, ping/ack, a cut, the resume and close 1001, all through the library.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release -p tether-cli -- demo "$@"
