#!/usr/bin/env bash
# Counts the server's instructions per forwarded packet under callgrind, and keeps the profile.
#
# Instruction counts do not move with the machine's load, so two builds can be compared on a
# noisy host where CPU-time figures differ by a quarter from run to run. The server runs under
# valgrind with instrumentation off while the load generator's bots join and warm up; it is
# switched on for a window of steady forwarding, and the server's own forwarded-packet counter
# (from /metrics) over that window divides the instructions. Callgrind slows the server about
# fifty-fold, so the call is small: an audio call of PARTICIPANTS people (2,800 forwarded
# packets a second for 8), or with a simulcast camera each when VIDEO=1.
#
#   cargo build --release -p confab -p confab-loadgen
#   benches/callgrind.sh                       # 8 talkers, target/release/confab
#   PARTICIPANTS=5 VIDEO=1 benches/callgrind.sh
#   CONFAB=/path/to/other/confab OUT=/tmp/b benches/callgrind.sh   # the other side of an A/B
#
# Then: callgrind_annotate --inclusive=yes "$OUT/callgrind.out" | less
# (build with CARGO_PROFILE_RELEASE_DEBUG=line-tables-only for per-line figures).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
confab=${CONFAB:-$target/release/confab}
loadgen=${LOADGEN:-$target/release/confab-loadgen}
participants=${PARTICIPANTS:-8}
window_s=${WINDOW_S:-20}
out=${OUT:-$(mktemp -d /tmp/confab-callgrind.XXXXXX)}
mkdir -p "$out"

for tool in valgrind callgrind_control curl "$confab" "$loadgen"; do
  command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool not found" >&2; exit 1; }
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.out.%p" \
  "$confab" serve --jwt-secret callgrind --http-addr "127.0.0.1:$port" --rtc-udp-port 0 \
  --media-workers 1 --database-url "sqlite://$out/confab.db" --loudest-n 0 \
  --max-participants 200 >"$out/server.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null || true; kill $loadgen_pid 2>/dev/null || true' EXIT

for _ in $(seq 1 120); do
  curl -sf "$url/healthz" >/dev/null && break
  sleep 1
done
curl -sf "$url/healthz" >/dev/null || { echo "the server did not come up: $out/server.log" >&2; exit 1; }

video=()
if [ "${VIDEO:-0}" = 1 ]; then
  video=(--simulcast --video-kbps 1500 --low-tiles $((participants - 2)) --high-tiles 1)
fi
# A long run: the window below is cut out of its middle.
"$loadgen" --server "$url" --secret callgrind --server-pid "$server" --scenario custom \
  --participants "$participants" --publishers "$participants" --loudest-n 0 \
  --duration $((window_s * 3)) --warmup 30 --floor-duration 0 "${video[@]}" \
  >"$out/loadgen.log" 2>&1 &
loadgen_pid=$!

forwarded() {
  curl -sf "$url/metrics" | awk '/^confab_rtp_packets_forwarded_total/ { n += $2 } END { print n + 0 }'
}
# Wait until forwarding is steady: two readings 5 s apart at the same rate, within 5 %.
previous=0
for _ in $(seq 1 60); do
  a=$(forwarded); sleep 5; b=$(forwarded); rate=$(( (b - a) / 5 ))
  if [ "$rate" -gt 0 ] && [ "$previous" -gt 0 ] &&
     [ $(( rate * 100 / previous )) -ge 95 ] && [ $(( rate * 100 / previous )) -le 105 ]; then
    break
  fi
  previous=$rate
done

callgrind_control -i on "$server" >/dev/null 2>&1
start=$(forwarded)
sleep "$window_s"
end=$(forwarded)
callgrind_control -i off "$server" >/dev/null 2>&1
callgrind_control -d "$server" >/dev/null 2>&1
wait "$loadgen_pid" || true
kill -INT "$server"; wait "$server" || true
trap - EXIT

profile=$(ls -S "$out"/callgrind.out.* | head -1)
mv "$profile" "$out/callgrind.out"
rm -f "$out"/callgrind.out.*
instructions=$(awk '/^totals:/ { print $2 }' "$out/callgrind.out")
packets=$((end - start))
echo "window:                ${window_s} s, ${packets} packets forwarded"
echo "instructions:          ${instructions}"
echo "per forwarded packet:  $((instructions / packets))"
echo "profile:               $out/callgrind.out"
tail -1 "$out/loadgen.log" | grep -q '"server_loss_ratio":0.0,' ||
  echo "note: the load generator saw loss; see $out/loadgen.log"
