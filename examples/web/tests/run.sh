#!/usr/bin/env bash
# End-to-end test of the demo page: headless Chromium (Debian package) driven by playwright-core.
#
#   bash examples/web/tests/run.sh target/debug/confab
#
# The server and Chromium run inside a network namespace that has only loopback, so no test
# traffic (signaling or WebRTC) can use another address. Needs root (unshare -n), /usr/bin/chromium
# and `npm ci` done in this directory. Screenshots go to test-artifacts/web/ at the repository root.
set -euo pipefail

die() { printf 'web e2e: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: run.sh PATH/TO/confab"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin=$(realpath "$1") || die "no such binary: $1"
[ -x "$bin" ] || die "not an executable: $bin"
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium is missing (apt-get install chromium)"
[ -d "$here/node_modules/playwright-core" ] || die "node modules missing: run 'npm ci' in $here"
[ "$(id -u)" = 0 ] || die "must run as root (unshare -n needs it)"
command -v ip >/dev/null || die "'ip' (iproute2) is missing"

artifacts="$root/test-artifacts/web"
mkdir -p "$artifacts"
rm -f "$artifacts"/*.png
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

export CONFAB_BIN="$bin" WORK="$work" ARTIFACTS="$artifacts"
# The test has its own 240 s watchdog; this outer limit also catches a hung Chromium or node.
timeout --kill-after=15 300 \
  unshare -n sh -c 'ip link set lo up && exec node "$1"' sh "$here/e2e.mjs"
