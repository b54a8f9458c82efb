//! The evidence of a whole fleet, end to end: every node of the test
//! topology (six nodes in four regions) as its own `georelay serve --node`
//! process with certificate files from `georelay certs`, one metadata
//! directory, traffic records every second.
//!
//! Two apps stream steadily from eu-fra-1 to eu-ams-1: acme-health (EU
//! only: the direct fra–ams link) and globex-media (every region but apac:
//! its cheapest path crosses uk-lon-1 as pure transit). Mid-stream,
//! `georelay fleet reload` rolls out a config that removes the UK from
//! globex-media; its media moves to the direct link. Then every process is
//! stopped with SIGTERM (drain, partial interval flushed), and `georelay
//! metadata audit --json` must show: acme-health on fra and ams only, zero
//! on every non-EU node; globex-media's transit on uk-lon-1, recorded only
//! under the old version and before the rollout; no violation; exit 0. The
//! nodes are restarted and stopped again, and the audits are unchanged: the
//! records survived.

mod support;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use georelay::client::{Client, Event};
use georelay::config::Fleet;
use georelay::metadata::{Direction, EventKind, SqliteStore, TrafficPeer};
use serde_json::Value;
use support::fleet::{FleetSpec, NODES};
use support::served::ServedFleet;
use tokio::task::JoinHandle;

const EU_ONLY: &str = "acme-health";
const VIA_UK: &str = "globex-media";

/// Runs `georelay` with `args` in `dir`.
async fn georelay(dir: &Path, args: &[&str]) -> Output {
    let (dir, args): (std::path::PathBuf, Vec<String>) =
        (dir.to_owned(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_georelay"))
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("georelay runs")
    })
    .await
    .expect("join")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `metadata audit --app APP --json` over the fleet's directory: exit 0
/// and the report.
async fn audit(fleet: &ServedFleet, app: &str) -> Value {
    let dir = fleet.metadata_dir();
    let output = georelay(
        fleet.path(),
        &[
            "metadata",
            "audit",
            "--app",
            app,
            "--since",
            "1h",
            "--dir",
            dir.to_str().expect("utf-8"),
            "--json",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{app}: {}", text(&output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", text(&output)))
}

/// (packets in, packets out, bytes in, bytes out, mesh packets) of `node`.
fn carried(audit: &Value, node: &str) -> [u64; 5] {
    let entry = audit["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["node"] == node)
        .unwrap_or_else(|| panic!("{node} not in {audit}"));
    [
        "packets_in",
        "packets_out",
        "bytes_in",
        "bytes_out",
        "mesh_packets",
    ]
    .map(|field| {
        entry[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {entry}"))
    })
}

/// A publisher sending 200 datagrams a second until `stop`; the count sent.
fn stream(
    publisher: Client,
    track: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<(Client, u64)> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(5));
        let mut seq = 0;
        while !*stop.borrow() {
            ticks.tick().await;
            publisher
                .send_media(track, seq, seq, &[5u8; 200])
                .expect("send");
            seq += 1;
        }
        (publisher, seq)
    })
}

/// A subscriber counting the media it receives into `received` until `stop`.
fn count(
    mut subscriber: Client,
    received: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<Client> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = subscriber.events().next() => match event {
                    Some(Event::Media { .. }) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = stop.changed() => break,
            }
        }
        subscriber
    })
}

/// Waits (at most 20 s) until `counter` reaches `at_least`.
async fn reaches(counter: &AtomicU64, at_least: u64, what: &str) {
    support::events::until(Duration::from_secs(20), what, || async {
        counter.load(Ordering::Relaxed) >= at_least
    })
    .await;
}

/// Starts every node, each in its own process, and waits until every
/// configured link is up.
async fn serve_every_node(fleet: &mut ServedFleet) {
    fleet.serve_nodes(&NODES, "info");
    for node in NODES {
        fleet.wait_ready(node).await;
    }
}

/// SIGTERM to every node; each drains and exits 0.
async fn stop_every_node(fleet: &mut ServedFleet) {
    for node in NODES {
        fleet.signal(node, "-TERM");
    }
    for node in NODES {
        let status = fleet.wait_exit(node, Duration::from_secs(20)).await;
        assert!(status.success(), "{node}: {status}\n{}", fleet.log(node));
    }
}

/// What the audits must show after the run (and again after a restart).
fn check_audits(eu_only: &Value, via_uk: &Value, old: &str, new: &str) {
    for audit in [eu_only, via_uk] {
        assert_eq!(audit["violations"], serde_json::json!([]), "{audit}");
    }
    for node in ["eu-fra-1", "eu-ams-1"] {
        let [packets_in, packets_out, bytes_in, bytes_out, _] = carried(eu_only, node);
        assert!(
            packets_in > 0 && packets_out > 0 && bytes_in > 0 && bytes_out > 0,
            "{EU_ONLY} on {node}: {eu_only}"
        );
    }
    for node in ["uk-lon-1", "us-iad-1", "us-sfo-1", "ap-sin-1"] {
        assert_eq!(
            carried(eu_only, node),
            [0; 5],
            "{EU_ONLY} never on the non-EU node {node}: {eu_only}"
        );
    }
    let lon = carried(via_uk, "uk-lon-1");
    assert!(
        lon[0] > 0 && lon[1] > 0 && lon[4] == lon[0] + lon[1],
        "{VIA_UK}: uk-lon-1 carried it as pure transit (every packet from or to a node): {via_uk}"
    );
    let lon_entry = via_uk["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["node"] == "uk-lon-1")
        .expect("uk-lon-1");
    assert_eq!(lon_entry["allowed"], false, "not under the new version");
    assert_eq!(lon_entry["allowed_under"], serde_json::json!([old]));
    let versions: Vec<&str> = via_uk["policy_versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        versions.contains(&old) && versions.contains(&new),
        "{versions:?}"
    );
    for node in ["us-iad-1", "us-sfo-1", "ap-sin-1"] {
        assert_eq!(carried(via_uk, node), [0; 5], "{VIA_UK} on {node}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_processes_records_transit_a_rollout_and_survives_a_restart() {
    let spec = FleetSpec {
        metadata: true,
        extra: "traffic_interval_secs = 1\n".into(),
        ..FleetSpec::default()
    };
    let mut fleet = ServedFleet::configure(&spec);
    fleet.use_certs(&spec);
    let config = std::fs::read_to_string(fleet.config()).expect("config");
    let rollout = config.replacen(
        "[apps.globex-media]\nsecret = \"globex-test-secret\"\ndeny_regions = [\"apac\"]",
        "[apps.globex-media]\nsecret = \"globex-test-secret\"\ndeny_regions = [\"apac\", \"uk\"]",
        1,
    );
    assert_ne!(rollout, config, "the rollout removes the UK from {VIA_UK}");
    let rollout_path = fleet.path().join("rollout.toml");
    std::fs::write(&rollout_path, &rollout).expect("rollout file");
    let old = Fleet::load(&fleet.config())
        .expect("config")
        .policy_version()
        .to_string();
    let new = Fleet::load(&rollout_path)
        .expect("rollout")
        .policy_version()
        .to_string();
    serve_every_node(&mut fleet).await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut received = Vec::new();
    for app in [EU_ONLY, VIA_UK] {
        let (publisher, track, subscriber) =
            fleet.pub_sub(app, "live", "eu-fra-1", "eu-ams-1").await;
        let counter = Arc::new(AtomicU64::new(0));
        senders.push(stream(publisher, track, stopped.clone()));
        receivers.push(count(subscriber, Arc::clone(&counter), stopped.clone()));
        received.push(counter);
    }
    reaches(&received[0], 200, "EU-only media reaches ams").await;
    reaches(&received[1], 200, "media via London reaches ams").await;
    let lon_before = fleet.status("uk-lon-1").await.apps[VIA_UK];
    assert!(
        lon_before.packets_in >= 200,
        "London is the transit: {lon_before:?}"
    );

    // Mid-stream: the rollout, pushed to every node's admin API.
    let output = georelay(
        fleet.path(),
        &[
            "fleet",
            "reload",
            "--config",
            "rollout.toml",
            "--json",
            "--timeout-ms",
            "5000",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let delivered_at_rollout = received[1].load(Ordering::Relaxed);
    for node in NODES {
        assert_eq!(fleet.status(node).await.policy_version, new, "{node}");
    }
    // globex-media moves to the direct link; London carries none of it.
    let lon_after = fleet.status("uk-lon-1").await.apps[VIA_UK];
    reaches(
        &received[1],
        delivered_at_rollout + 300,
        "media of the app resumes over fra–ams after the rollout",
    )
    .await;
    reaches(
        &received[0],
        received[0].load(Ordering::Relaxed) + 100,
        "EU-only media flows on",
    )
    .await;
    assert_eq!(
        fleet.status("uk-lon-1").await.apps[VIA_UK],
        lon_after,
        "uk-lon-1 carries nothing of {VIA_UK} after the rollout"
    );

    let _ = stop.send(true);
    for sender in senders {
        let (publisher, sent) = sender.await.expect("sender");
        assert!(sent > 0);
        publisher.close().await;
    }
    for receiver in receivers {
        receiver.await.expect("receiver").close().await;
    }
    stop_every_node(&mut fleet).await;

    let eu_only = audit(&fleet, EU_ONLY).await;
    let via_uk = audit(&fleet, VIA_UK).await;
    check_audits(&eu_only, &via_uk, &old, &new);
    for (app, audit) in [(EU_ONLY, &eu_only), (VIA_UK, &via_uk)] {
        for node in NODES {
            println!(
                "audit {app} {node}: [in, out, bytes in, bytes out, mesh] = {:?}",
                carried(audit, node)
            );
        }
    }

    // London's records of the app: all under the old version, all before
    // it started enforcing the new one.
    let events = SqliteStore::open_existing(fleet.metadata_dir())
        .expect("store")
        .read_events(0, None)
        .expect("read");
    let lon_switched_at = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Policy { version, .. }
                if e.node.as_str() == "uk-lon-1" && version.to_string() == new =>
            {
                Some(e.at_ms)
            }
            _ => None,
        })
        .expect("uk-lon-1 recorded the new policy when it reloaded");
    let lon_records: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Traffic {
                interval_ms,
                direction,
                peer,
                policy_version,
                packets,
                ..
            } if e.node.as_str() == "uk-lon-1"
                && e.app.as_ref().is_some_and(|a| a.as_str() == VIA_UK) =>
            {
                Some((
                    e.at_ms,
                    *interval_ms,
                    *direction,
                    peer.clone(),
                    policy_version.to_string(),
                    *packets,
                ))
            }
            _ => None,
        })
        .collect();
    assert!(
        lon_records.len() >= 2,
        "records of London's transit: {lon_records:?}"
    );
    for (at_ms, interval_ms, direction, peer, version, _) in &lon_records {
        assert_eq!(version, &old, "{lon_records:?}");
        assert!(at_ms + interval_ms <= lon_switched_at, "{lon_records:?}");
        let expected_peer = match direction {
            Direction::In => "eu-fra-1",
            Direction::Out => "eu-ams-1",
        };
        assert_eq!(
            peer,
            &TrafficPeer::Node(georelay::ids::NodeId::new(expected_peer)),
            "{lon_records:?}"
        );
    }
    let lon_packets: u64 = lon_records.iter().map(|r| r.5).sum();
    assert_eq!(
        lon_packets,
        lon_after.packets_in + lon_after.packets_out,
        "the records hold what /status counted"
    );

    // Restart every node and stop it again: the records are still there.
    serve_every_node(&mut fleet).await;
    for node in NODES {
        assert_eq!(fleet.status(node).await.policy_version, new, "{node}");
    }
    stop_every_node(&mut fleet).await;
    let eu_only_again = audit(&fleet, EU_ONLY).await;
    let via_uk_again = audit(&fleet, VIA_UK).await;
    check_audits(&eu_only_again, &via_uk_again, &old, &new);
    for node in NODES {
        assert_eq!(
            carried(&eu_only_again, node),
            carried(&eu_only, node),
            "{node}"
        );
        assert_eq!(
            carried(&via_uk_again, node),
            carried(&via_uk, node),
            "{node}"
        );
    }
}
