#!/usr/bin/env bash
# Instructions per iteration of each hot-path scenario of benches/hot_paths.rs
# under callgrind: a run of N iterations minus a run of N/10 cancels setup
# (building the 1,000-node fleet, minting the token), so only the per-
# iteration work is left (routing scenarios run fewer iterations). Counts do not depend on the machine's load.
#
#   benches/hot_paths_callgrind.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}"
short=$(( n / 10 ))
cargo bench --bench hot_paths --no-run 2>&1 | tail -1
bin=$(ls -t target/release/deps/hot_paths-* | grep -v '\.d$' | head -1)
count() { # scenario iterations -> instructions
  local out
  out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --callgrind "$1" "$2" >/dev/null 2>&1
  awk '/^summary:/ {print $2}' "$out"
  rm -f "$out"
}
echo "| scenario | instructions per iteration |"
echo "|---|---|"
for scenario in route_1000_nodes_cheapest_path route_1000_nodes_link_failure_recompute_100_paths \
    wire_media_header_encode_parse wire_hello_encode_decode token_verify_gr1 \
    fanout_bytes_100_clone fanout_bytes_100_queue_and_wake; do
  iterations=$n
  # A Dijkstra over 1,000 nodes is ~50x slower under valgrind than natively.
  case $scenario in
    route_1000_nodes_cheapest_path) iterations=50 ;;
    route_*) iterations=6 ;;
  esac
  few=$(( iterations / 10 > 1 ? iterations / 10 : 1 ))
  long=$(count "$scenario" "$iterations")
  base=$(count "$scenario" "$few")
  echo "| $scenario | $(( (long - base) / (iterations - few) )) |"
done
