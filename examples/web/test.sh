#!/usr/bin/env bash
# Builds the example page and runs it in Debian's headless Chromium against a live contextd.
# Needs Node.js 20+, /usr/bin/chromium (or CHROMIUM_BIN) and CONTEXTD_BIN (default:
# <repo>/target/debug/contextd). The page imports the TypeScript client's browser entry, whose
# dependencies are installed here too.
set -euo pipefail
cd "$(dirname "$0")"
(cd ../../clients/typescript && npm ci --no-audit --no-fund --loglevel=error)
npm ci --no-audit --no-fund --loglevel=error
exec node --test test/
