#!/bin/sh
# Runs the JavaScript client's tests: builds the broker if needed (unless
# CORECAST_WS_URL points at a broker with a WebSocket listener, or
# CORECAST_BIN at a broker binary), then the Node.js test runner.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
js=$(dirname "$here")
root=$(cd "$js/../.." && pwd)
if [ -z "${CORECAST_WS_URL:-}" ] && [ -z "${CORECAST_BIN:-}" ]; then
    target=${CARGO_TARGET_DIR:-$root/target}
    if [ ! -x "$target/debug/corecast" ] || [ -n "${CORECAST_REBUILD:-}" ]; then
        (cd "$root" && CARGO_TARGET_DIR="$target" nice -n 10 cargo build -p corecast)
    fi
fi
cd "$js"
exec node --experimental-websocket --no-warnings --test test/*.test.mjs "$@"
