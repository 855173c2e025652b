#!/usr/bin/env bash
# What CI runs for fuzzing: cargo-fuzz (pinned) if it is missing, then every target for 30 s,
# built without optimizations (run.sh, FUZZ_PROFILE): the build is most of the stage's time.
set -euo pipefail
cd "$(dirname "$0")"
CARGO_FUZZ_VERSION=0.13.2
if ! cargo +nightly fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
FUZZ_PROFILE=dev exec ./run.sh 30
