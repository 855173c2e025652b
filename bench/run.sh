#!/usr/bin/env bash
# Benchmarks of contextd against a bare tonic server (the ceiling) and a Python grpcio peer,
# and of its HTTP/JSON door against its native gRPC, measured side by side in one run.
# See BENCHMARKS.md.
#
#   bench/run.sh smoke   # seconds: debug builds, every scenario for about a second (CI)
#   bench/run.sh quick   # under 3 minutes
#   bench/run.sh full    # longer windows, more rounds, more cold starts
#
# Each run writes bench/results/MODE.json (every raw result, the machine, the exact commands)
# and regenerates MODE's tables in BENCHMARKS.md. Everything runs on 127.0.0.1.
# Needs: cargo; python3 (venv + pip, for the peer and the report); go (optional, for ghz).
set -euo pipefail

MODE=${1:-quick}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
cd "$ROOT"

case "$MODE" in
smoke)
    PROFILE=debug ROUNDS=1 WARMUP=0.2 DURATION=1 GHZ_DURATION=1s
    HIST_MESSAGES=400 HIST_TURNS=20 IDLE_STREAMS=200 IDLE_CONNECTIONS=4 COLD_RUNS=3 ;;
quick)
    PROFILE=release ROUNDS=2 WARMUP=1 DURATION=5 GHZ_DURATION=5s
    HIST_MESSAGES=100000 HIST_TURNS=300 IDLE_STREAMS=10000 IDLE_CONNECTIONS=100 COLD_RUNS=20 ;;
full)
    PROFILE=release ROUNDS=3 WARMUP=2 DURATION=10 GHZ_DURATION=10s
    HIST_MESSAGES=100000 HIST_TURNS=1000 IDLE_STREAMS=10000 IDLE_CONNECTIONS=100 COLD_RUNS=50 ;;
*)
    echo "usage: bench/run.sh smoke|quick|full" >&2
    exit 2 ;;
esac

RAW=$BENCH/results/raw-$MODE
rm -rf "$RAW"
mkdir -p "$RAW"
COMMANDS=$RAW/commands.txt
: >"$COMMANDS"
SCRATCH=$(mktemp -d)
SERVER_PIDS=()

cleanup() {
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

log() { echo "== $*" >&2; }

# Runs a command and records it (relative to the repository root) in commands.txt.
run() {
    printf '%s\n' "$*" | sed "s#$ROOT/##g" >>"$COMMANDS"
    "$@"
}

# --- build ---------------------------------------------------------------------------------
log "build ($PROFILE)"
if [ "$PROFILE" = release ]; then
    run cargo build --release -p contextd -p loadgen
    TARGET=$ROOT/target/release
else
    run cargo build -p contextd -p loadgen
    TARGET=$ROOT/target/debug
fi
CONTEXTD=$TARGET/contextd
LOADGEN=$TARGET/loadgen
CEILING=$TARGET/ceiling

# contextd gains `--store` with its durable store; the in-memory scenarios then ask for
# `--store memory` explicitly, and scenario 2 runs the default (durable) store.
SERVE_HELP=$("$CONTEXTD" serve --help)
MEMORY_STORE=()
DURABLE=no
if grep -q -- '--store' <<<"$SERVE_HELP"; then
    MEMORY_STORE=(--store memory)
    DURABLE=yes
fi
DATA_DIR_FLAG=no
if grep -q -- '--data-dir' <<<"$SERVE_HELP"; then
    DATA_DIR_FLAG=yes
fi

cp /proc/loadavg "$RAW/loadavg-start.txt"

# --- Python peer ---------------------------------------------------------------------------
PYTHON_PEER=no
if command -v python3 >/dev/null; then
    log "python peer (venv bench/.venv, stubs from proto/)"
    if [ ! -x "$BENCH/.venv/bin/python" ]; then
        run python3 -m venv "$BENCH/.venv"
    fi
    run "$BENCH/.venv/bin/pip" install --quiet --disable-pip-version-check \
        -r "$BENCH/peers/python/requirements.txt"
    mkdir -p "$BENCH/peers/python/gen"
    # interact.proto imports the vendored google/api annotations (its HTTP rules).
    run "$BENCH/.venv/bin/python" -m grpc_tools.protoc -I proto/third_party -I proto \
        --python_out="$BENCH/peers/python/gen" --grpc_python_out="$BENCH/peers/python/gen" \
        proto/contextd/v1/common.proto proto/contextd/v1/interact.proto \
        proto/third_party/google/api/http.proto proto/third_party/google/api/annotations.proto
    PYTHON_PEER=yes
fi

# --- ghz -----------------------------------------------------------------------------------
GHZ=$BENCH/.tools/bin/ghz
if [ ! -x "$GHZ" ] && command -v go >/dev/null; then
    log "ghz (go install, pinned)"
    GOBIN=$BENCH/.tools/bin run go install github.com/bojand/ghz/cmd/ghz@v0.121.0
fi
[ -x "$GHZ" ] || GHZ=

# --- servers -------------------------------------------------------------------------------
# start NAME CMD...: starts a server in $SCRATCH/NAME, waits for "listening on ADDR" on its
# stdout; sets ADDR and PID.
start() {
    local name=$1
    shift
    local dir=$SCRATCH/$name
    rm -rf "$dir"
    mkdir -p "$dir"
    printf '%s\n' "$*" | sed "s#$ROOT/##g; s#$SCRATCH/##g" >>"$COMMANDS"
    (cd "$dir" && exec "$@" >"$dir/stdout" 2>"$dir/stderr") &
    PID=$!
    SERVER_PIDS+=("$PID")
    for _ in $(seq 1 600); do
        if grep -q 'listening on' "$dir/stdout" 2>/dev/null; then
            ADDR=$(grep -m1 'listening on' "$dir/stdout" | awk '{print $NF}')
            return 0
        fi
        if ! kill -0 "$PID" 2>/dev/null; then
            echo "$name exited before listening:" >&2
            cat "$dir/stderr" >&2
            return 1
        fi
        sleep 0.05
    done
    echo "$name did not start listening in 30 s" >&2
    return 1
}

stop() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}

contextd_memory() { start contextd "$CONTEXTD" serve --listen 127.0.0.1:0 "${MEMORY_STORE[@]}"; }
contextd_durable() {
    if [ "$DATA_DIR_FLAG" = yes ]; then
        start contextd-durable "$CONTEXTD" serve --listen 127.0.0.1:0 --data-dir "$SCRATCH/contextd-durable/data"
    else
        start contextd-durable "$CONTEXTD" serve --listen 127.0.0.1:0
    fi
}
ceiling() { start ceiling "$CEILING" --listen 127.0.0.1:0; }
python_peer() { start python "$BENCH/.venv/bin/python" "$BENCH/peers/python/server.py" --listen 127.0.0.1:0; }

TIMING=(--warmup "$WARMUP" --duration "$DURATION")

# --- 1, 2: unary, side by side, in alternating rounds --------------------------------------
# `http`: the same turns over HTTP/JSON (POST /v1/sessions/{id}:interact, one keep-alive
# HTTP/1.1 connection per worker) to the same in-memory contextd, started afresh like every
# target, right after native gRPC in every round.
# `short`: contextd with 512-token windows, to show what assembling a full window costs.
printf '[engine]\ndefault_max_context_tokens = 512\n' >"$SCRATCH/short-window.toml"
# `auth`: the same in-memory contextd with `auth.mode = "keys"` (every turn carries a key the
# server checks); `nometrics`: with `metrics.enabled = false` — beside `contextd`, what
# authentication and metrics cost per request.
AUTH_TARGETS=()
if grep -q -- '--auth' <<<"$SERVE_HELP"; then
    printf '[auth]\nmode = "keys"\nkeys_file = "%s"\n' "$SCRATCH/keys.toml" >"$SCRATCH/auth.toml"
    BENCH_KEY=$("$CONTEXTD" keys add --config "$SCRATCH/auth.toml" "${MEMORY_STORE[@]}" \
        --tenant bench --role user 2>/dev/null)
    printf '[metrics]\nenabled = false\n' >"$SCRATCH/no-metrics.toml"
    AUTH_TARGETS=(auth nometrics)
fi
# `connect` and `grpcweb`: the browser doors (Connect's unary JSON call, gRPC-Web in protobuf),
# over the same HTTP/1.1 connections as `http`.
TARGETS=(contextd "${AUTH_TARGETS[@]}" http connect grpcweb short ceiling)
[ "$DURABLE" = yes ] && TARGETS+=(durable)
[ "$PYTHON_PEER" = yes ] && TARGETS+=(python)
for round in $(seq 1 "$ROUNDS"); do
    for target in "${TARGETS[@]}"; do
        log "unary: $target, round $round"
        SCENARIO=unary
        ROUTE=()
        case $target in
        contextd) contextd_memory ;;
        http)
            contextd_memory
            SCENARIO=http-unary ;;
        connect | grpcweb)
            contextd_memory
            SCENARIO=http-unary
            ROUTE=(--route "$([ "$target" = connect ] && echo connect || echo grpc-web)") ;;
        short) start contextd-short "$CONTEXTD" serve --listen 127.0.0.1:0 "${MEMORY_STORE[@]}" \
            --config "$SCRATCH/short-window.toml" ;;
        auth) start contextd-auth "$CONTEXTD" serve --listen 127.0.0.1:0 "${MEMORY_STORE[@]}" \
            --config "$SCRATCH/auth.toml" ;;
        nometrics) start contextd-nometrics "$CONTEXTD" serve --listen 127.0.0.1:0 \
            "${MEMORY_STORE[@]}" --config "$SCRATCH/no-metrics.toml" ;;
        durable) contextd_durable ;;
        ceiling) ceiling ;;
        python) python_peer ;;
        esac
        key=
        [ "$target" = auth ] && key=$BENCH_KEY
        CONTEXTD_API_KEY=$key run "$LOADGEN" "$SCENARIO" "${ROUTE[@]}" --addr "$ADDR" --pid "$PID" --connections 50 "${TIMING[@]}" \
            --label "$target" --out "$RAW/unary-$target-r$round.json"
        stop
    done
done

# --- ghz cross-check of unary --------------------------------------------------------------
if [ -n "$GHZ" ]; then
    for target in contextd ceiling; do
        log "ghz: $target"
        case $target in
        contextd) contextd_memory ;;
        ceiling) ceiling ;;
        esac
        run "$GHZ" --insecure --proto proto/contextd/v1/interact.proto --import-paths proto,proto/third_party \
            --call contextd.v1.InteractService/Interact \
            -d '{"sessionId":"ghz-{{.WorkerID}}","message":"Hello, I am John.","context":{"user_id":"john_doe"}}' \
            --connections 50 --concurrency 50 --duration "$GHZ_DURATION" \
            --format json --output "$RAW/ghz-$target.json" "$ADDR"
        stop
    done
fi

# --- 3: StreamResponse token relay (64 streams) --------------------------------------------
log "stream"
contextd_memory
run "$LOADGEN" stream --addr "$ADDR" --pid "$PID" --connections 8 --in-flight 8 "${TIMING[@]}" \
    --label contextd --out "$RAW/stream.json"
stop

# --- 4: Converse with a client-side tool round trip per turn -------------------------------
log "converse"
contextd_memory
run "$LOADGEN" converse --addr "$ADDR" --pid "$PID" --connections 8 --in-flight 4 "${TIMING[@]}" \
    --label contextd --out "$RAW/converse.json"
stop
# The same turns over the WebSocket door, as many sockets as the gRPC run has streams (32), in
# text frames of proto3 JSON (what a page sends) and in binary frames of protobuf.
for frames in json proto; do
    log "ws-converse ($frames frames)"
    contextd_memory
    run "$LOADGEN" ws-converse --frames "$frames" --addr "$ADDR" --pid "$PID" --connections 8 --in-flight 4 \
        "${TIMING[@]}" --label contextd --out "$RAW/ws-converse-$frames.json"
    stop
done

# --- 5: history scaling --------------------------------------------------------------------
log "history ($HIST_MESSAGES messages)"
contextd_memory
run "$LOADGEN" history --addr "$ADDR" --pid "$PID" --messages "$HIST_MESSAGES" --small-messages 10 \
    --turns "$HIST_TURNS" --label contextd --out "$RAW/history.json"
stop

# --- 6: idle Converse streams --------------------------------------------------------------
log "idle ($IDLE_STREAMS streams)"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
contextd_memory
run "$LOADGEN" idle --addr "$ADDR" --pid "$PID" --streams "$IDLE_STREAMS" \
    --connections "$IDLE_CONNECTIONS" --label contextd --out "$RAW/idle.json"
stop

# --- 7: cold start -------------------------------------------------------------------------
log "cold start ($COLD_RUNS runs)"
mkdir -p "$SCRATCH/cold"
run "$LOADGEN" coldstart --runs "$COLD_RUNS" --workdir "$SCRATCH/cold" --label contextd \
    --out "$RAW/coldstart-contextd.json" -- "$CONTEXTD" serve --listen 127.0.0.1:0 "${MEMORY_STORE[@]}"
if [ "$DURABLE" = yes ]; then
    mkdir -p "$SCRATCH/cold-durable"
    run "$LOADGEN" coldstart --runs "$COLD_RUNS" --workdir "$SCRATCH/cold-durable" --label durable \
        --out "$RAW/coldstart-durable.json" -- "$CONTEXTD" serve --listen 127.0.0.1:0
fi
run "$LOADGEN" coldstart --runs "$COLD_RUNS" --workdir "$SCRATCH/cold" --label ceiling \
    --out "$RAW/coldstart-ceiling.json" -- "$CEILING" --listen 127.0.0.1:0

# --- report --------------------------------------------------------------------------------
cp /proc/loadavg "$RAW/loadavg-end.txt"
log "report"
python3 "$BENCH/report.py" "$MODE" "$RAW" \
    --profile "$PROFILE" --durable "$DURABLE" --python-peer "$PYTHON_PEER" --ghz "${GHZ:+yes}"
