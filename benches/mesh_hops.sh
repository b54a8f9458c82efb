#!/usr/bin/env bash
# Relay CPU per delivered packet when media crosses the mesh, against the
# same load on one node, measured in the same run (interleaved rounds).
#
#   cargo build --release && benches/mesh_hops.sh [ROUNDS]
#
# Runs `georelay serve --all` (release) on a copy of the example fleet with
# metadata off, and `georelay loadgen` (release) from this process:
# globex-media, 1 publisher -> 10 subscribers, 1,000 pps, 1,138-byte payloads,
# 5 s per run.
#   single: publisher and subscribers on eu-ams-1 (one relay)
#   mesh:   publisher on eu-fra-1, subscribers on eu-ams-1, via uk-lon-1
#           (three relays: fra -> lon -> ams)
# All six nodes share one process, so its utime+stime (from /proc/PID/stat)
# is the fleet's CPU for the run.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
bin=target/release/georelay
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
sed 's/^\[metadata\]$/[metadata]\nenabled = false/' regions.toml > "$work/regions.toml"
grep -q '^enabled = false' "$work/regions.toml" || printf '\n[metadata]\nenabled = false\n' >> "$work/regions.toml"
"$bin" serve --all --config "$work/regions.toml" > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  curl -sf 127.20.0.2:9090/readyz > /dev/null 2>&1 && curl -sf 127.10.0.2:9090/readyz > /dev/null 2>&1 && break
  sleep 0.1
done
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
hz=$(getconf CLK_TCK)
run() { # name, loadgen args...
  local name=$1; shift
  local before after summary received
  before=$(ticks)
  summary=$("$bin" loadgen --config "$work/regions.toml" --app globex-media --publishers 1 \
    --subscribers 10 --rate 1000 --size 1138 --duration 5 --json "$@")
  sleep 0.5
  after=$(ticks)
  received=$(sed -E 's/.*"received":([0-9]+).*/\1/' <<<"$summary")
  lost=$(sed -E 's/.*"lost":([0-9]+).*/\1/' <<<"$summary")
  p99=$(sed -E 's/.*"p99":([0-9]+).*/\1/' <<<"$summary")
  echo "$name $((after - before)) $received $lost $p99"
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "round scenario cpu_ticks received lost p99_us us_per_delivered"
total_single=0; total_mesh=0; recv_single=0; recv_mesh=0
for round in $(seq "$rounds"); do
  for scenario in single mesh; do
    if [ "$scenario" = single ]; then
      read -r name t r l p < <(run single --node eu-ams-1)
      total_single=$((total_single + t)); recv_single=$((recv_single + r))
    else
      read -r name t r l p < <(run mesh --pub-node eu-fra-1 --sub-node eu-ams-1)
      total_mesh=$((total_mesh + t)); recv_mesh=$((recv_mesh + r))
    fi
    echo "$round $name $t $r $l $p $(awk -v t="$t" -v r="$r" -v hz="$hz" 'BEGIN{printf "%.2f", t/hz*1e6/r}')"
  done
done
awk -v ts="$total_single" -v tm="$total_mesh" -v rs="$recv_single" -v rm="$recv_mesh" -v hz="$hz" 'BEGIN{
  s = ts/hz*1e6/rs; m = tm/hz*1e6/rm;
  printf "total: single %.2f us/pkt, mesh %.2f us/pkt, mesh / single = %.2fx\n", s, m, m/s }'
echo "uk-lon-1 (transit) status:"; curl -s 127.40.0.1:9090/status; echo
