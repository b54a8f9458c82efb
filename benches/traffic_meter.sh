#!/usr/bin/env bash
# Instructions per delivered packet that traffic records add, under
# callgrind, all measured in the same run:
# - on the relay's own path: benches/fanout_core.rs `direct-records` (the
#   hub with traffic records on: flow counters on every route entry, an
#   interval every 1,000 packets) against `direct` (records off);
# - on the metadata side alone (benches/traffic_meter.rs: counting through
#   TrafficMeter handles and recording an interval every 1,000 packets),
#   against the fan-out core's hub mode.
#
#   benches/traffic_meter.sh [PACKETS]
set -euo pipefail
cd "$(dirname "$0")/.."
packets="${1:-20000}"
cargo bench --bench traffic_meter --bench fanout_core --no-run 2>&1 | tail -1
latest() { ls -t target/release/deps/"$1"-* | grep -v '\.d$' | head -1; }
count() { # binary mode packets -> instructions
  local out
  out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$1" "$2" "$3" >/dev/null 2>&1
  awk '/^summary:/ {print $2}' "$out"
  rm -f "$out"
}
# A short run of each mode is subtracted to cancel setup; deliveries are 10
# per published packet in both benches.
per() { # binary mode -> instructions per delivered packet (x1000)
  local long short
  long=$(count "$1" "$2" "$packets")
  short=$(count "$1" "$2" 1000)
  echo $(( (long - short) * 1000 / ((packets - 1000) * 10) ))
}
direct=$(per "$(latest fanout_core)" direct)
records=$(per "$(latest fanout_core)" direct-records)
meter=$(per "$(latest traffic_meter)" meter)
base=$(per "$(latest traffic_meter)" baseline)
hub=$(per "$(latest fanout_core)" hub)
awk -v d="$direct" -v r="$records" 'BEGIN {
  printf "relay path, direct outlets: %.1f instructions per delivered packet with traffic records, %.1f without: %.3f x (+%.2f%%)\n", r/1000, d/1000, r/d, 100*(r-d)/d
}'
awk -v m="$meter" -v b="$base" -v h="$hub" 'BEGIN {
  printf "traffic records: %.2f instructions per delivered packet (%.2f with, %.2f without)\n", (m-b)/1000, m/1000, b/1000
  printf "fan-out core (hub): %.1f instructions per delivered packet\n", h/1000
  printf "overhead: %.2f%% of the fan-out core per delivered packet\n", 100*(m-b)/h
}'
