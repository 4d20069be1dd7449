#!/bin/sh
# Runs Redis with REDIS_PASSWORD required (a client without it gets NOAUTH) and an append-only
# file in /var/lib/redis, so queued jobs survive a restart. Refuses to start without a real
# password: the worker holds the Docker socket and runs the jobs it finds in this Redis.
set -eu

refuse() { echo "redis-entrypoint: $*" >&2; exit 64; }
password=${REDIS_PASSWORD:-}
[ "${#password}" -ge 16 ] \
  || refuse "REDIS_PASSWORD is unset or shorter than 16 characters; scripts/compose-env.sh writes a .env with random secrets"
case $password in
  *[!A-Za-z0-9._~+/=-]*) refuse "REDIS_PASSWORD may hold letters, digits and ._~+/=- only" ;;
esac

# The password goes in a file only this user reads, never on the command line (`ps` on the
# host shows a container's arguments to every local user)
config=$(mktemp)
cat >"$config" <<CONF
bind 0.0.0.0
port 6379
protected-mode yes
requirepass "$password"
dir /var/lib/redis
appendonly yes
CONF
exec redis-server "$config"
