#!/usr/bin/env bash
# Regenerates src/gen (protobuf-es code for proto/) with buf and the local protoc-gen-es
# plugin, both pinned in package.json. Idempotent: same inputs, same bytes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
if [ ! -x node_modules/.bin/protoc-gen-es ] || [ ! -x node_modules/.bin/buf ]; then
  npm ci --no-audit --no-fund --ignore-scripts >/dev/null
fi
node_modules/.bin/buf generate ../.. --template buf.gen.yaml
