#!/bin/sh
# Creates the compose lab's databases, run by the postgres image's entrypoint from
# /docker-entrypoint-initdb.d -- which happens ONLY when the data volume is empty (the
# first `up`). To start over: `docker compose -f compose/docker-compose.yml down -v`.
#
# One database and role per service that owns one, and `lab` (the control plane's,
# owned by the dashboard): each role logs in with its password from the secrets volume
# (compose/secrets/generate.sh) and no role can connect to another's database. Then the
# shared topology's database `shop`: a schema per service owned by its role, and orders'
# read access to catalog's and inventory's tables -- the coupling exercise 06 shows.
# The same as `lab up` provisions natively (lab/stack Provision, lab/topology
# ProvisionShared); the parity test (compose/parity_test.go) runs this script natively.
set -eu

dir=${SECRETS_DIR:-/run/microlab/secrets}
prefix=${DB_PREFIX:-}
databases="users catalog orders payments inventory shipping notifications monolith lab"
services="users catalog orders payments inventory shipping notifications monolith"
shared=${prefix}shop

sql() { psql -v ON_ERROR_STOP=1 --no-psqlrc -q -X --username "${POSTGRES_USER:-postgres}" "$@"; }

for db in $databases; do
  role=$prefix$db
  password=$(cat "$dir/${db}_password")
  sql --dbname "${POSTGRES_DB:-postgres}" <<SQL
CREATE ROLE "$role" LOGIN PASSWORD '$password';
CREATE DATABASE "$role" OWNER "$role";
REVOKE CONNECT, TEMPORARY ON DATABASE "$role" FROM PUBLIC;
SQL
  echo "init: database and role $role"
done

sql --dbname "${POSTGRES_DB:-postgres}" <<SQL
CREATE DATABASE "$shared";
REVOKE CONNECT, TEMPORARY ON DATABASE "$shared" FROM PUBLIC;
SQL
for s in $services; do
  sql --dbname "${POSTGRES_DB:-postgres}" -c "GRANT CONNECT ON DATABASE \"$shared\" TO \"$prefix$s\""
  sql --dbname "$shared" -c "CREATE SCHEMA \"$s\" AUTHORIZATION \"$prefix$s\""
done
for schema in catalog inventory; do
  sql --dbname "$shared" <<SQL
GRANT USAGE ON SCHEMA "$schema" TO "${prefix}orders";
ALTER DEFAULT PRIVILEGES FOR ROLE "$prefix$schema" IN SCHEMA "$schema" GRANT SELECT ON TABLES TO "${prefix}orders";
SQL
done
echo "init: shared database $shared"
