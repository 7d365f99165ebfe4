#!/bin/sh
# Installs the Node `ws` peer's dependencies into build/bench-node/ (ignored by
# git, under /build/). Idempotent: does nothing when the pinned versions are
# already there. Pinned so every run compares against the same library.
#   ws         the WebSocket server library (the peer under test)
#   bufferutil ws's optional native mask/unmask helper, which ws's README
#              recommends for production; it ships prebuilt binaries, so this
#              is what a tuned Node deployment runs (utf-8-validate is not
#              needed: ws uses Node's built-in buffer.isUtf8 on Node >= 18.14).
set -eu
WS_VERSION=8.23.0
BUFFERUTIL_VERSION=4.1.0
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR="$ROOT/build/bench-node"

command -v node >/dev/null 2>&1 || { echo "setup_node.sh: node not found (apt-get install nodejs npm)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "setup_node.sh: npm not found (apt-get install npm)" >&2; exit 1; }

have_version() { # $1 package, $2 version
    [ -f "$DIR/node_modules/$1/package.json" ] || return 1
    v=$(node -e 'console.log(require(process.argv[1]).version)' "$DIR/node_modules/$1/package.json" 2>/dev/null) || return 1
    [ "$v" = "$2" ]
}

if have_version ws "$WS_VERSION" && have_version bufferutil "$BUFFERUTIL_VERSION" \
   && (cd "$DIR" && node -e 'require("bufferutil")') >/dev/null 2>&1; then
    echo "setup_node.sh: ws@$WS_VERSION and bufferutil@$BUFFERUTIL_VERSION already in $DIR"
    exit 0
fi

mkdir -p "$DIR"
[ -f "$DIR/package.json" ] || printf '{\n  "name": "gohub-bench-node",\n  "private": true\n}\n' > "$DIR/package.json"
(cd "$DIR" && npm install --no-audit --no-fund --loglevel=error --save-exact \
    "ws@$WS_VERSION" "bufferutil@$BUFFERUTIL_VERSION")
have_version ws "$WS_VERSION" || { echo "setup_node.sh: ws@$WS_VERSION did not install" >&2; exit 1; }
echo "setup_node.sh: installed ws@$WS_VERSION and bufferutil@$BUFFERUTIL_VERSION in $DIR"
