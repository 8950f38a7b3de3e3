#!/usr/bin/env bash
# Builds the library (debug) and the backend, then runs the Kotlin binding's JUnit tests
# (which also run examples/kotlin against a backend that cuts every 40 events).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
for tool in mvn java; do
  command -v $tool >/dev/null || { echo "$tool missing: run scripts/ensure-tools.sh" >&2; exit 1; }
done
cargo build --quiet -p tether --lib
cargo build --quiet -p tether-testkit --bin tether-backend
cd bindings/kotlin
mvn -q -B -Dtether.native.dir="$ROOT/target/debug" -Dtether.backend="$ROOT/target/debug/tether-backend" test
python3 - <<'PY'
import glob, re
t = f = 0
for x in glob.glob("target/surefire-reports/TEST-*.xml"):
    head = open(x).read(2000)
    t += int(re.search(r'tests="(\d+)"', head).group(1))
    f += int(re.search(r'failures="(\d+)"', head).group(1)) + int(re.search(r'errors="(\d+)"', head).group(1))
print(f"kotlin: {t - f} passed, {f} failed")
PY
