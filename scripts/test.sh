#!/usr/bin/env bash
# The test command (README, `make test`, CI): starts what the tests need, checks the
# tree's hygiene, then runs every test against real RabbitMQ and PostgreSQL, with -race.
# Packages run in parallel; each test isolates itself (own vhost, databases, ports).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

echo "== hygiene"
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '_templ.go$') 2>/dev/null || true)
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi
go vet ./...

echo "== tests"
go test -race -count=1 -p "${TEST_PARALLEL:-4}" -timeout "${TEST_TIMEOUT:-30m}" "$@" ./...
