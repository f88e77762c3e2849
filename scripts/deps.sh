#!/usr/bin/env bash
# Makes sure what the tests and the lab need is installed and running on this machine:
# PostgreSQL and RabbitMQ (with its management and Prometheus plugins). Idempotent: fast
# when everything is already up. Prints one line per dependency.
set -euo pipefail

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
