#!/bin/sh
# The compose lab's secrets, made on its first start by the one-shot `secrets`
# container (compose/docker-compose.yml) into the named volume `secrets`, which every
# container that needs one mounts read-only at /run/microlab/secrets. Nothing secret is
# in the repository: each lab gets its own random passwords and JWT seed. A secret is
# made once and kept (PostgreSQL's roles are created with these passwords on the first
# start only); `docker compose down -v` removes the volume with the databases, and the
# next `up` starts over with new ones.
#
# Services read the URLs below through the X_FILE convention of
# services/platform/config (DATABASE_URL_FILE=/run/microlab/secrets/orders_database_url).
# The environment overrides exist for the parity test (compose/parity_test.go), which
# runs this same script natively with the host names mapped to this machine's ports.
set -eu

dir=${SECRETS_DIR:-/run/microlab/secrets}
pg=${PG_ADDR:-postgres:5432}
amqp=${AMQP_ADDR:-rabbitmq:5672}
mgmt=${RABBITMQ_MANAGEMENT_ADDR:-rabbitmq:15672}
vhost=${AMQP_VHOST:-%2F}
amqp_user=${AMQP_USER:-microlab}
prefix=${DB_PREFIX:-}
# One database and role per service that owns one, and the lab's control database
# (lab/stack Config.Databases: compose's tests check this list against it).
databases="users catalog orders payments inventory shipping notifications monolith lab"

umask 077
mkdir -p "$dir"

# random N: N random bytes as 2N hexadecimal characters (URL-safe, quote-safe).
random() { head -c "$1" /dev/urandom | od -An -v -tx1 | tr -d ' \n'; }

# secret NAME BYTES: made once, never overwritten.
secret() {
  if [ ! -s "$dir/$1" ]; then
    random "$2" > "$dir/$1.new"
    mv "$dir/$1.new" "$dir/$1"
    echo "secrets: made $1"
  fi
}

secret jwt_seed 32            # users' Ed25519 signing seed (64 hex characters)
secret monolith_jwt_seed 32   # the monolith's own signing seed: a second issuer, as natively
secret postgres_password 24   # PostgreSQL's superuser (POSTGRES_PASSWORD_FILE)
secret rabbitmq_password 24   # RabbitMQ's user $amqp_user
secret grafana_password 24    # Grafana's admin (GF_SECURITY_ADMIN_PASSWORD__FILE); learners browse anonymously
for db in $databases; do
  secret "${db}_password" 24
done

# state/ is where `lab topology` (the compose lab's db.topology switch, run as the
# images' unprivileged user) leaves which topology the services' data is in.
mkdir -p "$dir/state"
chown 65532:65532 "$dir/state" 2>/dev/null || true
topology=per-service
if [ -s "$dir/state/topology" ]; then topology=$(cat "$dir/state/topology"); fi

# The URLs are written at every start: they hold no secret of their own, and a changed
# address or topology takes effect. In the shared topology a service's tables are in
# its own schema of database shop (search_path), as lab/stack ServiceDatabaseURL has it.
printf 'postgres://postgres:%s@%s/postgres?sslmode=disable\n' "$(cat "$dir/postgres_password")" "$pg" > "$dir/admin_database_url"
for db in $databases; do
  if [ "$topology" = shared ] && [ "$db" != lab ]; then
    printf 'postgres://%s:%s@%s/%sshop?search_path=%s&sslmode=disable\n' \
      "$prefix$db" "$(cat "$dir/${db}_password")" "$pg" "$prefix" "$db" > "$dir/${db}_database_url"
  else
    printf 'postgres://%s:%s@%s/%s?sslmode=disable\n' \
      "$prefix$db" "$(cat "$dir/${db}_password")" "$pg" "$prefix$db" > "$dir/${db}_database_url"
  fi
done
echo "secrets: the services' data is on topology $topology"
printf 'amqp://%s:%s@%s/%s\n' "$amqp_user" "$(cat "$dir/rabbitmq_password")" "$amqp" "$vhost" > "$dir/amqp_url"
printf 'http://%s:%s@%s\n' "$amqp_user" "$(cat "$dir/rabbitmq_password")" "$mgmt" > "$dir/rabbitmq_management_url"

# Readable by every container's user (the services run as 65532, PostgreSQL and
# RabbitMQ as 999, Grafana as 472); the volume is mounted only where a secret is needed.
chmod 0755 "$dir"
find "$dir" -maxdepth 1 -type f -exec chmod 0444 {} +
echo "secrets: ready in $dir"
