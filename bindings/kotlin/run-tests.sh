#!/usr/bin/env bash
# Builds the library (debug), the backend and the libgomuksffi double (tests/inproc), then
# `mvn verify`: the Android API 21 check (animal-sniffer), the JUnit tests against
# tether-backend and, in-process, the double (they also run examples/kotlin),
# the jar (with linux-x86-64/libtether.so and META-INF/LICENSE) and the *IT tests on that jar.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
for tool in mvn java; do
  command -v $tool >/dev/null || { echo "$tool missing: run scripts/ensure-tools.sh" >&2; exit 1; }
done
cargo build --quiet -p tether --lib
cargo build --quiet -p tether-testkit --bin tether-backend
# The libgomuksffi double for InProcessTest (well under a second).
tests/inproc/build.sh "$ROOT/target/fake-gomuksffi" >/dev/null
cd bindings/kotlin
# Reports of an earlier run must not be counted as this one's.
rm -rf target/surefire-reports target/failsafe-reports
status=0
mvn -q -B -Dtether.native.dir="$ROOT/target/debug" -Dtether.backend="$ROOT/target/debug/tether-backend" \
  -Dtether.fakeGomuks="$ROOT/target/fake-gomuksffi/libfakegomuksffi.so" verify || status=$?
STATUS=$status python3 - <<'PY'
import glob, os, re
t = f = 0
for x in glob.glob("target/surefire-reports/TEST-*.xml") + glob.glob("target/failsafe-reports/TEST-*.xml"):
    head = open(x).read(2000)
    t += int(re.search(r'tests="(\d+)"', head).group(1))
    f += int(re.search(r'failures="(\d+)"', head).group(1)) + int(re.search(r'errors="(\d+)"', head).group(1))
if os.environ["STATUS"] != "0" and f == 0:
    f = 1  # the build failed outside the tests (compilation, API check, packaging)
print(f"kotlin: {max(t - f, 0)} passed, {f} failed")
PY
exit $status
