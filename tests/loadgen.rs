//! `georelay loadgen --json` against `georelay serve --all` in a child
//! process, on a test fleet at a random `127.a.b.*` prefix: the issue's
//! acceptance run (1 publisher → 3 subscribers, 5 s at 200 pps, nothing
//! lost), redirects counted, and a client from a denied country counted as
//! `GEOFENCE_DENIED`.

mod support;

use serde_json::Value;
use support::fleet::{FleetSpec, NODES};
use support::served::ServedFleet;

/// Starts `serve --all` and waits until every node answers `/readyz` 200.
async fn start_fleet() -> ServedFleet {
    let mut fleet = ServedFleet::configure(&FleetSpec::default());
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

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_counts_exactly_against_a_served_fleet() {
    let fleet = start_fleet().await;
    let nl = fleet.client_ip("NL").to_string();

    // The acceptance run: 1 publisher -> 3 subscribers on one node, 5 s at 200 pps.
    let summary = fleet
        .loadgen(
            "acme-health",
            &args(&[
                "--node",
                "eu-fra-1",
                "--publishers",
                "1",
                "--subscribers",
                "3",
                "--rate",
                "200",
                "--duration",
                "5",
                "--bind",
                &nl,
            ]),
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
    assert_eq!(
        count(&summary, "received"),
        count(&summary, "expected"),
        "{summary}"
    );
    assert_eq!(count(&summary, "lost"), 0, "{summary}");
    assert_eq!(summary["loss_ratio"].as_f64(), Some(0.0), "{summary}");
    assert_eq!(count(&summary, "duplicates"), 0, "{summary}");
    assert_eq!(
        summary["errors"].as_object().map(|e| e.len()),
        Some(0),
        "{summary}"
    );
    assert_eq!(count(&summary, "redirects"), 0, "{summary}");
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
    let throughput = summary["throughput_pps"].as_f64().expect("throughput_pps");
    let duration = summary["duration_s"].as_f64().expect("duration_s");
    assert!((4.5..6.0).contains(&duration), "{summary}");
    assert!(
        (throughput - 3.0 * sent as f64 / duration).abs() < 1.0,
        "{summary}"
    );

    // acme-health is EU-only: clients sent to the UK node are redirected.
    let summary = fleet
        .loadgen(
            "acme-health",
            &args(&[
                "--node",
                "uk-lon-1",
                "--subscribers",
                "2",
                "--duration",
                "1",
                "--bind",
                &nl,
            ]),
        )
        .await;
    assert_eq!(count(&summary, "redirects"), 3, "{summary}");
    assert!(count(&summary, "sent") > 0, "{summary}");
    assert_eq!(
        count(&summary, "received"),
        count(&summary, "expected"),
        "{summary}"
    );

    // acme-health denies clients from RU: every client is refused, counted, and the run completes.
    let ru = fleet.client_ip("RU").to_string();
    let summary = fleet
        .loadgen(
            "acme-health",
            &args(&[
                "--node",
                "eu-fra-1",
                "--subscribers",
                "2",
                "--duration",
                "1",
                "--bind",
                &ru,
            ]),
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
