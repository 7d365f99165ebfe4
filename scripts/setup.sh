#!/bin/sh
# Installs every Debian 12 package that gohub's build, daemon and tests need.
# Idempotent and non-interactive; run as root (make run / make test call it
# when a dependency is missing).
set -eu

PKGS="build-essential pkg-config
libuv1-dev libwslay-dev node-llhttp libcjson-dev libhiredis-dev libnats-dev
libjwt-dev libssl-dev libluajit-5.1-dev luajit libyaml-dev
lua-busted
redis-server nats-server prometheus
python3 python3-websockets python3-pytest python3-yaml openssl
procps curl ca-certificates valgrind"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing="$missing $p"
done

if [ -z "$missing" ]; then
  echo "setup: all packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing packages:$missing" >&2
  echo "setup: run as root: sh scripts/setup.sh" >&2
  exit 1
fi

echo "setup: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
echo "setup: done"
