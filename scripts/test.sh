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
# The generated protobuf code is committed too; it must be what the protos generate.
scripts/proto.sh
if ! git diff --quiet -- '*.pb.go' || [ -n "$(git ls-files --others --exclude-standard -- '*.pb.go')" ]; then
  echo "generated protobuf files are stale: run 'make proto' and commit"; git status --short -- '*.pb.go'; exit 1
fi

# The resource budget follows the machine: as many test binaries at once as there are
# cores (TEST_PARALLEL overrides), and inside them the labs -- about ten -race processes
# each -- take slots of a machine-wide budget of one per core (MICROLAB_TEST_LABS
# overrides; see services/platform/testenv/budget.go), a lab under load all of them.
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)
parallel=${TEST_PARALLEL:-$cores}
report_dir=${TEST_REPORT_DIR:-artifacts/test}
mkdir -p "$report_dir"
json=$report_dir/go-test.json
echo "== tests (-race, $parallel packages at a time on $cores cores; events in $json)"
start=$(date +%s)
rc=0
go tool gotestsum --format pkgname-and-test-fails --format-hide-empty-pkg --jsonfile "$json" -- \
  -race -count=1 -p "$parallel" -timeout "${TEST_TIMEOUT:-30m}" "$@" ./... || rc=$?

# Fuzzing: each fuzz target (a `func FuzzX` in a _test.go file) explores beyond its
# seed corpus for FUZZ_TIME executions (default 10000x; a duration such as 30s
# also works; 0 skips the stage). The budget is a count, not a duration, because
# Go 1.26's fuzz coordinator can report a spurious "context deadline exceeded" at
# the end of a -fuzztime duration on a loaded machine (go.dev/issue/75804, fixed
# in Go 1.27); a count has no deadline to race. The seeds in testdata/fuzz/
# already ran above as ordinary tests; an input that fails here is written there
# by go test, to be committed with its fix.
fuzz_time=${FUZZ_TIME:-10000x}
if [ "$fuzz_time" != 0 ] && [ "$fuzz_time" != 0s ] && [ "$fuzz_time" != 0x ]; then
  echo "== fuzzing ($fuzz_time per target)"
  while IFS=: read -r file target; do
    pkg=./$(dirname "$file")
    printf '%-48s ' "$pkg $target"
    out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzz_time" -fuzzminimizetime 5s "$pkg" 2>&1) && echo ok || {
      echo FAILED; echo "$out" | tail -30; rc=1
    }
  done < <(git grep -o -E '^func Fuzz[A-Za-z0-9_]+' -- '*_test.go' | sed 's/:func /:/')
fi

# The record of every run: each package's wall time and the slowest tests, so that
# growth shows in every run's output.
echo "== package wall times (s)"
awk '
  /"Action":"(pass|fail|skip)"/ && !/"Test":/ {
    pkg = $0; sub(/.*"Package":"/, "", pkg); sub(/".*/, "", pkg)
    el = $0; sub(/.*"Elapsed":/, "", el); sub(/[,}].*/, "", el)
    act = $0; sub(/.*"Action":"/, "", act); sub(/".*/, "", act)
    printf "%9.1f  %-4s %s\n", el, act, pkg
  }' "$json" | sort -rn || true
echo "== ten slowest tests"
go tool gotestsum tool slowest --jsonfile "$json" --threshold 1ms | sed -n 1,10p || true
echo "== suite wall time: $(($(date +%s) - start))s (exit $rc)"
exit $rc
