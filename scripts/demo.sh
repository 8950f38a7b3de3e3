#!/usr/bin/env bash
# The main job: embedded testkit backend + connect, request, ping/ack, cut, resume, close.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --example demo
