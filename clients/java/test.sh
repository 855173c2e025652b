#!/usr/bin/env bash
# Builds the Java client (generating contextd.v1 from ../../proto) and runs its JUnit tests:
# the shared scenarios of clients/scenarios (one dynamic test per file, each against a fresh
# contextd on a free port), the wrapper's tests and the demo. The server binary is
# $CONTEXTD_BIN, else <repo>/target/debug/contextd. Ends with Surefire's totals line.
set -uo pipefail
cd "$(dirname "$0")"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
mvn -B -ntp -Dstyle.color=never test 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >"$log"
status=${PIPESTATUS[0]}
# Per-class results and failures, without Maven's download and plugin chatter.
sed -n '/T E S T S/,$p' "$log" | grep -vE '^\[INFO\] (-+|Results:|BUILD SUCCESS|Total time:.*|Finished at:.*)?$' || true
if [ "$status" -ne 0 ] && ! grep -q 'T E S T S' "$log"; then
  cat "$log" # the build failed before the tests: show why
fi
awk -F'[:,]' '/^Tests run:/ { run += $2; fail += $4; err += $6; skip += $8 }
  END { printf "Tests run: %d, Failures: %d, Errors: %d, Skipped: %d\n", run, fail, err, skip }' \
  target/surefire-reports/*.txt 2>/dev/null || echo "Tests run: 0, Failures: 0, Errors: 1, Skipped: 0"
exit "$status"
