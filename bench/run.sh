#!/usr/bin/env bash
# Benchmarks of contextd against a bare tonic server (the ceiling) and a Python grpcio peer,
# and of its HTTP/JSON door against its native gRPC, measured side by side in one run.
# See BENCHMARKS.md.
#
#   bench/run.sh smoke   # seconds: debug builds, every scenario for about a second (CI)
#   bench/run.sh quick   # a few minutes
#   bench/run.sh full    # longer windows, more rounds, more cold starts
#   bench/run.sh --pin quick   # also the pinned unary targets (server on CPU 0, load on CPU 1)
#
# Each run writes bench/results/MODE.json (every raw result, the machine, the exact commands)
# and regenerates MODE's tables in BENCHMARKS.md. Everything runs on 127.0.0.1.
# Needs: cargo; python3 (venv + pip, for the peer, SMG and the report); go (optional, for
# ghz); PostgreSQL's server programs (optional, for the `postgres` targets); taskset (optional,
# for `--pin`). The `gateway` rounds (contextd beside SMG, SGLang's model gateway, pinned in
# bench/peers/smg/requirements.txt) run in quick and full only.
set -euo pipefail

usage() {
    echo "usage: bench/run.sh [--pin] smoke|quick|full" >&2
    exit 2
}
MODE=
PIN=no
for arg in "$@"; do
    case $arg in
    --pin) PIN=yes ;;
    smoke | quick | full)
        [ -z "$MODE" ] || usage
        MODE=$arg ;;
    *) usage ;;
    esac
done
MODE=${MODE:-quick}
# smoke always takes the pinned path once, so that CI exercises it.
[ "$MODE" = smoke ] && PIN=yes
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
cd "$ROOT"

case "$MODE" in
smoke)
    PROFILE=debug ROUNDS=1 WARMUP=0.2 DURATION=1 GHZ_DURATION=1s
    HIST_MESSAGES=400 HIST_TURNS=20 IDLE_STREAMS=200 IDLE_CONNECTIONS=4 COLD_RUNS=3
    MANY_SMALL=200 MANY_LARGE=2000 ;;
quick)
    PROFILE=release ROUNDS=2 WARMUP=1 DURATION=5 GHZ_DURATION=5s
    HIST_MESSAGES=100000 HIST_TURNS=300 IDLE_STREAMS=10000 IDLE_CONNECTIONS=100 COLD_RUNS=20
    MANY_SMALL=1000 MANY_LARGE=100000 ;;
full)
    PROFILE=release ROUNDS=3 WARMUP=2 DURATION=10 GHZ_DURATION=10s
    HIST_MESSAGES=100000 HIST_TURNS=1000 IDLE_STREAMS=10000 IDLE_CONNECTIONS=100 COLD_RUNS=50
    MANY_SMALL=1000 MANY_LARGE=1000000 ;;
esac

RAW=$BENCH/results/raw-$MODE
rm -rf "$RAW"
mkdir -p "$RAW"
COMMANDS=$RAW/commands.txt
: >"$COMMANDS"
SCRATCH=$(mktemp -d)
SERVER_PIDS=()
PG_CTL=
PG_DATA=
PG_AS=()

log() { echo "== $*" >&2; }

cleanup() {
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [ -n "$PG_CTL" ]; then
        "${PG_AS[@]}" "$PG_CTL" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

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
FAKE_OPENAI=$TARGET/fake-openai

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

# --- SMG (the peer gateway of the gateway rounds) ------------------------------------------
# Installed into the same venv from PyPI (a wheel with the Rust gateway inside). Not in smoke:
# the gateway rounds are for quick and full.
SMG=
if [ "$MODE" = smoke ]; then
    log "gateway: not run in smoke (quick and full only)"
elif [ "$PYTHON_PEER" != yes ]; then
    log "smg: no python3 venv; skipping the gateway-smg rounds"
else
    log "smg (pip, pinned in bench/peers/smg/requirements.txt)"
    if run "$BENCH/.venv/bin/pip" install --quiet --disable-pip-version-check \
        -r "$BENCH/peers/smg/requirements.txt" && [ -x "$BENCH/.venv/bin/smg" ]; then
        SMG=$BENCH/.venv/bin/smg
    else
        log "smg: not installed (pip's error above); skipping the gateway-smg rounds"
    fi
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
# stdout; sets ADDR and PID, and adds PID to RUNNING. The command runs under SERVER_WRAP
# (e.g. `taskset -c 0`, which execs it: PID is the server's own).
SERVER_WRAP=()
RUNNING=()
RUNNING_ADDRS=()
start() {
    local name=$1
    shift
    local dir=$SCRATCH/$name
    rm -rf "$dir"
    mkdir -p "$dir"
    set -- "${SERVER_WRAP[@]}" "$@"
    printf '%s\n' "$*" | sed "s#$ROOT/##g; s#$SCRATCH/##g" >>"$COMMANDS"
    (cd "$dir" && exec "$@" >"$dir/stdout" 2>"$dir/stderr") &
    PID=$!
    SERVER_PIDS+=("$PID")
    RUNNING+=("$PID")
    for _ in $(seq 1 600); do
        if grep -q 'listening on' "$dir/stdout" 2>/dev/null; then
            ADDR=$(grep -m1 'listening on' "$dir/stdout" | awk '{print $NF}')
            RUNNING_ADDRS+=("$ADDR")
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

# Stops every server started since the last stop.
stop() {
    local pid
    for pid in "${RUNNING[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    RUNNING=()
    RUNNING_ADDRS=()
}

# The load generator's --addr/--pid arguments for every server started since the last stop.
server_args() {
    SERVER_ARGS=()
    local i
    for i in "${!RUNNING[@]}"; do
        SERVER_ARGS+=(--addr "${RUNNING_ADDRS[$i]}" --pid "${RUNNING[$i]}")
    done
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

# --- PostgreSQL ----------------------------------------------------------------------------
# The `postgres` targets run contextd on a throwaway cluster in the scratch directory: initdb
# with trust authentication, a unix socket there and a free TCP port on 127.0.0.1, fsync and
# synchronous_commit left on (what a durable shared store costs is the point; `--no-sync`
# only skips initdb's own flush of the new cluster). One fresh database per target and round.
# As root, the cluster runs as the `postgres` user: PostgreSQL refuses to run as root.
# Skipped, with a line saying why, when the programs are missing or the cluster won't start.
PG=no
pg_setup() {
    local bin=
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
        [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && bin=$dir
    done
    if [ -z "$bin" ] && command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        bin=$(dirname "$(command -v initdb)")
    fi
    if [ -z "$bin" ]; then
        log "postgres: PostgreSQL's server programs (initdb, pg_ctl) not found; skipping the postgres targets"
        return 0
    fi
    if [ "$DURABLE" != yes ]; then
        log "postgres: this contextd has no --store flag; skipping the postgres targets"
        return 0
    fi
    dir=$SCRATCH/pg
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        if ! id postgres >/dev/null 2>&1; then
            log "postgres: running as root and there is no postgres user to run the cluster; skipping the postgres targets"
            return 0
        fi
        PG_AS=(runuser -u postgres --)
        chmod o+x "$SCRATCH"
        chown postgres "$dir"
    fi
    PG_BIN=$bin
    PG_DATA=$dir/data
    PG_SOCKET=$dir
    PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    log "postgres: throwaway cluster ($bin), 127.0.0.1:$PG_PORT"
    if ! run "${PG_AS[@]}" "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        log "postgres: initdb failed (above); skipping the postgres targets"
        return 0
    fi
    PG_CTL=$bin/pg_ctl
    if ! run "${PG_AS[@]}" "$PG_CTL" -D "$PG_DATA" -l "$dir/server.log" -w -t 60 \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_SOCKET -c max_connections=400" start >/dev/null; then
        cat "$dir/server.log" >&2 || true
        log "postgres: the cluster did not start (above); skipping the postgres targets"
        return 0
    fi
    # The postmaster: the load generator reads its CPU time and its backends'.
    PG_PID=$(head -1 "$PG_DATA/postmaster.pid")
    PG=yes
}

# pg_database NAME: creates database NAME; sets PG_URL.
pg_database() {
    run "${PG_AS[@]}" "$PG_BIN/createdb" -h "$PG_SOCKET" -p "$PG_PORT" -U postgres "$1"
    PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/$1
}

pg_setup

# --- pinning -------------------------------------------------------------------------------
# `--pin`: the unary scenario for contextd, the durable store and the ceiling also runs with
# the server on CPU 0 and the load generator on CPU 1, so that they stop competing for the
# same core (the scheduler otherwise moves both across the two). Not for the PostgreSQL
# targets: three processes do not fit two pinned CPUs.
PINNED=no
if [ "$PIN" = yes ]; then
    if ! command -v taskset >/dev/null; then
        log "pin: taskset not found; skipping the pinned targets"
    elif [ "$(nproc)" -lt 2 ] || ! taskset -c 0,1 true 2>/dev/null; then
        log "pin: CPUs 0 and 1 are not both available here; skipping the pinned targets"
    else
        PINNED=yes
    fi
fi

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
# `nokept`: the same in-memory contextd with `engine.window_cache_bytes = 0` (every turn reads
# its whole window from the store) — beside `contextd`, what the kept windows save.
printf '[engine]\nwindow_cache_bytes = 0\n' >"$SCRATCH/no-kept.toml"
# `connect` and `grpcweb`: the browser doors (Connect's unary JSON call, gRPC-Web in protobuf),
# over the same HTTP/1.1 connections as `http`.
TARGETS=(contextd "${AUTH_TARGETS[@]}" nokept http connect grpcweb short ceiling)
[ "$DURABLE" = yes ] && TARGETS+=(durable)
[ "$PYTHON_PEER" = yes ] && TARGETS+=(python)
# `postgres`: one contextd on PostgreSQL; `postgres2`: two replicas on one database, the
# load generator's connections split between them.
[ "$PG" = yes ] && TARGETS+=(postgres postgres2)
if [ "$PINNED" = yes ]; then
    TARGETS+=(contextd-pinned)
    [ "$DURABLE" = yes ] && TARGETS+=(durable-pinned)
    TARGETS+=(ceiling-pinned)
fi
for round in $(seq 1 "$ROUNDS"); do
    for target in "${TARGETS[@]}"; do
        log "unary: $target, round $round"
        SCENARIO=unary
        ROUTE=()
        EXTRA=()
        LOAD_WRAP=()
        base=$target
        if [[ $target == *-pinned ]]; then
            base=${target%-pinned}
            SERVER_WRAP=(taskset -c 0)
            LOAD_WRAP=(taskset -c 1)
        fi
        case $base in
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
        nokept) start contextd-nokept "$CONTEXTD" serve --listen 127.0.0.1:0 "${MEMORY_STORE[@]}" \
            --config "$SCRATCH/no-kept.toml" ;;
        nometrics) start contextd-nometrics "$CONTEXTD" serve --listen 127.0.0.1:0 \
            "${MEMORY_STORE[@]}" --config "$SCRATCH/no-metrics.toml" ;;
        durable) contextd_durable ;;
        ceiling) ceiling ;;
        python) python_peer ;;
        postgres)
            pg_database "postgres_r$round"
            start contextd-postgres "$CONTEXTD" serve --listen 127.0.0.1:0 --store "$PG_URL"
            EXTRA=(--db-pid "$PG_PID") ;;
        postgres2)
            pg_database "postgres2_r$round"
            start contextd-postgres-a "$CONTEXTD" serve --listen 127.0.0.1:0 --store "$PG_URL"
            start contextd-postgres-b "$CONTEXTD" serve --listen 127.0.0.1:0 --store "$PG_URL"
            EXTRA=(--db-pid "$PG_PID") ;;
        esac
        SERVER_WRAP=()
        server_args
        key=
        [ "$target" = auth ] && key=$BENCH_KEY
        CONTEXTD_API_KEY=$key run "${LOAD_WRAP[@]}" "$LOADGEN" "$SCENARIO" "${ROUTE[@]}" "${SERVER_ARGS[@]}" \
            "${EXTRA[@]}" --connections 50 "${TIMING[@]}" --label "$target" --out "$RAW/unary-$target-r$round.json"
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

# --- 9: gateways: contextd and SMG in front of one fake OpenAI upstream ---------------------
# Every target and round starts a fresh fake-openai (answers at once with a fixed 20-word
# reply) and a fresh gateway in front of it. contextd's config names the fake as an `openai`
# backend and makes it the default model, so each conversation's session (created by its
# first Interact) calls it; SMG runs `--backend openai` with the fake as its worker and keeps
# conversations in its history backend (Responses API, store + previous_response_id). 16
# conversations at a time, 10 turns each. The gateway's CPU is its process tree's; the fake's
# is reported apart. PostgreSQL targets use the throwaway cluster, a fresh database each.
GATEWAY=no
# free_port: prints a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# start_smg NAME HISTORY-ARGS...: starts SMG in front of $FAKE_ADDR and waits until its
# /readiness answers 200 (its upstream registered); sets ADDR and PID like start.
start_smg() {
    local name=$1
    shift
    local dir=$SCRATCH/$name port metrics
    rm -rf "$dir"
    mkdir -p "$dir"
    port=$(free_port)
    metrics=$(free_port)
    set -- "$SMG" launch --backend openai --worker-urls "http://$FAKE_ADDR" "$@" \
        --host 127.0.0.1 --port "$port" --prometheus-host 127.0.0.1 --prometheus-port "$metrics" \
        --shutdown-grace-period-secs 2
    printf '%s\n' "$*" | sed "s#$ROOT/##g; s#$SCRATCH/##g" >>"$COMMANDS"
    (cd "$dir" && exec "$@" >"$dir/stdout" 2>"$dir/stderr") &
    PID=$!
    SERVER_PIDS+=("$PID")
    RUNNING+=("$PID")
    ADDR=127.0.0.1:$port
    for _ in $(seq 1 300); do
        if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
            "http://$ADDR/readiness" 2>/dev/null; then
            RUNNING_ADDRS+=("$ADDR")
            return 0
        fi
        if ! kill -0 "$PID" 2>/dev/null; then
            echo "$name exited before it was ready:" >&2
            cat "$dir/stderr" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$name was not ready in 30 s" >&2
    return 1
}
if [ "$MODE" != smoke ]; then
    GATEWAY=yes
    GW_TARGETS=(gateway-contextd-memory)
    [ "$DURABLE" = yes ] && [ "$DATA_DIR_FLAG" = yes ] && GW_TARGETS+=(gateway-contextd-sqlite)
    [ -n "$SMG" ] && GW_TARGETS+=(gateway-smg-memory)
    if [ "$PG" = yes ]; then
        GW_TARGETS+=(gateway-contextd-postgres)
        [ -n "$SMG" ] && GW_TARGETS+=(gateway-smg-postgres)
    fi
    for round in $(seq 1 "$ROUNDS"); do
        for target in "${GW_TARGETS[@]}"; do
            log "gateway: $target, round $round"
            start fake-openai "$FAKE_OPENAI" --listen 127.0.0.1:0
            FAKE_ADDR=$ADDR
            FAKE_PID=$PID
            config=$SCRATCH/gateway-fake.toml
            printf '[engine]\ndefault_model = "fake/gpt-fake"\n\n[[backends]]\nname = "fake"\nkind = "openai"\nbase_url = "http://%s/v1"\ncontext_window = 8192\ndefault_model = "gpt-fake"\n' \
                "$FAKE_ADDR" >"$config"
            EXTRA=()
            GW=contextd
            case $target in
            gateway-contextd-memory)
                start gw-contextd "$CONTEXTD" serve --listen 127.0.0.1:0 "${MEMORY_STORE[@]}" --config "$config" ;;
            gateway-contextd-sqlite)
                start gw-contextd-sqlite "$CONTEXTD" serve --listen 127.0.0.1:0 \
                    --data-dir "$SCRATCH/gw-contextd-sqlite/data" --config "$config" ;;
            gateway-contextd-postgres)
                pg_database "gw_contextd_r$round"
                start gw-contextd-postgres "$CONTEXTD" serve --listen 127.0.0.1:0 --store "$PG_URL" --config "$config"
                EXTRA=(--db-pid "$PG_PID") ;;
            gateway-smg-memory)
                GW=smg
                start_smg gw-smg --history-backend memory ;;
            gateway-smg-postgres)
                GW=smg
                pg_database "gw_smg_r$round"
                start_smg gw-smg-postgres --history-backend postgres --postgres-db-url "$PG_URL"
                EXTRA=(--db-pid "$PG_PID") ;;
            esac
            run "$LOADGEN" gateway --gateway "$GW" --addr "$ADDR" --pid "$PID" --upstream "$FAKE_ADDR" \
                --upstream-pid "$FAKE_PID" "${EXTRA[@]}" --connections 16 --turns 10 "${TIMING[@]}" \
                --label "$target" --out "$RAW/$target-r$round.json"
            stop
        done
    done
fi

# --- 5: history scaling --------------------------------------------------------------------
log "history ($HIST_MESSAGES messages)"
contextd_memory
run "$LOADGEN" history --addr "$ADDR" --pid "$PID" --messages "$HIST_MESSAGES" --small-messages 10 \
    --turns "$HIST_TURNS" --label contextd --out "$RAW/history.json"
stop

# --- many sessions: turns on random sessions of a large store ------------------------------
# Sessions are written straight into the SQLite store of a data directory (loadgen
# seed-sessions), then contextd is started on it; MANY_SMALL and MANY_LARGE sessions, each
# store seeded once, measured in alternating rounds, each on a freshly started contextd.
MANY=no
if [ "$DURABLE" = yes ] && [ "$DATA_DIR_FLAG" = yes ]; then
    MANY=yes
    for n in "$MANY_SMALL" "$MANY_LARGE"; do
        log "many-sessions: seeding $n sessions"
        run "$LOADGEN" seed-sessions --data-dir "$SCRATCH/many-data-$n" --sessions "$n" \
            --label "n$n" --out "$RAW/seed-sessions-$n.json"
    done
    for round in $(seq 1 "$ROUNDS"); do
        for n in "$MANY_SMALL" "$MANY_LARGE"; do
            log "many-sessions: $n sessions, round $round"
            start "many-$n" "$CONTEXTD" serve --listen 127.0.0.1:0 --data-dir "$SCRATCH/many-data-$n"
            run "$LOADGEN" many-sessions --addr "$ADDR" --pid "$PID" --sessions "$n" --connections 50 \
                "${TIMING[@]}" --label "n$n" --out "$RAW/many-sessions-$n-r$round.json"
            stop
        done
    done
else
    log "many-sessions: this contextd has no durable store with --data-dir; skipping"
fi

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
    --profile "$PROFILE" --durable "$DURABLE" --python-peer "$PYTHON_PEER" --ghz "${GHZ:+yes}" \
    --postgres "$PG" --pinned "$PINNED" --many-sessions "$MANY" --gateway "$GATEWAY" --smg "${SMG:+yes}"
