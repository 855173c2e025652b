#!/usr/bin/env bash
# Builds contextd's fuzz targets once, then runs each for SECONDS (default 30) and prints how
# many inputs each executed. Exits non-zero when any target crashed, hung or leaked past the
# memory limit; the input that did is kept in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# New inputs the runs find go to fuzz/target/corpus/<target>/ (not committed); the seeds in
# fuzz/corpus/<target>/ are only read. Needs the nightly toolchain and cargo-fuzz (ci.sh
# installs it). Sanitizer: none. contextd forbids unsafe code, so what the runs look for is
# panics, overflows (overflow checks and debug assertions are on) and hangs, and without
# AddressSanitizer each target executes about twice as many inputs in the same time.
#
# FUZZ_PROFILE=dev builds without optimizations (overflow checks and debug assertions on as
# in release): about half the build time on two cores and about a tenth of the executions per
# second. CI uses it (ci.sh); longer runs should keep the default, release.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
export CARGO_PROFILE_DEV_DEBUG=0
profile="${FUZZ_PROFILE:-release}"
case "$profile" in
release) build_flags=(); out=release ;;
dev) build_flags=(--dev); out=debug ;;
*) echo "FUZZ_PROFILE must be release or dev, not $profile" >&2; exit 2 ;;
esac
build_started=$(date +%s)
cargo +nightly fuzz build --sanitizer none "${build_flags[@]}"
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
echo "fuzz build ($profile): $(( $(date +%s) - build_started )) s"

failed=()
summary=()
for target in "${targets[@]}"; do
  mkdir -p "target/corpus/$target" "artifacts/$target" "corpus/$target"
  log="target/$target.log"
  status=0
  # The binaries `fuzz build` made, run directly: `cargo fuzz run` would build each target
  # again first (about half a minute per target on two cores).
  "target/$triple/$out/$target" "target/corpus/$target" "corpus/$target" \
    -max_total_time="$seconds" -timeout=120 -rss_limit_mb=4096 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="artifacts/$target/" >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  line=$(printf '%-18s %10s execs %8s exec/s' "$target" "$runs" "$rate")
  if [ "$status" -ne 0 ]; then
    line="$line  FAILED (exit $status, see fuzz/$log)"
    failed+=("$target")
    grep -m1 -A12 -E "panicked|ERROR: libFuzzer|SUMMARY" "$log" || true
  fi
  echo "$line"
  summary+=("$line")
done

echo
echo "fuzzed ${#targets[@]} targets for ${seconds} s each:"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "crashed: ${failed[*]}" >&2
  exit 1
fi
