//! `georelay loadgen` against `georelay serve --all` in a child process, on
//! a test fleet at a random `127.a.b.*` prefix: exact accounting (1
//! publisher → 3 subscribers, nothing lost), redirects and refusals
//! counted, a route that stays unavailable counted, the traffic profiles (audio rooms, video keyframe bursts,
//! reliable data), entry nodes spread over lists, idle sessions held open,
//! the per-second series, the progress line on a terminal, the relays'
//! process metrics and the cost read from them, and the bare quinn
//! baseline run in the same invocation.

mod support;

use std::process::{Command, Stdio};

use serde_json::Value;
use support::fleet::{FleetSpec, NODES, http_get};
use support::served::{BIN, ServedFleet};

/// Starts `serve --all` and waits until every node answers `/readyz` 200.
/// Every loadgen session comes from one loopback address: the per-address
/// connection cap is raised above the runs' session counts.
async fn start_fleet() -> ServedFleet {
    let spec = FleetSpec {
        extra: "[limits]\nmax_connections_per_address = 1000\n".to_string(),
        ..FleetSpec::default()
    };
    let mut fleet = ServedFleet::configure(&spec);
    fleet.serve_all("info");
    for node in NODES {
        fleet.wait_ready(node).await;
    }
    fleet
}

fn count(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {field} in {summary}"))
}

fn number(summary: &Value, field: &str) -> f64 {
    summary[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {field} in {summary}"))
}

/// `flags` (separated by whitespace), then `--bind bind`.
fn loadgen_args(flags: &str, bind: &str) -> Vec<String> {
    flags
        .split_whitespace()
        .chain(["--bind", bind])
        .map(str::to_string)
        .collect()
}

/// `georelay loadgen --json --app app` on `fleet` with `flags`, from `bind`.
async fn run_loadgen(fleet: &ServedFleet, app: &str, flags: &str, bind: &str) -> Value {
    fleet.loadgen(app, &loadgen_args(flags, bind)).await
}

/// Nothing lost, nothing repeated, no refusal.
fn assert_exact(summary: &Value) {
    assert!(count(summary, "expected") > 0, "{summary}");
    assert_eq!(
        count(summary, "received"),
        count(summary, "expected"),
        "{summary}"
    );
    assert_eq!(count(summary, "lost"), 0, "{summary}");
    assert_eq!(count(summary, "duplicates"), 0, "{summary}");
    assert_eq!(count(summary, "malformed"), 0, "{summary}");
    assert_eq!(count(summary, "unready_subscribers"), 0, "{summary}");
    assert_eq!(
        summary["errors"].as_object().map(|e| e.len()),
        Some(0),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_counts_exactly_against_a_served_fleet() {
    let fleet = start_fleet().await;
    let nl = fleet.client_ip("NL").to_string();

    // The acceptance run: 1 publisher -> 3 subscribers on one node, 5 s at 200 pps.
    let summary = run_loadgen(
        &fleet,
        "acme-health",
        "--node eu-fra-1 --publishers 1 --subscribers 3 --rate 200 --duration 5",
        &nl,
    )
    .await;
    assert_eq!(count(&summary, "publishers"), 1, "{summary}");
    assert_eq!(count(&summary, "subscribers"), 3, "{summary}");
    let sent = count(&summary, "sent");
    assert!(
        (500..=1000).contains(&sent),
        "200 pps for 5 s sends at most 1000: {summary}"
    );
    assert_eq!(count(&summary, "expected"), 3 * sent, "{summary}");
    assert_exact(&summary);
    assert_eq!(summary["loss_ratio"].as_f64(), Some(0.0), "{summary}");
    assert_eq!(count(&summary, "redirects"), 0, "{summary}");
    assert_eq!(
        count(&summary, "received_bytes"),
        200 * count(&summary, "received"),
        "{summary}"
    );
    let latency = &summary["latency_us"];
    let [p50, p99, p999, max] = ["p50", "p99", "p999", "max"].map(|p| count(latency, p));
    assert!(
        0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{latency}"
    );
    assert!(
        max < 5_000_000,
        "one-way latency on loopback under 5 s: {latency}"
    );
    assert_eq!(
        count(latency, "samples"),
        count(&summary, "received"),
        "{latency}"
    );
    let throughput = number(&summary, "throughput_pps");
    let duration = number(&summary, "duration_s");
    assert!((4.5..6.0).contains(&duration), "{summary}");
    assert!(
        (throughput - 3.0 * sent as f64 / duration).abs() < 1.0,
        "{summary}"
    );
    // The relay's cost, from its /metrics: one process, some CPU, its memory.
    assert_eq!(summary["relay_nodes"], serde_json::json!(["eu-fra-1"]));
    assert_eq!(count(&summary, "relay_processes"), 1, "{summary}");
    let cpu = number(&summary, "relay_cpu_s");
    assert!(cpu > 0.0 && cpu < 20.0, "{summary}");
    let per_packet = number(&summary, "relay_cpu_us_per_packet");
    assert!(
        (per_packet - cpu * 1e6 / count(&summary, "received") as f64).abs() < 1e-6 * per_packet,
        "{summary}"
    );
    let gbps = number(&summary, "gbps_per_relay_core");
    assert!(
        (gbps - count(&summary, "received_bytes") as f64 * 8.0 / cpu / 1e9).abs()
            < 1e-9 + gbps * 1e-6,
        "{summary}"
    );
    assert!(count(&summary, "relay_rss_bytes") > 1 << 20, "{summary}");

    // acme-health is EU-only: clients sent to the UK node are redirected.
    let summary = run_loadgen(
        &fleet,
        "acme-health",
        "--node uk-lon-1 --subscribers 2 --duration 1",
        &nl,
    )
    .await;
    assert_eq!(count(&summary, "redirects"), 3, "{summary}");
    assert!(count(&summary, "sent") > 0, "{summary}");
    assert_exact(&summary);

    // acme-health denies clients from RU: every client is refused, counted, and the run completes.
    let ru = fleet.client_ip("RU").to_string();
    let summary = run_loadgen(
        &fleet,
        "acme-health",
        "--node eu-fra-1 --subscribers 2 --duration 1",
        &ru,
    )
    .await;
    assert_eq!(
        summary["errors"]["GEOFENCE_DENIED"].as_u64(),
        Some(3),
        "{summary}"
    );
    assert_eq!(count(&summary, "publishers"), 0, "{summary}");
    assert_eq!(count(&summary, "sent"), 0, "{summary}");
    assert_eq!(count(&summary, "expected"), 0, "{summary}");
    drop(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_rooms_and_spread_entry_nodes() {
    let fleet = start_fleet().await;
    let nl = fleet.client_ip("NL").to_string();

    // Audio rooms: 2 rooms x 3 participants, each hears the other two.
    let summary = run_loadgen(
        &fleet,
        "acme-health",
        "--profile audio --rooms 2 --room-size 3 --pub-node eu-fra-1,eu-ams-1 --duration 2",
        &nl,
    )
    .await;
    assert_eq!(summary["profile"], "audio", "{summary}");
    assert_eq!(count(&summary, "publishers"), 6, "{summary}");
    assert_eq!(count(&summary, "subscribers"), 6, "{summary}");
    assert_eq!(count(&summary, "channels"), 2, "{summary}");
    assert_eq!(count(&summary, "payload_bytes"), 160, "{summary}");
    assert_eq!(number(&summary, "rate_pps"), 50.0, "{summary}");
    assert_eq!(count(&summary, "planned"), 6 * 100, "{summary}");
    let sent = count(&summary, "sent");
    assert!(sent > 300, "{summary}");
    assert_eq!(count(&summary, "expected"), 2 * sent, "{summary}");
    assert_exact(&summary);
    assert_eq!(
        count(&summary, "received_bytes"),
        160 * count(&summary, "received"),
        "{summary}"
    );
    // Participants spread over both entry nodes, which share one process.
    assert_eq!(
        summary["relay_nodes"],
        serde_json::json!(["eu-ams-1", "eu-fra-1"]),
        "{summary}"
    );
    assert_eq!(count(&summary, "relay_processes"), 1, "{summary}");

    // Video 1 -> 3 for 2.5 s: two keyframe bursts of 50 packets, 5 per delta frame.
    let flags = "--profile video --subscribers 3 --sub-node eu-fra-1,eu-ams-1 \
                 --pub-node eu-fra-1 --duration 2.5";
    let summary = run_loadgen(&fleet, "acme-health", flags, &nl).await;
    assert_eq!(count(&summary, "payload_bytes"), 1100, "{summary}");
    assert_eq!(count(&summary, "planned"), 2 * 50 + 73 * 5, "{summary}");
    assert_exact(&summary);
    let keyframes = &summary["keyframes"];
    let burst_sent = count(keyframes, "sent");
    assert!(
        burst_sent == 50 || burst_sent == 100,
        "whole bursts: {keyframes}"
    );
    assert_eq!(count(keyframes, "expected"), 3 * burst_sent, "{keyframes}");
    assert_eq!(
        count(keyframes, "received"),
        count(keyframes, "expected"),
        "{keyframes}"
    );
    assert!(count(&keyframes["latency_us"], "p99") > 0, "{keyframes}");
    assert_eq!(
        summary["relay_nodes"],
        serde_json::json!(["eu-ams-1", "eu-fra-1"]),
        "{summary}"
    );

    // Reliable data messages: 1 -> 2, nothing may be lost.
    let summary = run_loadgen(
        &fleet,
        "acme-health",
        "--profile data --subscribers 2 --rate 100 --size 300 --duration 1",
        &nl,
    )
    .await;
    assert_eq!(count(&summary, "planned"), 100, "{summary}");
    let sent = count(&summary, "sent");
    assert!(
        (80..=100).contains(&sent),
        "a missed tick is skipped: {summary}"
    );
    assert_eq!(count(&summary, "expected"), 2 * sent, "{summary}");
    assert_exact(&summary);

    // initech-chat may use the EU and the US but not the UK, the only way
    // between them: the subscriptions stay unavailable, counted once each,
    // and every packet they were owed is lost.
    let summary = run_loadgen(
        &fleet,
        "initech-chat",
        "--pub-node us-iad-1 --sub-node eu-fra-1 --subscribers 2 --duration 1 --setup-timeout 3",
        &nl,
    )
    .await;
    assert_eq!(
        summary["errors"]["ROUTE_UNAVAILABLE"].as_u64(),
        Some(2),
        "{summary}"
    );
    assert_eq!(count(&summary, "unready_subscribers"), 2, "{summary}");
    assert_eq!(count(&summary, "received"), 0, "{summary}");
    assert_eq!(
        count(&summary, "lost"),
        2 * count(&summary, "sent"),
        "{summary}"
    );

    // A shape flag given to a profile that has its own shape is refused (exit 2).
    let out = Command::new(BIN)
        .args([
            "loadgen",
            "--app",
            "acme-health",
            "--profile",
            "audio",
            "--rate",
            "10",
            "--config",
        ])
        .arg(fleet.config())
        .output()
        .expect("loadgen runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--rate and --size apply to --profile raw and data"),
        "{out:?}"
    );
    drop(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_held_and_series_and_progress_report_each_second() {
    let fleet = start_fleet().await;
    let nl = fleet.client_ip("NL").to_string();
    let series = fleet.path().join("series.jsonl");

    // 60 idle sessions plus 1 -> 1, with a per-second series; the node
    // reports the idle sessions while the run holds them.
    let mut idle_args = loadgen_args("--node eu-fra-1 --idle 60 --duration 3", &nl);
    idle_args.extend(["--series".to_string(), series.display().to_string()]);
    let run = fleet.loadgen("acme-health", &idle_args);
    let held = fleet.wait_until("eu-fra-1", |status| status.sessions >= 62);
    let (summary, ()) = tokio::join!(run, held);
    let idle = &summary["idle"];
    assert_eq!(count(idle, "asked"), 60, "{idle}");
    assert_eq!(count(idle, "admitted"), 60, "{idle}");
    assert!(number(idle, "handshakes_per_s") > 0.0, "{idle}");
    assert!(idle["relay_rss_bytes_per_session"].is_number(), "{idle}");
    assert_exact(&summary);
    fleet
        .wait_until("eu-fra-1", |status| status.sessions == 0)
        .await;

    let text = std::fs::read_to_string(&series).expect("series file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "one line a second for 3 s: {text}");
    assert!(
        lines
            .windows(2)
            .all(|w| number(&w[0], "t_s") < number(&w[1], "t_s")
                && count(&w[0], "sent") <= count(&w[1], "sent")),
        "{text}"
    );
    assert!(lines.iter().all(|l| l["through"] == "georelay"), "{text}");
    let last = lines.last().expect("a line");
    assert_eq!(count(last, "sent"), count(&summary, "sent"), "{text}");
    assert!(
        count(last, "received") <= count(&summary, "received"),
        "{text}"
    );
    let per_second: u64 = lines.iter().map(|l| count(l, "interval_received")).sum();
    assert_eq!(per_second, count(last, "received"), "{text}");

    // On a terminal the progress line is redrawn once a second (on stderr);
    // `script` gives the loadgen a pseudo-terminal.
    let command = format!(
        "{BIN} loadgen --app acme-health --node eu-fra-1 --duration 2.5 --no-relay-cost --bind {nl} --config {}",
        fleet.config().display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    let redraws = shown.matches("\rgeorelay ").count();
    assert!(
        (2..=4).contains(&redraws),
        "{redraws} progress lines: {shown:?}"
    );
    assert!(
        shown.contains("loss 0.000%") || shown.contains("p99"),
        "{shown:?}"
    );
    // With --json, nothing but the one JSON object, even on a terminal.
    let out = Command::new("script")
        .args(["-qec", &format!("{command} --json"), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    let shown = String::from_utf8_lossy(&out.stdout);
    let json: Value =
        serde_json::from_str(shown.trim()).unwrap_or_else(|e| panic!("{e}: {shown:?}"));
    assert_exact(&json);
    drop(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_metrics_and_the_bare_quinn_baseline() {
    let fleet = start_fleet().await;
    let nl = fleet.client_ip("NL").to_string();

    // Every node's /metrics carries the process it runs in.
    for node in ["eu-fra-1", "us-iad-1"] {
        let metrics = http_get(fleet.addr(node, 9090), "/metrics").await;
        let value = |name: &str| -> f64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
        };
        assert_eq!(value("georelay_process_id"), f64::from(fleet.pid("serve")));
        assert!(value("process_cpu_seconds_total") > 0.0);
        assert!(value("process_resident_memory_bytes") > f64::from(1u32 << 20));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_start_time_seconds") > 1.6e9);
    }

    // The same traffic through georelay and the bare quinn forwarder.
    let summary = run_loadgen(
        &fleet,
        "acme-health",
        "--node eu-fra-1 --subscribers 3 --rate 300 --size 1100 --duration 2 --baseline",
        &nl,
    )
    .await;
    assert_eq!(summary["through"], "georelay", "{summary}");
    assert_exact(&summary);
    let baseline = &summary["baseline"];
    assert_eq!(baseline["through"], "baseline", "{baseline}");
    assert_eq!(count(baseline, "subscribers"), 3, "{baseline}");
    assert_eq!(
        count(baseline, "expected"),
        3 * count(baseline, "sent"),
        "{baseline}"
    );
    assert_exact(baseline);
    assert_eq!(count(baseline, "relay_processes"), 1, "{baseline}");
    assert_eq!(
        baseline["relay_nodes"],
        serde_json::json!(["baseline"]),
        "{baseline}"
    );
    assert!(count(baseline, "relay_rss_bytes") > 1 << 20, "{baseline}");
    let relay = number(&summary, "relay_cpu_us_per_packet");
    match baseline["relay_cpu_us_per_packet"].as_f64() {
        Some(bare) if bare > 0.0 => {
            let ratio = number(&summary, "ratio_cpu_per_packet");
            assert!(
                (ratio - relay / bare).abs() < 1e-9 * ratio.max(1.0),
                "{summary}"
            );
        }
        // Under 10 ms of forwarder CPU reads as 0: no ratio then.
        _ => assert!(summary.get("ratio_cpu_per_packet").is_none(), "{summary}"),
    }
    drop(fleet);
}
