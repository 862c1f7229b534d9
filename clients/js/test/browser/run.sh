#!/bin/sh
# Runs the demo page's test in a real browser: Debian's chromium (or
# $CHROMIUM) driven by playwright-core, installed here by `npm ci`
# (tools/test installs both when missing). Builds the broker if needed
# (unless CORECAST_BIN points at a broker binary).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
if [ ! -d "$here/node_modules/playwright-core" ]; then
    echo "$0: playwright-core is missing: run npm ci in $here" >&2
    exit 1
fi
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "$0: no chromium at ${CHROMIUM:-/usr/bin/chromium}: apt-get install chromium" >&2
    exit 1
fi
if [ -z "${CORECAST_BIN:-}" ]; then
    target=${CARGO_TARGET_DIR:-$root/target}
    if [ ! -x "$target/debug/corecast" ] || [ -n "${CORECAST_REBUILD:-}" ]; then
        (cd "$root" && CARGO_TARGET_DIR="$target" nice -n 10 cargo build -p corecast)
    fi
fi
cd "$here"
exec node --experimental-websocket --no-warnings --test demo.test.mjs "$@"
