#!/usr/bin/env python3
"""Markdown tables from benches/loadgen_scenarios.sh results (JSON lines).

    python3 benches/loadgen_tables.py [target/loadgen-scenarios/results.jsonl]

Per scenario, over all rounds: delivered packets/s (mean), loss (total lost /
total expected), latency p50/p99/p999 (median of the rounds' values), relay
CPU per delivered packet and delivered Gbit/s per relay core (total CPU over
total packets or bytes), for georelay and for the bare quinn baseline of the
same invocations, and their ratio; the range of the per-round ratios shows
the noise.
"""

import json
import statistics
import sys
from collections import OrderedDict


def ms(us):
    return "-" if us is None else f"{us / 1000:.2f}"


def agg(runs):
    runs = [r for r in runs if r and not r.get("failed")]
    if not runs:
        return None
    cpu = sum(r.get("relay_cpu_s") or 0 for r in runs)
    received = sum(r["received"] for r in runs)
    expected = sum(r["expected"] for r in runs)
    bytes_ = sum(r["received_bytes"] for r in runs)
    med = lambda key: statistics.median(
        [r["latency_us"][key] for r in runs if r["latency_us"][key] is not None] or [0]
    )
    return {
        "pps": statistics.mean(r["throughput_pps"] for r in runs),
        "loss": (expected - received) / expected if expected else 0.0,
        "p50": med("p50"),
        "p99": med("p99"),
        "p999": med("p999"),
        "us_per_pkt": cpu * 1e6 / received if received else None,
        "gbps_core": bytes_ * 8 / cpu / 1e9 if cpu else None,
        "rss": max((r.get("relay_rss_bytes") or 0) for r in runs),
        "rounds": len(runs),
        "cpu": cpu,
        "received": received,
    }


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "target/loadgen-scenarios/results.jsonl"
    by = OrderedDict()
    for line in open(path):
        r = json.loads(line)
        by.setdefault(r["scenario"], []).append(r)
    print(
        "| scenario | rounds | through | delivered pkt/s | loss | p50 / p99 / p999 ms | relay CPU µs/pkt | Gbit/s per relay core | ratio µs/pkt georelay ÷ baseline (per-round range) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for scenario, runs in by.items():
        g = agg(runs)
        b = agg([r.get("baseline") for r in runs])
        if g is None:
            print(f"| {scenario} | 0 | failed | | | | | | |")
            continue
        ratios = [
            r["ratio_cpu_per_packet"] for r in runs if r.get("ratio_cpu_per_packet") is not None
        ]
        ratio = (
            f"**{g['us_per_pkt'] / b['us_per_pkt']:.2f}** ({min(ratios):.2f}–{max(ratios):.2f})"
            if b and b["us_per_pkt"] and g["us_per_pkt"] and ratios
            else "-"
        )
        for name, a, extra in [("georelay", g, ratio), ("baseline", b, "")]:
            if a is None:
                continue
            print(
                f"| {scenario if name == 'georelay' else ''} | {a['rounds']} | {name} | {a['pps']:.0f} | {a['loss'] * 100:.2f}% | "
                f"{ms(a['p50'])} / {ms(a['p99'])} / {ms(a['p999'])} | {fmt(a['us_per_pkt'], '.2f')} | {fmt(a['gbps_core'], '.2f')} | {extra} |"
            )
    idle = [r for name, runs in by.items() if name.startswith("idle_") for r in runs]
    if idle:
        print()
        print("| idle sessions | through | admitted | handshakes/s | relay RSS per session | relay RSS total |")
        print("|---|---|---|---|---|---|")
        for r in idle:
            for name, s in [("georelay", r), ("baseline", r.get("baseline"))]:
                if not s or not s.get("idle"):
                    continue
                i = s["idle"]
                per = i.get("relay_rss_bytes_per_session")
                print(
                    f"| {r['scenario']} round {r['round']} | {name} | {i['admitted']}/{i['asked']} | {i['handshakes_per_s']:.0f} | "
                    f"{'-' if per is None else f'{per / 1024:.1f} KiB'} | {(s.get('relay_rss_bytes') or 0) / 2**20:.0f} MiB |"
                )
    video = [r for r in by.get("video_1_to_100", []) if r.get("keyframes")]
    if video:
        print()
        print("| video keyframe bursts | through | burst packets expected | lost | p99 ms in bursts | p99 ms all packets |")
        print("|---|---|---|---|---|---|")
        for r in video:
            for name, s in [("georelay", r), ("baseline", r.get("baseline"))]:
                if not s or not s.get("keyframes"):
                    continue
                k = s["keyframes"]
                print(
                    f"| round {r['round']} | {name} | {k['expected']} | {k['lost']} ({k['loss_ratio'] * 100:.2f}%) | "
                    f"{ms(k['latency_us']['p99'])} | {ms(s['latency_us']['p99'])} |"
                )


if __name__ == "__main__":
    main()
