#!/usr/bin/env bash
# Runs the Go client's checks: vet, then every test (shared scenarios, wrapper, demo) against
# real contextd processes. The server binary is $CONTEXTD_BIN, else <repo>/target/debug/contextd.
# Ends with one summary line: "go: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")"

go mod download || exit 1
go vet ./... || exit 1

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
go test -count=1 -v ./... >"$log" 2>&1
status=$?
# Show results without the RUN noise; failures show their messages.
grep -vE '^\s*=== (RUN|PAUSE|CONT)' "$log"
passed=$(grep -cE '^\s*--- PASS' "$log")
failed=$(grep -cE '^\s*--- FAIL' "$log")
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1 # a build or setup failure fails no named test
fi
echo "go: $passed passed, $failed failed"
exit "$status"
