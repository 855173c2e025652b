#!/usr/bin/env bash
# The soak run: contextd on its durable default store (SQLite in a fresh data directory) under
# a mixed load at about half of its measured capacity, sampled every 10 s. See BENCHMARKS.md,
# "Soak".
#
#   bench/soak.sh 60s                 # release build (the default)
#   PROFILE=debug bench/soak.sh 60s   # debug build, for CI
#   bench/soak.sh 30m
#
# `loadgen soak` first measures the capacity of the mix (every kind in a closed loop at once,
# 5 s), then paces the same workers at FRACTION (default 0.5) of each kind's rate for
# DURATION: unary Interact, StreamResponse, Converse with a client-side tool round trip, and
# session create/turn/delete churn. Each sample holds the server's VmRSS, its open fds, the
# size of the data directory and each kind's p99 over the last interval. It prints the table as
# it goes, writes bench/results/soak-DURATION.json, prints PASS or FAIL with the reason, and
# exits 1 on FAIL.
#
# Environment: PROFILE (release|debug), FRACTION, SAMPLE_EVERY (seconds), BUILD=no (use the
# binaries already in target/), CONTEXTD_BIN and LOADGEN_BIN (use these binaries instead).
set -euo pipefail

DURATION=${1:-}
if [ -z "$DURATION" ]; then
    echo "usage: bench/soak.sh DURATION   (e.g. 60s, 10m, 30m)" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PROFILE=${PROFILE:-release}
FRACTION=${FRACTION:-0.5}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}

case "$PROFILE" in
release) BUILD_FLAGS=(--release) ;;
debug) BUILD_FLAGS=() ;;
*)
    echo "PROFILE must be release or debug, not $PROFILE" >&2
    exit 2 ;;
esac
if [ "${BUILD:-yes}" != no ] && [ -z "${CONTEXTD_BIN:-}${LOADGEN_BIN:-}" ]; then
    echo "== build ($PROFILE)" >&2
    cargo build "${BUILD_FLAGS[@]}" -p contextd -p loadgen
fi
CONTEXTD=${CONTEXTD_BIN:-$ROOT/target/$PROFILE/contextd}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/$PROFILE/loadgen}

SCRATCH=$(mktemp -d)
DATA=$SCRATCH/data
PID=
cleanup() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

# The durable default store: no --store flag, only a data directory of its own.
mkdir -p "$DATA"
(cd "$SCRATCH" && exec "$CONTEXTD" serve --listen 127.0.0.1:0 --data-dir "$DATA" \
    >"$SCRATCH/stdout" 2>"$SCRATCH/stderr") &
PID=$!
ADDR=
for _ in $(seq 1 600); do
    if grep -q 'listening on' "$SCRATCH/stdout" 2>/dev/null; then
        ADDR=$(grep -m1 'listening on' "$SCRATCH/stdout" | awk '{print $NF}')
        break
    fi
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "contextd exited before listening:" >&2
        cat "$SCRATCH/stderr" >&2
        exit 1
    fi
    sleep 0.05
done
if [ -z "$ADDR" ]; then
    echo "contextd did not start listening in 30 s" >&2
    exit 1
fi
echo "== contextd ($PROFILE, pid $PID) on $ADDR, data in a fresh directory" >&2

mkdir -p "$ROOT/bench/results"
OUT=$ROOT/bench/results/soak-$DURATION.json
# A results file left by an earlier run must not pass for this one's.
rm -f "$OUT"
STARTED=$(date +%s)
status=0
"$LOADGEN" soak --addr "$ADDR" --pid "$PID" --data-dir "$DATA" --duration "$DURATION" \
    --sample-every "$SAMPLE_EVERY" --fraction "$FRACTION" --label "$PROFILE" --out "$OUT" || status=$?
echo "== wall time $(($(date +%s) - STARTED)) s; samples in ${OUT#"$ROOT"/}" >&2

# The server must have lived through it: a crash would otherwise show only as errors.
if ! kill -0 "$PID" 2>/dev/null; then
    echo "FAIL: contextd exited during the run:" >&2
    tail -n 20 "$SCRATCH/stderr" >&2
    exit 1
fi
if [ ! -s "$OUT" ]; then
    echo "FAIL: the load generator wrote no results (exit status $status)" >&2
    exit 1
fi
# loadgen's last line on stderr is the verdict: "soak [PROFILE]: PASS" or "...: FAIL: why".
exit "$status"
