# Thin aliases; the real work is in scripts/ and the lab CLI.
.PHONY: test up deps jaeger bench proto

test:
	scripts/test.sh

up:
	go run ./lab up

# The performance report: docs/benchmarks.md and .json (about 35 minutes; lab bench --quick for a try).
bench:
	go run ./lab bench

deps:
	scripts/deps.sh

# Build Jaeger (tools/ pins it) into the lab's bin directory; deps and lab up do it too.
jaeger:
	go build -C tools -o "$${LAB_BIN_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/microlab/bin}/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger

# Regenerate the Go code of the protos in services/contracts (buf and the protoc-gen-go
# plugins are Go tools pinned in tools/proto: no protoc to install).
proto:
	scripts/proto.sh
