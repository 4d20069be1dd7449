#!/usr/bin/env bash
# Starts dockerd when no Docker engine answers (machines without systemd start nothing).
set -euo pipefail
docker info >/dev/null 2>&1 && exit 0
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl start docker || true
fi
if ! docker info >/dev/null 2>&1; then
  mkdir -p /var/log
  # Containers on the default bridge kept apart (as install-deps.sh configures a new engine):
  # apps run on it (APPS_BRIDGE=auto); daemon.json, when there is one, decides instead
  icc=(--icc=false)
  if [[ -e /etc/docker/daemon.json ]] && grep -q '"icc"' /etc/docker/daemon.json; then
    icc=()
  fi
  nohup dockerd "${icc[@]}" >/var/log/dockerd.log 2>&1 &
fi
for _ in $(seq 1 120); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "the Docker engine did not start; see /var/log/dockerd.log" >&2
exit 1
