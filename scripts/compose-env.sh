#!/usr/bin/env bash
# Writes the .env docker-compose.yml reads, with random secrets, as `make up` generates its own:
# docker-compose refuses to start without POSTGRES_PASSWORD and REDIS_PASSWORD, and the
# PostgreSQL and Redis images refuse passwords shorter than 16 characters.
#
#   scripts/compose-env.sh [--file PATH] [NAME=value ...]
#
# A new file starts from .env.example (mode 0600). In an existing one nothing is changed but
# the NAME=value given: a missing or empty secret is added, a weak one is refused (changing
# it would lock the platform out of an existing database).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

file=$root/.env
if [[ "${1:-}" == "--file" ]]; then
  file=${2:?usage: scripts/compose-env.sh [--file PATH] [NAME=value ...]}
  shift 2
fi

random_secret() { head -c 32 /dev/urandom | base64 | tr -d '=\n' | tr '+/' '-_'; }

# NAME=value in place of the file's NAME line (or appended); values are taken literally
set_value() {
  local name=$1 value=$2 tmp
  tmp=$(mktemp "$file.XXXXXX")
  # Through the environment: awk -v would interpret backslashes in the value
  NAME=$name LINE="$name=$value" awk '
    index($0, ENVIRON["NAME"] "=") == 1 { if (!done) print ENVIRON["LINE"]; done = 1; next }
    { print }
    END { if (!done) print ENVIRON["LINE"] }
  ' "$file" >"$tmp"
  chmod 0600 "$tmp"
  mv "$tmp" "$file"
}

current_value() { sed -n "s/^$1=//p" "$file" | tail -n 1; }

umask 077
if [[ ! -e $file ]]; then
  cp "$root/.env.example" "$file"
  chmod 0600 "$file"
  echo "wrote $file from .env.example" >&2
fi

for pair in "$@"; do
  [[ $pair == *=* ]] || { echo "not NAME=value: $pair" >&2; exit 2; }
  set_value "${pair%%=*}" "${pair#*=}"
done

for name in POSTGRES_PASSWORD REDIS_PASSWORD; do
  value=$(current_value "$name")
  if [[ -z $value ]]; then
    set_value "$name" "$(random_secret)"
    echo "generated $name in $file" >&2
  elif ((${#value} < 16)); then
    echo "$file: $name is shorter than 16 characters; the compose images refuse it." >&2
    echo "Set a long random one (on a new install: remove the line and run this again)." >&2
    exit 1
  fi
done
