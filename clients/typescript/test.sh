#!/usr/bin/env bash
# Installs the TypeScript client's pinned dependencies (npm ci, from package-lock.json),
# compiles it, and runs its tests with node's test runner — the shared scenarios and the
# wrapper's own — against a live contextd started on a free port. Needs Node.js 20+ and
# CONTEXTD_BIN (default: <repo>/target/debug/contextd).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
exec node --test dist/test/*.test.js
