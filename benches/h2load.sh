#!/usr/bin/env bash
# Load-tests `gitgate serve` over TLS with h2load (Debian: nghttp2-client),
# HTTP/2 with keep-alive, the load generator on the same machine.
#
#   benches/h2load.sh [BIN] [FIXTURE]
#
# BIN defaults to target/release/gitgate (build it with
# `cargo build --release`); FIXTURE to the captured Deployment review.
# Prints: idle RSS; a fixed-rate run (5,000 reviews/s: 10 clients × 500/s,
# 20 s) with p50/p99/p99.9 from h2load's per-request log; and a saturation
# run (max throughput, 16 connections × 8 streams).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$here/target/release/gitgate}"
FIXTURE="${2:-$here/tests/fixtures/admission/validate-create-deployment.json}"
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 1; }
[ -x "$BIN" ] || { echo "$BIN not found: cargo build --release" >&2; exit 1; }

work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
(cd "$work" && RUST_LOG=warn exec "$BIN" serve --listen "127.0.0.1:$port") &
pid=$!
for _ in $(seq 1 100); do
  curl -sf --cacert "$work/certs/ca.crt" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
sleep 1
echo "idle RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"

pcts() { # per-request log: start_us status latency_us
  awk -F'\t' '$2==200 {print $3}' "$1" | sort -n | awk '{a[NR]=$1} END {
    if (NR==0) {print "no successful requests"; exit}
    printf "requests %d  p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms\n",
      NR, a[int(NR*0.50)+1]/1000, a[int(NR*0.99)+1]/1000, a[int(NR*0.999)+1]/1000, a[NR]/1000 }'
}

url="https://127.0.0.1:$port/validate"
hdr=(-H 'content-type: application/json')
echo "== warm-up"
h2load -n 20000 -c 4 -m 4 -d "$FIXTURE" "${hdr[@]}" "$url" >/dev/null

cpu0="$(awk '{print $14+$15}' /proc/$pid/stat)"
echo "== fixed rate: 10 clients x 500 req/s = 5,000 reviews/s for 20 s"
h2load -D 20 -c 10 -m 1 --rps 500 -d "$FIXTURE" "${hdr[@]}" --log-file "$work/rate.log" "$url" \
  | grep -E "^finished|^requests|^status codes|req/s"
pcts "$work/rate.log"
cpu1="$(awk '{print $14+$15}' /proc/$pid/stat)"
n="$(awk -F'\t' '$2==200' "$work/rate.log" | wc -l)"
awk -v c="$((cpu1 - cpu0))" -v n="$n" 'BEGIN {printf "gitgate CPU: %.1f µs per review (%d reviews)\n", c*10000/n, n}'

echo "== saturation: 16 connections x 8 streams, 200,000 reviews"
h2load -n 200000 -c 16 -m 8 -d "$FIXTURE" "${hdr[@]}" --log-file "$work/sat.log" "$url" \
  | grep -E "^finished|^requests|^status codes"
pcts "$work/sat.log"
echo "RSS after load: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
