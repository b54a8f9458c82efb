#!/usr/bin/env bash
# The load scenarios of docs/BENCHMARKS.md, each run with `georelay loadgen
# --baseline` so georelay and the bare quinn forwarder carry the same traffic
# in the same invocation; rounds repeat every scenario so drift in a shared
# machine's load hits both alike.
#
#   cargo build --release && benches/loadgen_scenarios.sh [ROUNDS] [SCENARIOS...]
#
# GEORELAY_BIN (default target/release/georelay) runs another build, e.g. the
# one before a change, for a before/after pair; GEORELAY_RESULTS (default
# target/loadgen-scenarios/results.jsonl) names the results file.
# SCENARIOS (default: all): fanout rooms video mesh meshhop idle reuseport
# Every loadgen summary is appended, one JSON line each, to
# target/loadgen-scenarios/results.jsonl with the scenario name and round;
# benches/loadgen_tables.py turns that file into the tables of the doc.
#
# Relays: `georelay serve --node` processes of a bench fleet written to a
# temp dir (metadata off, max_sessions 20000): `solo` alone, and the chain
# `hop-a -- hop-b -- hop-c` (links of 1 ms) in three processes, so each
# node's CPU is its own and loadgen sums the distinct processes it reads;
# `georelay certs` gives them one CA. `reuseport` also starts `solo-2ep`, the
# same node with `[limits] quic_endpoints = 2` (its own config file, so the
# other relays run a config that a build without that key accepts too), and
# runs 1 -> 50 and 1 -> 200 on `solo` and `solo-2ep` in alternating order.
# IDLE_SESSIONS (default 10000) sizes the idle scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
shift || true
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(fanout rooms video mesh meshhop idle reuseport)
bin="${GEORELAY_BIN:-target/release/georelay}"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
out=target/loadgen-scenarios
mkdir -p "$out"
results="${GEORELAY_RESULTS:-$out/results.jsonl}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

p=$((100 + RANDOM % 100)); q=$((RANDOM % 250))
ip() { echo "127.$p.$q.$1"; }
cat > "$work/regions.toml" <<TOML
[geoip.overrides]
"$(ip 200)/32" = "DE"
[regions.eu]
countries = ["DE"]
[nodes.solo]
region = "eu"
listen = "$(ip 10):4433"
admin = "$(ip 10):9090"
[nodes.solo-2ep]
region = "eu"
listen = "$(ip 14):4433"
admin = "$(ip 14):9090"
[nodes.hop-a]
region = "eu"
listen = "$(ip 11):4433"
admin = "$(ip 11):9090"
[nodes.hop-b]
region = "eu"
listen = "$(ip 12):4433"
admin = "$(ip 12):9090"
[nodes.hop-c]
region = "eu"
listen = "$(ip 13):4433"
admin = "$(ip 13):9090"
[[links]]
between = ["hop-a", "hop-b"]
rtt_ms = 1
[[links]]
between = ["hop-b", "hop-c"]
rtt_ms = 1
[apps.bench]
secret = "bench-secret"
allow_regions = ["eu"]
[limits]
max_sessions = 20000
max_connections = 21000
max_connections_per_address = 21000
[metadata]
enabled = false
TOML
# One CA for the four processes (each would otherwise make its own dev CA).
"$bin" certs --config "$work/regions.toml" --out "$work/certs" > /dev/null
printf '[tls]\nca = "certs/ca.pem"\ndir = "certs"\n' >> "$work/regions.toml"
sed 's/^max_sessions = 20000$/max_sessions = 20000\nquic_endpoints = 2/' "$work/regions.toml" > "$work/regions-2ep.toml"
# Every loadgen client has its own UDP socket (10,000 idle sessions and the
# baseline's as many): the relays and the loadgen need the hard fd limit.
ulimit -n "$(ulimit -Hn)"
nodes=(solo hop-a hop-b hop-c)
admins=(10 11 12 13)
if [[ " ${scenarios[*]} " == *" reuseport "* ]]; then
  RUST_LOG=warn "$bin" serve --node solo-2ep --config "$work/regions-2ep.toml" > "$work/solo-2ep.log" 2>&1 &
  pids+=($!)
  admins+=(14)
fi
for node in "${nodes[@]}"; do
  RUST_LOG=warn "$bin" serve --node "$node" --config "$work/regions.toml" > "$work/$node.log" 2>&1 &
  pids+=($!)
done
for i in "${admins[@]}"; do
  for _ in $(seq 200); do
    curl -sf "$(ip $i):9090/readyz" > /dev/null 2>&1 && break
    sleep 0.1
  done
done

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/machine.txt"
git rev-parse --short HEAD >> "$out/machine.txt"

run() { # scenario round loadgen-args...
  local scenario=$1 round=$2; shift 2
  local summary
  summary=$("$bin" loadgen --config "$work/regions.toml" --app bench --bind "$(ip 200)" --json "$@") || {
    echo "{\"scenario\":\"$scenario\",\"round\":$round,\"failed\":true}" >> "$results"; return; }
  jq -c --arg s "$scenario" --argjson r "$round" --arg a "$*" '. + {scenario: $s, round: $r, args: $a}' <<<"$summary" >> "$results"
  jq -r --arg s "$scenario" '"\($s) round: georelay \(.received)/\(.expected) p99 \(.latency_us.p99) us, \(.relay_cpu_us_per_packet // "-") us/pkt; baseline \(.baseline.received // "-")/\(.baseline.expected // "-") \(.baseline.relay_cpu_us_per_packet // "-") us/pkt; ratio \(.ratio_cpu_per_packet // "-")"' <<<"$summary"
}

for round in $(seq "$rounds"); do
  for scenario in "${scenarios[@]}"; do
    case $scenario in
      fanout)
        for n in 1 10 25 50 200 500; do
          run "fanout_1_to_$n" "$round" --node solo --subscribers "$n" --rate 1000 --size 1100 --duration 5 --baseline
        done ;;
      rooms)
        for k in 2 5 10 20 40; do
          run "audio_rooms_${k}x10" "$round" --node solo --profile audio --rooms "$k" --room-size 10 --duration 5 --baseline
        done ;;
      video)
        run video_1_to_100 "$round" --node solo --profile video --subscribers 100 --duration 6 --baseline ;;
      mesh)
        run mesh_1_to_50_0_hops "$round" --pub-node hop-a --sub-node hop-a --subscribers 50 --rate 1000 --size 1100 --duration 5 --measure-node hop-a,hop-b,hop-c --baseline
        run mesh_1_to_50_1_hop "$round" --pub-node hop-b --sub-node hop-a --subscribers 50 --rate 1000 --size 1100 --duration 5 --measure-node hop-a,hop-b,hop-c
        run mesh_1_to_50_2_hops "$round" --pub-node hop-c --sub-node hop-a --subscribers 50 --rate 1000 --size 1100 --duration 5 --measure-node hop-a,hop-b,hop-c ;;
      meshhop)
        # The cost of a hop alone: 1 -> 1 at 4,000 pps, so that what each
        # transit node does per packet is a large share of the fleet's CPU.
        for hops in 0 2; do
          pub=hop-a; [ "$hops" = 2 ] && pub=hop-c
          run "mesh_1_to_1_${hops}_hops_4000pps" "$round" --pub-node "$pub" --sub-node hop-a --subscribers 1 --rate 4000 --size 1100 --duration 5 --measure-node hop-a,hop-b,hop-c
        done ;;
      idle)
        n="${IDLE_SESSIONS:-10000}"
        run "idle_${n}_sessions" "$round" --node solo --idle "$n" --publishers 0 --subscribers 0 --duration 5 --setup-timeout 60 --baseline ;;
      reuseport)
        order=(solo solo-2ep)
        [ $((round % 2)) -eq 0 ] && order=(solo-2ep solo)
        for n in 50 200; do
          for node in "${order[@]}"; do
            run "reuseport_1_to_${n}_$node" "$round" --node "$node" --subscribers "$n" --rate 1000 --size 1100 --duration 5 --baseline
          done
        done ;;
      *) echo "unknown scenario $scenario" >&2; exit 2 ;;
    esac
  done
done
echo "results: $results"
