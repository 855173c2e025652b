#!/usr/bin/env bash
# Regenerates the Go code of contextd's API (gen/contextd/v1) from proto/ with buf and the
# pinned protoc-gen-go / protoc-gen-go-grpc plugins. Idempotent: the output depends only on
# proto/ and the pinned versions.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
BUF_VERSION=1.75.0

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# The plugins go into clients/go/.bin (ignored by git), so the versions used are the pinned
# ones whatever else is on PATH.
export GOBIN="$here/.bin"
go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"

cd "$repo"
rm -rf clients/go/gen
PATH="$GOBIN:$PATH" npx --yes "@bufbuild/buf@$BUF_VERSION" generate --template clients/go/buf.gen.yaml
