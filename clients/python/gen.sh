#!/usr/bin/env bash
# Regenerates the Python protobuf and gRPC modules under src/contextd/v1 from proto/.
# Idempotent: same inputs, same bytes. Uses grpcio-tools (it bundles protoc) from a private
# virtual environment, so nothing but python3 and PyPI is needed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
GRPCIO_TOOLS_VERSION=1.85.1

venv="$here/.venv-gen"
if ! "$venv/bin/python" -c "import grpc_tools, importlib.metadata as m; assert m.version('grpcio-tools') == '$GRPCIO_TOOLS_VERSION'" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "grpcio-tools==$GRPCIO_TOOLS_VERSION"
fi

out="$here/src"
rm -f "$out"/contextd/v1/*_pb2.py "$out"/contextd/v1/*_pb2.pyi "$out"/contextd/v1/*_pb2_grpc.py
# Proto paths are given relative to proto/, so the modules import each other as
# `contextd.v1.<name>_pb2`: they live in the `contextd.v1` subpackage of this package. The
# vendored google/api imports are not generated: `googleapis-common-protos` provides them.
(cd "$root/proto" && "$venv/bin/python" -m grpc_tools.protoc -I . -I third_party \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  contextd/v1/*.proto)
