#!/usr/bin/env bash
# Makes sure what the tests and the lab need is installed and running on this machine:
# PostgreSQL and RabbitMQ (with its management and Prometheus plugins), Prometheus and
# promtool, Chromium, the Jaeger binary (built from tools/) and Redocly's CLI (the OpenAPI
# document's linter, from npm). Idempotent: fast when everything is already there. Prints
# one line per dependency.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '%-22s %s\n' "$1" "$2"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds
  for _ in $(seq 1 $(($2 * 4))); do port_open "$1" && return 0; sleep 0.25; done
  return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# PostgreSQL
if port_open 5432; then
  say postgresql "ok (127.0.0.1:5432)"
elif command -v pg_ctlcluster >/dev/null; then
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_port 5432 30 && say postgresql "started" || { say postgresql "FAILED to start"; exit 1; }
else
  say postgresql "missing: apt-get install postgresql"; exit 1
fi
# Room for the parallel tests: every e2e lab runs eight processes with their own pools
# (about 45 connections a lab), and Debian's default of 100 ran out under `-p 4`.
want_conns=300
conns=$(psql -h 127.0.0.1 -U postgres -Atc 'show max_connections' 2>/dev/null || echo 0)
if [ "$conns" -lt "$want_conns" ] && command -v pg_ctlcluster >/dev/null; then
  psql -h 127.0.0.1 -U postgres -qc "ALTER SYSTEM SET max_connections = $want_conns" >/dev/null
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main restart
  wait_port 5432 30 || { say postgresql "FAILED to restart"; exit 1; }
  say postgresql "max_connections $conns → $want_conns (restarted)"
fi

# RabbitMQ
if port_open 5672; then
  say rabbitmq "ok (127.0.0.1:5672)"
elif command -v rabbitmq-server >/dev/null; then
  as_root rabbitmq-server -detached
  wait_port 5672 60 && say rabbitmq "started" || { say rabbitmq "FAILED to start"; exit 1; }
else
  say rabbitmq "missing: apt-get install rabbitmq-server"; exit 1
fi

# Management API (tests create a vhost each through it) and the Prometheus endpoint.
if port_open 15672 && port_open 15692; then
  say rabbitmq-plugins "ok (management :15672, prometheus :15692)"
else
  as_root rabbitmq-plugins enable rabbitmq_management rabbitmq_prometheus >/dev/null
  wait_port 15672 60 && wait_port 15692 30 && say rabbitmq-plugins "enabled" || { say rabbitmq-plugins "FAILED"; exit 1; }
fi

# apt_install package...: apt-get update (once per run), then install without starting
# services: Debian's prometheus package would start its own Prometheus on :9090, where
# the lab starts one of its own. policy-rc.d (exit 101) is how Debian says "start no
# service now"; ours is removed again unless one was already there (containers have one).
apt_updated=
apt_install() {
  command -v apt-get >/dev/null || { echo "no apt-get: install $* by hand" >&2; return 1; }
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq >/dev/null
    apt_updated=1
  fi
  local policy=/usr/sbin/policy-rc.d ours= rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    ours=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
  if [ -n "$ours" ]; then as_root rm -f "$policy"; fi
  return $rc
}

# Prometheus and promtool (the rules' unit tests). The lab runs Prometheus itself, on
# its own ports: Debian's service must neither run now nor start at boot.
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  say prometheus "ok ($(prometheus --version 2>&1 | head -1 | cut -d' ' -f3))"
else
  apt_install prometheus
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  else
    as_root service prometheus stop >/dev/null 2>&1 || true
  fi
  if port_open 9090; then
    say prometheus "installed, but something listens on 127.0.0.1:9090 (Debian's service? systemctl disable --now prometheus)"
    exit 1
  fi
  say prometheus "installed ($(command -v prometheus), its service not running)"
fi

# Chromium, for the browser tests.
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
  say chromium "ok"
else
  apt_install chromium fonts-liberation
  say chromium "installed ($(command -v chromium))"
fi

# Jaeger: built from tools/ (its own Go module) into the lab's bin directory, unless the
# binary there was built from exactly the module versions tools/go.mod requires (what
# `lab up` checks too, from the build information Go embeds in the binary).
bin_dir=${LAB_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/microlab/bin}
jaeger=$bin_dir/jaeger
jaeger_current() {
  [ -x "$jaeger" ] || return 1
  go version -m "$jaeger" 2>/dev/null | awk '
    NR == FNR {
      if ($1 == "require" && $3 ~ /^v/) want[$2] = $3
      else if ($1 ~ /\./ && $2 ~ /^v/) want[$1] = $2
      next
    }
    ($1 == "mod" || $1 == "dep") && ($2 in want) {
      if (want[$2] != $3) bad = 1
      if ($2 == "github.com/jaegertracing/jaeger") found = 1
    }
    END { exit (found && !bad) ? 0 : 1 }' tools/go.mod -
}
if ! command -v go >/dev/null; then
  say jaeger "not built: no Go on PATH"; exit 1
elif jaeger_current; then
  say jaeger "ok ($jaeger)"
else
  say jaeger "building Jaeger into $bin_dir (first build takes about 4 minutes)…"
  start=$(date +%s)
  go build -C tools -o "$jaeger" github.com/jaegertracing/jaeger/cmd/jaeger
  say jaeger "built in $(($(date +%s) - start))s ($jaeger)"
fi

# Redocly's CLI, which lints the gateway's OpenAPI document (services/gateway/openapi_test.go)
# against its `recommended` rules: pinned, in its own npm prefix under the lab's cache, so
# nothing global changes and the test finds it at a known path.
redocly_version=2.77.0
node_dir=${XDG_CACHE_HOME:-$HOME/.cache}/microlab/node
redocly_current() {
  grep -q "\"version\": \"$redocly_version\"" "$node_dir/node_modules/@redocly/cli/package.json" 2>/dev/null &&
    [ -x "$node_dir/node_modules/.bin/redocly" ]
}
if redocly_current; then
  say redocly "ok ($redocly_version, $node_dir)"
else
  command -v npm >/dev/null || apt_install nodejs npm
  # Its engines: Node.js 20.19+ (20.x) or 22.12+; Debian 12's own nodejs is 18.
  if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number);
      process.exit((a === 20 && b >= 19) || (a === 22 && b >= 12) || a > 22 ? 0 : 1)'; then
    say redocly "needs Node.js 20.19+ or 22.12+ (found $(node --version)): install one from nodejs.org"; exit 1
  fi
  npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error "@redocly/cli@$redocly_version" >/dev/null
  redocly_current && say redocly "installed ($redocly_version, $node_dir)" || { say redocly "FAILED"; exit 1; }
fi
