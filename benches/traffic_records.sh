#!/usr/bin/env bash
# Relay CPU per delivered packet with traffic records on ÷ off, measured in
# one run (docs/BENCHMARKS.md, "Traffic records on vs off").
#
# Two relays run as separate `georelay serve --node bench-1` processes
# (release build), identical except `[metadata] traffic_interval_secs`:
# 0 (traffic records off) and 1 (on, an interval every second: 60 times the
# default rate, a pessimistic setting). Metadata is enabled in both, so only
# traffic records differ. Each round runs the same loadgen against each
# relay, 1 publisher × 1,000 pps × 10 subscribers, in alternating order
# (off, on / on, off / ...), so drift in the machine's load hits both alike.
# loadgen reads each relay's CPU from its /metrics and reports
# relay_cpu_us_per_packet; the figure is the ratio of the totals.
#
#   benches/traffic_records.sh [ROUNDS] [SECONDS]     (default 6 rounds of 8 s)
#
# The loadgen summaries (one JSON line per run, with "mode" and "round")
# go to benches/results/traffic_records-<commit>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-6}"
seconds="${2:-8}"
cargo build --release --bin georelay 2>&1 | tail -1
bin="$PWD/target/release/georelay"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# relay NAME IP INTERVAL: a one-node fleet in $work/NAME, served.
relay() {
  if curl -sf "http://$2:9090/readyz" >/dev/null; then
    echo "$2:9090 already answers: another relay is running there" >&2
    exit 1
  fi
  mkdir -p "$work/$1"
  cat >"$work/$1/regions.toml" <<EOF
[geoip.overrides]
"$2/32" = "DE"
[regions.eu]
countries = ["DE"]
[nodes.bench-1]
region = "eu"
listen = "$2:4433"
admin = "$2:9090"
[apps.bench]
secret = "bench-secret"
allow_regions = ["eu"]
[metadata]
dir = "metadata"
traffic_interval_secs = $3
EOF
  (cd "$work/$1" && RUST_LOG=warn exec "$bin" serve --node bench-1 --config regions.toml >serve.log 2>&1) &
  pids+=($!)
  for _ in $(seq 100); do
    curl -sf "http://$2:9090/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "relay $1 did not start:" >&2
  cat "$work/$1/serve.log" >&2
  exit 1
}
relay off 127.61.0.1 0
relay on 127.61.0.2 1

# run NAME IP: one loadgen round against that relay; prints its JSON.
run() {
  "$bin" loadgen --config "$work/$1/regions.toml" --app bench --node bench-1 \
    --publishers 1 --subscribers 10 --rate 1000 --size 1100 \
    --duration "$seconds" --bind "$2" --json
}
mkdir -p benches/results
results="benches/results/traffic_records-$(git rev-parse --short HEAD).jsonl"
: >"$results"
for round in $(seq "$rounds"); do
  if (( round % 2 )); then order="off on"; else order="on off"; fi
  for mode in $order; do
    ip=127.61.0.1
    [[ $mode == on ]] && ip=127.61.0.2
    run "$mode" "$ip" | python3 -c '
import json, sys
r = json.load(sys.stdin)
if not r["received"] or r["relay_cpu_us_per_packet"] is None:
    sys.exit(f"round {sys.argv[2]} ({sys.argv[1]}) delivered nothing or has no relay cost: {r}")
r["mode"], r["round"] = sys.argv[1], int(sys.argv[2])
print(json.dumps(r))' "$mode" "$round" >>"$results"
  done
done
echo "metadata events written by the on relay: $(curl -s http://127.61.0.2:9090/metrics | awk '/^georelay_metadata_events_written_total/ {print $2}')"
echo "raw results: $results"
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("| round | off: relay CPU / delivered | off µs/pkt | on: relay CPU / delivered | on µs/pkt | on ÷ off |")
print("|---|---|---|---|---|---|")
total = {"off": [0.0, 0], "on": [0.0, 0]}
for rnd in sorted({r["round"] for r in rows}):
    cells = []
    per = {}
    for mode in ("off", "on"):
        r = next(r for r in rows if r["round"] == rnd and r["mode"] == mode)
        cpu, received = r["relay_cpu_s"], r["received"]
        total[mode][0] += cpu
        total[mode][1] += received
        per[mode] = r["relay_cpu_us_per_packet"]
        cells += [f"{cpu:.2f} s / {received:,}", f"{per[mode]:.2f}"]
        if r["lost"]:
            cells[-2] += f" (lost {r['lost']})"
    print(f"| {rnd} | " + " | ".join(cells) + f" | {per['on'] / per['off']:.3f} |")
us = {m: total[m][0] * 1e6 / total[m][1] for m in total}
print(f"| **all** | **{total['off'][0]:.2f} s / {total['off'][1]:,}** | **{us['off']:.2f}** | "
      f"**{total['on'][0]:.2f} s / {total['on'][1]:,}** | **{us['on']:.2f}** | **{us['on'] / us['off']:.3f}** |")
PY
