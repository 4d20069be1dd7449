#!/usr/bin/env bash
# Installs what mini-paas needs on Debian/Ubuntu (as root) and the Python package in .venv.
# Idempotent: only missing packages are installed. Usage: scripts/install-deps.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."

# busybox-static: the demo image and the tests' images are built from it
# libnginx-mod-http-lua + lua-cjson: the router keeps its routes in nginx's memory (Lua)
# supervisor: restarts every platform process that dies
# docker-registry + apache2-utils (htpasswd): the embedded image registry of RUNTIME=swarm
packages=(docker.io nginx libnginx-mod-http-lua lua-cjson redis-server postgresql python3-venv
  ca-certificates busybox-static supervisor docker-registry apache2-utils)
if [[ "${1:-}" == "--dev" ]]; then
  # tests check the compose file and listening sockets and drive the dashboard in Chromium;
  # make bench drives wrk; debootstrap makes the compose install's Debian base image;
  # pebble (with pebble-challtestsrv) is the ACME CA the HTTPS tests get certificates from
  packages+=(docker-compose wrk iproute2 chromium debootstrap pebble)
fi

python=${PYTHON:-python3}
check_python() {
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "mini-paas needs Python 3.11 or later (Debian 12, Ubuntu 24.04 or later have it);" \
      "$python is $(command -v "$python" >/dev/null && "$python" -V 2>&1 || echo "not found"): install python3.11 or later and" \
      "run again with PYTHON=python3.11 (or newer)" >&2
    exit 1
  fi
}
# Before any package is installed, when there is a Python to ask (python3-venv brings one)
if command -v "$python" >/dev/null; then
  check_python
fi

# A Docker engine or Compose installed another way (Docker's own docker-ce packages, a static
# binary) is used as it is: Debian's docker.io would conflict with docker-ce and containerd.io
if command -v dockerd >/dev/null; then
  packages=("${packages[@]/docker.io}")
fi
if command -v docker-compose >/dev/null; then
  packages=("${packages[@]/docker-compose}")
fi

missing=()
for package in "${packages[@]}"; do
  [[ -n "$package" ]] || continue
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
# A machine may carry PostgreSQL's server binaries without the Debian meta-package
if [[ " ${missing[*]} " == *" postgresql "* ]] && compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing=("${missing[@]/postgresql}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))

if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "missing packages: ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  # A Docker engine installed now keeps containers on its default bridge apart ("icc": false):
  # apps then run on that bridge, which starts them ~45 ms sooner than a network of our own
  # (APPS_BRIDGE). An engine configured before is left as its owner set it up.
  daemon_json=${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}  # another path in tests only
  if [[ " ${missing[*]} " == *" docker.io "* && ! -e "$daemon_json" ]]; then
    mkdir -p "$(dirname "$daemon_json")"
    echo '{"icc": false}' >"$daemon_json"
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # mini-paas runs its own nginx, Redis and PostgreSQL under DATA_DIR: keep the distribution's
  # services (which the packages may have just started) off the ports we use
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    for service in nginx redis-server postgresql supervisor docker-registry; do
      if [[ " ${missing[*]} " == *" ${service} "* ]]; then
        systemctl disable --now "$service" >/dev/null 2>&1 || true
      fi
    done
  fi
fi

check_python
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"
# constraints.txt pins every Python package to the versions that were tested
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".${extras}"
