#!/bin/sh
# Creates the cluster on the first start (user POSTGRES_USER with POSTGRES_PASSWORD, database
# POSTGRES_DB), then runs PostgreSQL on the unix socket in /run/postgresql only.
# Refuses to start without a real password: a known one would let any local user who reaches
# the socket edit the platform's database (which holds the tokens of root-equivalent users).
set -eu

refuse() { echo "postgres-entrypoint: $*" >&2; exit 64; }
password=${POSTGRES_PASSWORD:-}
[ "${#password}" -ge 16 ] \
  || refuse "POSTGRES_PASSWORD is unset or shorter than 16 characters; scripts/compose-env.sh writes a .env with random secrets"
user=${POSTGRES_USER:-minipaas}
database=${POSTGRES_DB:-minipaas}
for name in "$user" "$database"; do
  case $name in
    '' | *[!A-Za-z0-9_]*) refuse "POSTGRES_USER and POSTGRES_DB must be letters, digits or '_'" ;;
  esac
done

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$password" >"$pwfile"
  initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 --no-instructions >/dev/null
  rm -f "$pwfile"
  if [ "$database" != postgres ]; then
    # Single-user mode: no server answers on the socket before the database exists
    echo "CREATE DATABASE \"$database\" OWNER \"$user\";" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "postgres-entrypoint: created the cluster (user $user, database $database)"
fi

# Only this container serves on the socket volume: a lock file left by a killed server of an
# earlier container (another PID namespace) is stale
rm -f /run/postgresql/.s.PGSQL.*
exec postgres -D "$PGDATA" -c listen_addresses='' -c unix_socket_directories=/run/postgresql -c max_connections=400
