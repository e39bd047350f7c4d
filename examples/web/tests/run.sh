#!/usr/bin/env bash
# End-to-end test of the demo page: headless Chromium (Debian package) driven by playwright-core,
# against a real server with its media engine.
#
#   bash examples/web/tests/run.sh target/debug/confab
#
# The mixed call also needs the confab-bot binary next to confab (cargo build --bin confab-bot)
# and a Python with aiortc: $CONFAB_AIORTC_PYTHON, or .venv/aiortc/bin/python at the repository root
# (see examples/aiortc/requirements.txt).
#
# The server and Chromium run inside a network namespace that has only loopback, so no test
# traffic (signaling or WebRTC) can use another address. Needs root (unshare -n), /usr/bin/chromium
# and `npm ci` done in this directory. Screenshots go to test-artifacts/web/ at the repository root.
#
# Inside the namespace this script starts `confab serve --dev` with a fixed random JWT secret,
# mints an admin token with the same binary, creates the conversation of the group call
# (PUT /api/v1/conversations/team, members alice, bob, carol) and of the mixed call
# (conversations/mixed: alice, rsbot, pybot; also the call aiortc starts), then runs e2e.mjs with:
#   CONFAB_ORIGIN        the server's http://ADDR
#   CONFAB_CONVERSATION  the conversation id of the group call
#   CONFAB_MEMBERS       its members, comma-separated
#   CONFAB_MIXED_CONVERSATION, CONFAB_MIXED_MEMBERS   the same for the mixed call
#   CONFAB_BOT, CONFAB_AIORTC_PYTHON, CONFAB_AIORTC_PEER   the clients of the mixed call
#   SERVER_PID, SERVER_LOG   the server's pid (to notice a crash) and its stderr file
#   ARTIFACTS            the screenshot directory
set -euo pipefail

die() { printf 'web e2e: %s\n' "$*" >&2; exit 1; }

if [ "${1:-}" = "--inside" ]; then
  # ---- inside `unshare -n`: loopback only
  ip link set lo up
  secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  # The server gets only the settings given here (no CONFAB_* from the caller's environment).
  for v in $(env | sed -n 's/^\(CONFAB_[A-Z_]*\)=.*/\1/p'); do
    case "$v" in CONFAB_BIN | CONFAB_BOT | CONFAB_AIORTC_PYTHON | CONFAB_AIORTC_PEER) ;; *) unset "$v" ;; esac
  done
  CONFAB_LOG="${E2E_SERVER_LOG:-warn,rtc_dtls=error}" "$CONFAB_BIN" serve --dev --jwt-secret "$secret" \
    --http-addr 127.0.0.1:0 --rtc-udp-port 0 --database-url "sqlite://$WORK/confab.db" \
    --disconnect-grace-s 15 >"$WORK/server.out" 2>"$WORK/server.log" &
  server_pid=$!
  stop_server() { kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true; }
  trap stop_server EXIT
  trap 'exit 143' TERM INT
  origin=
  for _ in $(seq 300); do
    origin=$(sed -n 's/^listening on \(http:\/\/[^ ]*\).*/\1/p' "$WORK/server.out")
    [ -n "$origin" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server exited at start"; }
    sleep 0.1
  done
  [ -n "$origin" ] || { cat "$WORK/server.log" >&2; die "no 'listening on' line within 30 s"; }

  admin=$("$CONFAB_BIN" token --user host-app --admin --ttl 1h --jwt-secret "$secret") || die "confab token failed"
  # put_conversation ID NAME MEMBER,MEMBER,...
  put_conversation() {
    local body status
    body=$(printf '{"name":"%s","members":["%s"]}' "$2" "$(printf '%s' "$3" | sed 's/,/","/g')")
    status=$(curl -s -o "$WORK/conversation.json" -w '%{http_code}' -X PUT "$origin/api/v1/conversations/$1" \
      -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' -d "$body") || die "PUT conversation: curl failed"
    [ "$status" = 200 ] || die "PUT /api/v1/conversations/$1: HTTP $status $(cat "$WORK/conversation.json")"
    echo "server: $origin (conversation $1: $(cat "$WORK/conversation.json"))"
  }
  conversation=team members=alice,bob,carol
  mixed_conversation=mixed mixed_members=alice,rsbot,pybot
  put_conversation "$conversation" Team "$members"
  put_conversation "$mixed_conversation" Mixed "$mixed_members"

  export CONFAB_ORIGIN="$origin" CONFAB_CONVERSATION="$conversation" CONFAB_MEMBERS="$members" \
    CONFAB_MIXED_CONVERSATION="$mixed_conversation" CONFAB_MIXED_MEMBERS="$mixed_members" \
    SERVER_PID="$server_pid" SERVER_LOG="$WORK/server.log"
  set +e
  node "$(dirname "$0")/e2e.mjs"
  rc=$?
  set -e
  exit "$rc"
fi

[ $# -eq 1 ] || die "usage: run.sh PATH/TO/confab"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin=$(realpath "$1") || die "no such binary: $1"
[ -x "$bin" ] || die "not an executable: $bin"
bot=$(dirname "$bin")/confab-bot
[ -x "$bot" ] || die "no confab-bot next to $bin (cargo build --bin confab-bot)"
python=${CONFAB_AIORTC_PYTHON:-$root/.venv/aiortc/bin/python}
[ -x "$python" ] || die "no Python with aiortc at $python (set CONFAB_AIORTC_PYTHON; see examples/aiortc/requirements.txt)"
"$python" -c 'import aiortc, websockets' || die "$python cannot import aiortc"
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium is missing (apt-get install chromium)"
[ -d "$here/node_modules/playwright-core" ] || die "node modules missing: run 'npm ci' in $here"
[ "$(id -u)" = 0 ] || die "must run as root (unshare -n needs it)"
command -v ip >/dev/null || die "'ip' (iproute2) is missing"
command -v curl >/dev/null || die "'curl' is missing"

artifacts="$root/test-artifacts/web"
mkdir -p "$artifacts"
rm -f "$artifacts"/*.png "$artifacts"/*.log
work=$(mktemp -d)
# The server's log goes with the screenshots: it is what explains a failed media step.
trap 'cp "$work/server.log" "$artifacts/server.log" 2>/dev/null; rm -rf "$work"' EXIT

export CONFAB_BIN="$bin" CONFAB_BOT="$bot" CONFAB_AIORTC_PYTHON="$python" CONFAB_AIORTC_PEER="$root/examples/aiortc/peer.py" \
  WORK="$work" ARTIFACTS="$artifacts"
# The test has its own 480 s watchdog; this outer limit also catches a hung Chromium or node.
timeout --kill-after=15 540 unshare -n bash "$here/run.sh" --inside
