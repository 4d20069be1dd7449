#!/usr/bin/env bash
# Builds every image docker-compose.yml runs, on this host, without any registry:
#   1. minipaas-base:bookworm   Debian 12 from `debootstrap --variant=minbase` + `docker import`
#                               (skipped when the image exists; FORCE_BASE=1 makes it again)
#   2. .wheelhouse/             wheels of the pinned Python dependencies (constraints.txt),
#                               downloaded on the host (pip inside a build cannot verify TLS
#                               here); downloaded again only when constraints.txt or
#                               pyproject.toml change. The minipaas wheel is built every time.
#   3. minipaas:local (deploy/Dockerfile), minipaas-postgres:15, minipaas-redis:7
#                               `docker build` from the base: cached layers make a rerun fast,
#                               and a changed source or Dockerfile is always rebuilt.
# Usage (as root, from anywhere): scripts/compose-images.sh [--base-only]
set -euo pipefail
cd "$(dirname "$0")/.."
# One build at a time on this host (two test sessions may ask at once): the second waits,
# then finds the images made
exec 9>/var/lock/minipaas-compose-images.lock
flock 9

BASE_IMAGE=${BASE_IMAGE:-minipaas-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WHEELHOUSE=.wheelhouse
# The platform image's interpreter: Debian 12's python3 (3.11) on x86_64, glibc 2.36
PY_VERSION=3.11
PY_GLIBC_MINOR=36
# pip evaluates dependency markers for the host's Python, not the image's: redis needs
# async-timeout below Python 3.11.3, and Debian 12's python3 is 3.11.2 (`pip check` in the
# image build names any other such gap)
IMAGE_ONLY_REQUIREMENTS=("async-timeout==5.0.1")

say() { printf '[compose-images] %s\n' "$*" >&2; }

build_base() {
  if [[ -z "${FORCE_BASE:-}" ]] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "$BASE_IMAGE exists"
    return
  fi
  command -v debootstrap >/dev/null || { say "debootstrap is missing: apt-get install debootstrap"; exit 1; }
  local root
  root=$(mktemp -d /var/tmp/minipaas-debootstrap.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$root'" RETURN
  say "debootstrap --variant=minbase bookworm (about 30 s) ..."
  debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
  rm -f "$root.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # Images install what they need without recommends, and never start services while building
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$root/etc/apt/apt.conf.d/90minipaas"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "$BASE_IMAGE" >/dev/null
  say "imported $BASE_IMAGE"
}

pip_host() {
  if [[ -x .venv/bin/python ]]; then .venv/bin/python -m pip "$@"; else python3 -m pip "$@"; fi
}

build_wheelhouse() {
  mkdir -p "$WHEELHOUSE"
  local app_dir=$WHEELHOUSE/app stamp=$WHEELHOUSE/deps.sha256 wanted
  rm -rf "$app_dir"
  # From a clean copy of the source: an in-tree build would reuse build/lib, where modules
  # deleted since the last build live on. A fixed timestamp: the same source gives the same
  # wheel, so Docker's layer cache holds.
  local src
  src=$(mktemp -d)
  tar -c --exclude=__pycache__ --exclude='*.egg-info' pyproject.toml src | tar -x -C "$src"
  SOURCE_DATE_EPOCH=315532800 pip_host wheel -q --no-deps --wheel-dir "$app_dir" "$src" >&2
  rm -rf "$src"
  wanted=$({
    cat constraints.txt pyproject.toml
    echo "$PY_VERSION $PY_GLIBC_MINOR ${IMAGE_ONLY_REQUIREMENTS[*]}"
  } | sha256sum | cut -d' ' -f1)
  if compgen -G "$WHEELHOUSE/deps/*.whl" >/dev/null && [[ "$(cat "$stamp" 2>/dev/null)" == "$wanted" ]]; then
    say "wheelhouse up to date"
    return
  fi
  say "downloading the pinned dependencies' wheels ..."
  local tmp
  rm -rf "$WHEELHOUSE"/deps.*/  # what an interrupted download left
  tmp=$(mktemp -d "$WHEELHOUSE/deps.XXXXXX")
  # Binary wheels for the image's Python, whatever the host's own Python is. Every glibc
  # level up to the image's is named: older pips do not widen a --platform by themselves.
  local platforms=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64
    --platform manylinux1_x86_64) minor
  for minor in $(seq "$PY_GLIBC_MINOR" -1 5); do
    platforms+=(--platform "manylinux_2_${minor}_x86_64")
  done
  pip_host download -q --dest "$tmp" --constraint constraints.txt --only-binary=:all: \
    --python-version "$PY_VERSION" --implementation cp --abi "cp${PY_VERSION/./}" \
    --abi abi3 --abi none "${platforms[@]}" "$app_dir"/minipaas-*.whl \
    "${IMAGE_ONLY_REQUIREMENTS[@]}" >&2
  rm -f "$tmp"/minipaas-*.whl
  rm -rf "$WHEELHOUSE/deps"
  mv "$tmp" "$WHEELHOUSE/deps"
  echo "$wanted" >"$stamp"
  say "wheelhouse: $(ls "$WHEELHOUSE/deps" | wc -l) wheels"
}

build_image() {
  local tag=$1 dockerfile=$2
  say "docker build $tag ($dockerfile) ..."
  local log
  log=$(mktemp)
  docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" -f "$dockerfile" -t "$tag" . >"$log" 2>&1 \
    || { tail -40 "$log" >&2; rm -f "$log"; exit 1; }
  rm -f "$log"
}

# Two runs at once (two test sessions) would rebuild the wheelhouse under each other's build
mkdir -p "$WHEELHOUSE"
exec 9>"$WHEELHOUSE/.lock"
flock 9

build_base
# --base-only: the Debian base alone (the build-from-source tests build on it)
if [[ "${1:-}" == "--base-only" ]]; then
  exit 0
fi
build_wheelhouse
build_image minipaas-postgres:15 deploy/compose/postgres.Dockerfile
build_image minipaas-redis:7 deploy/compose/redis.Dockerfile
build_image minipaas:local deploy/Dockerfile
say "done"
