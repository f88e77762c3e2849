#!/usr/bin/env bash
# Regenerates the Go code of the protos in services/contracts (catalogpb/*.pb.go) with
# buf and the protoc-gen-go / protoc-gen-go-grpc plugins, all Go programs pinned in
# tools/proto/go.mod (a module of its own: buf's dependency graph stays out of the
# services'). No protoc binary is needed. The generated files are committed;
# scripts/test.sh runs this and fails if they change.
set -euo pipefail
cd "$(dirname "$0")/../services/contracts"
go tool -modfile=../../tools/proto/go.mod buf generate
