//! `georelay metadata report --json` after a real fleet run matches the
//! loadgen's own counts: `georelay serve --all` (a child process in a
//! temporary working directory, metadata on) carries a `georelay loadgen`
//! run with its publishers on one node and its subscribers on another; after
//! a clean SIGTERM shutdown (which flushes the store) the report's session
//! counts equal the loadgen's clients and its bytes in/out equal, to the
//! byte, what the loadgen's packet counts and `--size` imply, and what each
//! node's live `/status` counters said before the shutdown.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use georelay::admin::AppTraffic;
use serde_json::Value;
use support::fleet::FleetSpec;
use support::served::{BIN, ServedFleet};

/// An EU-only app: both nodes below are in the EU, so nothing is redirected.
const APP: &str = "acme-health";
/// Where the publishers connect.
const PUB_NODE: &str = "eu-fra-1";
/// Where the subscribers connect (media crosses the fra-ams mesh link).
const SUB_NODE: &str = "eu-ams-1";
const PUBLISHERS: u64 = 2;
const SUBSCRIBERS: u64 = 3;
const RATE_PPS: u64 = 200;
const SECONDS: u64 = 3;
/// The loadgen's `--size`: media payload bytes per datagram.
const PAYLOAD_SIZE: u64 = 300;

/// Bytes of the media header in front of every payload as the loadgen's
/// publishers write it (`track | seq | timestamp_us`, three QUIC varints of
/// 1, 2, 4 or 8 bytes: values below 2^6, 2^14, 2^30, 2^62). The relay counts
/// whole datagrams, header included, and forwards them unchanged.
///
/// - `track` is the relay's random 62-bit key: 8 bytes unless the key is
///   below 2^30, which happens with probability 2^-32 per track.
/// - `seq` runs 0, 1, ... per publisher: 1 byte for the first 64 packets and
///   2 bytes for the next 16,320, so a publisher that sent `n` packets
///   (64 ≤ n ≤ 16,384) wrote `64 + 2(n − 64) = 2n − 64` sequence bytes, and
///   all publishers together `2·sent − 64·publishers`, however `sent` is
///   split between them (the caller checks that each sent at least 64).
/// - `timestamp_us` is microseconds since the loadgen run started: 4 bytes
///   from 16,384 µs to 2^30 µs (17.9 min). The first packet leaves after the
///   clients' QUIC handshakes, subscribe and announce round trips, the
///   cross-node track announcement and the loadgen's fixed 10 ms start delay,
///   so never before 16.4 ms.
fn media_header_bytes(sent: u64, publishers: u64) -> u64 {
    const TRACK: u64 = 8;
    const TIMESTAMP: u64 = 4;
    sent * (TRACK + TIMESTAMP) + (2 * sent - 64 * publishers)
}

fn count(json: &Value, field: &str) -> u64 {
    json[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {field} in {json}"))
}

/// Runs `georelay metadata report --json` with `args` in the fleet's
/// working directory and parses its one JSON object.
fn metadata_report(fleet: &ServedFleet, args: &[&str]) -> Value {
    let output = Command::new(BIN)
        .args(["metadata", "report", "--json", "--dir"])
        .arg(fleet.metadata_dir())
        .args(args)
        .current_dir(fleet.path())
        .stdin(Stdio::null())
        .output()
        .expect("georelay metadata report runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "metadata report {args:?} failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bad report JSON ({e}): {stdout}"))
}

/// The report's groups by key.
fn groups(report: &Value) -> std::collections::BTreeMap<String, Value> {
    report["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups in {report}"))
        .iter()
        .map(|g| (g["key"].as_str().unwrap_or_default().to_string(), g.clone()))
        .collect()
}

async fn app_traffic(fleet: &ServedFleet, node: &str) -> AppTraffic {
    let status = fleet.status(node).await;
    status.apps.get(APP).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_report_matches_the_loadgen_to_the_byte() {
    let mut fleet = ServedFleet::configure(&FleetSpec {
        metadata: true,
        ..FleetSpec::default()
    });
    fleet.serve_all("info");
    for node in [PUB_NODE, SUB_NODE] {
        fleet.wait_ready(node).await;
    }

    let nl = fleet.client_ip("NL").to_string();
    let args: Vec<String> = [
        "--pub-node",
        PUB_NODE,
        "--sub-node",
        SUB_NODE,
        "--publishers",
        &PUBLISHERS.to_string(),
        "--subscribers",
        &SUBSCRIBERS.to_string(),
        "--rate",
        &RATE_PPS.to_string(),
        "--duration",
        &SECONDS.to_string(),
        "--size",
        &PAYLOAD_SIZE.to_string(),
        "--bind",
        &nl,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let summary = fleet.loadgen(APP, &args).await;

    // The loadgen's own accounting: every client admitted where it was sent,
    // every subscriber got every packet of both publishers exactly once.
    assert_eq!(count(&summary, "publishers"), PUBLISHERS, "{summary}");
    assert_eq!(count(&summary, "subscribers"), SUBSCRIBERS, "{summary}");
    assert_eq!(count(&summary, "unready_subscribers"), 0, "{summary}");
    assert_eq!(count(&summary, "redirects"), 0, "{summary}");
    assert_eq!(
        summary["errors"].as_object().map(|e| e.len()),
        Some(0),
        "{summary}\nserve log:\n{}",
        fleet.log("serve")
    );
    assert_eq!(
        summary["failures"].as_object().map(|e| e.len()),
        Some(0),
        "{summary}"
    );
    assert_eq!(count(&summary, "payload_bytes"), PAYLOAD_SIZE, "{summary}");
    let sent = count(&summary, "sent");
    let planned = count(&summary, "planned");
    assert_eq!(planned, PUBLISHERS * RATE_PPS * SECONDS, "{summary}");
    // Each publisher sends at most planned/publishers, so the one that sent
    // least sent at least this many; the header arithmetic needs ≥ 64.
    let per_publisher = planned / PUBLISHERS;
    assert!(
        sent <= planned && sent >= (PUBLISHERS - 1) * per_publisher + 64,
        "every publisher sent at least 64 packets: {summary}"
    );
    let received = count(&summary, "received");
    assert_eq!(count(&summary, "expected"), SUBSCRIBERS * sent, "{summary}");
    assert_eq!(received, SUBSCRIBERS * sent, "nothing lost: {summary}");
    assert_eq!(count(&summary, "duplicates"), 0, "{summary}");
    assert_eq!(count(&summary, "late"), 0, "{summary}");

    // What the loadgen's counts imply the relays carried: every datagram is
    // `--size` payload bytes plus its media header; the publishers' node
    // received each sent datagram once, the subscribers' node sent each one
    // to every subscriber (received = expected, no duplicates or late ones,
    // so the relay wrote exactly what was received).
    let published_bytes = sent * PAYLOAD_SIZE + media_header_bytes(sent, PUBLISHERS);
    let delivered_bytes = SUBSCRIBERS * published_bytes;

    // The relays' live counters, before shutdown. /status counts media from
    // clients and peers alike: the publishers' node sent each datagram once
    // over the mesh (a fan-out tree), and the subscribers' node received it once.
    let pub_traffic = app_traffic(&fleet, PUB_NODE).await;
    let sub_traffic = app_traffic(&fleet, SUB_NODE).await;
    assert_eq!(
        pub_traffic,
        AppTraffic {
            packets_in: sent,
            packets_out: sent,
            bytes_in: published_bytes,
            bytes_out: published_bytes,
        },
        "{PUB_NODE} /status (expected from the loadgen: {summary})"
    );
    assert_eq!(
        sub_traffic,
        AppTraffic {
            packets_in: sent,
            packets_out: received,
            bytes_in: published_bytes,
            bytes_out: delivered_bytes,
        },
        "{SUB_NODE} /status (expected from the loadgen: {summary})"
    );

    // A clean shutdown closes the sessions and flushes every event.
    fleet.signal("serve", "-TERM");
    let exit = fleet.wait_exit("serve", Duration::from_secs(20)).await;
    assert!(
        exit.success(),
        "serve exits cleanly on SIGTERM: {exit}\n{}",
        fleet.log("serve")
    );

    // Per node: the publishers' sessions only received, the subscribers'
    // sessions only sent (sessions count client traffic, not the mesh).
    let by_node = metadata_report(&fleet, &["--app", APP, "--by", "node"]);
    assert_eq!(by_node["app"], APP, "{by_node}");
    let nodes = groups(&by_node);
    assert_eq!(
        nodes.keys().collect::<Vec<_>>(),
        vec![SUB_NODE, PUB_NODE],
        "only the two nodes the clients used recorded sessions: {by_node}"
    );
    for (node, sessions, bytes_in, bytes_out) in [
        (PUB_NODE, PUBLISHERS, published_bytes, 0),
        (SUB_NODE, SUBSCRIBERS, 0, delivered_bytes),
    ] {
        let group = &nodes[node];
        assert_eq!(count(group, "sessions"), sessions, "{node}: {group}");
        assert_eq!(count(group, "bytes_in"), bytes_in, "{node}: {group}");
        assert_eq!(count(group, "bytes_out"), bytes_out, "{node}: {group}");
        assert_eq!(group["refusals"], serde_json::json!({}), "{node}: {group}");
        // Quality samples every second over a session of more than SECONDS.
        assert!(
            count(group, "quality_samples") >= sessions,
            "{node}: {group}"
        );
        assert!(group["rtt_ms"]["p50"].as_f64().is_some(), "{node}: {group}");
        let minutes = group["participant_minutes"].as_f64().unwrap_or_default();
        let at_least = (sessions * SECONDS) as f64 / 60.0;
        assert!(
            minutes >= at_least && minutes < 10.0 * at_least,
            "{node}: {sessions} sessions of a little over {SECONDS} s: {group}"
        );
    }

    // The whole run, by region (both nodes are in `eu`) and by day (summed,
    // in case the run straddled midnight UTC): the same totals.
    for by in ["region", "day"] {
        let report = metadata_report(&fleet, &["--app", APP, "--by", by]);
        let all = groups(&report);
        if by == "region" {
            assert_eq!(all.keys().collect::<Vec<_>>(), ["eu"], "{report}");
        }
        let total = |field: &str| all.values().map(|g| count(g, field)).sum::<u64>();
        assert_eq!(
            total("sessions"),
            PUBLISHERS + SUBSCRIBERS,
            "by {by}: {report}"
        );
        assert_eq!(total("bytes_in"), published_bytes, "by {by}: {report}");
        assert_eq!(total("bytes_out"), delivered_bytes, "by {by}: {report}");
    }

    // The app filter is real: another app has nothing in this store.
    let other = metadata_report(&fleet, &["--app", "globex-media"]);
    assert_eq!(other["groups"], serde_json::json!([]), "{other}");

    // Every client left cleanly (GOODBYE, then a close with code 0): no
    // session may be billed as an abnormal close.
    for (node, group) in &nodes {
        assert_eq!(
            group["close_codes"],
            serde_json::json!({}),
            "{node}: a clean leave recorded as an abnormal close: {group}"
        );
    }
}
