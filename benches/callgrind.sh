#!/usr/bin/env bash
# Instructions per delivered packet of the fan-out core (benches/fanout_core.rs)
# under callgrind, against a baseline measured in the same run.
#
#   benches/callgrind.sh [PACKETS]
set -euo pipefail
cd "$(dirname "$0")/.."
packets="${1:-20000}"
cargo bench --bench fanout_core --no-run 2>&1 | tail -1
bin=$(ls -t target/release/deps/fanout_core-* | grep -v '\.d$' | head -1)
count() { # mode packets -> instructions
  local out
  out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$1" "$2" >/dev/null 2>&1
  awk '/^summary:/ {print $2}' "$out"
  rm -f "$out"
}
# Subtract a short run of each mode to cancel setup (policy parsing, hub
# construction) and keep only the per-packet work.
declare -A per
for mode in baseline hub direct; do
  long=$(count "$mode" "$packets")
  short=$(count "$mode" 1000)
  per[$mode]=$(( (long - short) / ((packets - 1000) * 10) ))
  echo "$mode: $(( long - short )) instructions for $(( (packets - 1000) * 10 )) deliveries = ${per[$mode]} per delivered packet"
done
awk -v h="${per[hub]}" -v d="${per[direct]}" -v b="${per[baseline]}" \
  'BEGIN{printf "hub (queued outlets) / baseline = %.1fx\ndirect outlets / baseline = %.1fx\n", h/b, d/b}'
