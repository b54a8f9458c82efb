#!/usr/bin/env bash
# Where a relay's CPU goes at 1 -> N fan-out, next to the bare quinn
# forwarder carrying the same traffic: `perf record` of each process during
# its half of one `georelay loadgen --baseline` run, then the share of
# samples by binary/kernel (dso) and the top symbols.
#
#   cargo build --release && benches/profile_fanout.sh [SUBSCRIBERS] [PPS]
#
# Needs `perf` (Debian: apt-get install linux-perf) and permission to
# profile other processes (root, or kernel.perf_event_paranoid <= 1).
set -euo pipefail
cd "$(dirname "$0")/.."
subs="${1:-50}"; pps="${2:-1000}"
bin=target/release/georelay
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
out=target/profile-fanout
mkdir -p "$out"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
a=$((100 + RANDOM % 100)); b=$((RANDOM % 250))
cat > "$work/regions.toml" <<TOML
[geoip.overrides]
"127.$a.$b.200/32" = "DE"
[regions.eu]
countries = ["DE"]
[nodes.solo]
region = "eu"
listen = "127.$a.$b.10:4433"
admin = "127.$a.$b.10:9090"
[apps.bench]
secret = "bench-secret"
allow_regions = ["eu"]
[metadata]
enabled = false
TOML
RUST_LOG=warn "$bin" serve --node solo --config "$work/regions.toml" > "$work/serve.log" 2>&1 &
relay=$!; pids+=("$relay")
for _ in $(seq 200); do curl -sf "127.$a.$b.10:9090/readyz" > /dev/null 2>&1 && break; sleep 0.1; done
"$bin" loadgen --config "$work/regions.toml" --app bench --node solo --bind "127.$a.$b.200" \
  --subscribers "$subs" --rate "$pps" --size 1100 --duration 8 --baseline --json > "$out/summary.json" &
loadgen=$!; pids+=("$loadgen")
sleep 3   # connected, sending
perf record -F 1999 -g -o "$out/georelay.data" -p "$relay" -- sleep 4 2> /dev/null
forwarder=""
for _ in $(seq 300); do
  forwarder=$(pgrep -f "baseline-forwarder --listen 127.$a.$b" || true)
  [ -n "$forwarder" ] && break
  sleep 0.1
done
sleep 3
perf record -F 1999 -g -o "$out/baseline.data" -p "$forwarder" -- sleep 4 2> /dev/null
wait "$loadgen" || true
for who in georelay baseline; do
  echo "== $who: samples by dso"
  perf report -i "$out/$who.data" --no-children --sort dso --stdio 2> /dev/null | grep -E '^ +[0-9]' | head -8
  echo "== $who: top symbols"
  perf report -i "$out/$who.data" --no-children --sort sym --stdio 2> /dev/null | grep -E '^ +[0-9]' | head -25
done
jq -c '{georelay: {sent, received, relay_cpu_us_per_packet}, baseline: (.baseline | {sent, received, relay_cpu_us_per_packet}), ratio_cpu_per_packet}' "$out/summary.json"
