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
# The generated templ files are committed; they must be what the .templ files generate.
go tool templ generate >/dev/null 2>&1
if ! git diff --quiet -- '*_templ.go' || [ -n "$(git ls-files --others --exclude-standard -- '*_templ.go')" ]; then
  echo "generated templ files are stale: run 'go tool templ generate' and commit"; git status --short -- '*_templ.go'; exit 1
fi

echo "== tests"
go test -race -count=1 -p "${TEST_PARALLEL:-4}" -timeout "${TEST_TIMEOUT:-30m}" "$@" ./...
