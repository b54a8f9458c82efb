//! Shared fixtures of the audit and residency tests: a three-region fleet
//! and ten minutes of traffic records written through the real recorder.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use georelay::clock::{Clock, ManualClock, SharedClock, SystemClock};
use georelay::config::{Fleet, MetadataConfig};
use georelay::ids::{AppId, NodeId};
use georelay::metadata::{
    Direction, Event, EventKind, Recorder, StoreDsns, TrafficCounts, TrafficKey, TrafficPeer,
    TrafficRecorder, TrafficSnapshot, start_with_dsns,
};

pub(crate) const MINUTE: u64 = 60_000;
/// The audited app: EU only.
pub(crate) const APP: &str = "acme";

/// fra and ams in the EU, lon in the UK, iad in the US; acme is EU-only,
/// globex allows the EU and the UK.
pub(crate) const FLEET: &str = r#"
[regions.eu]
countries = ["DE", "NL"]
[regions.uk]
countries = ["GB"]
[regions.us]
countries = ["US"]
[nodes.eu-fra-1]
region = "eu"
listen = "127.10.0.1:4433"
admin = "127.10.0.1:9090"
[nodes.eu-ams-1]
region = "eu"
listen = "127.11.0.1:4433"
admin = "127.11.0.1:9090"
[nodes.uk-lon-1]
region = "uk"
listen = "127.40.0.1:4433"
admin = "127.40.0.1:9090"
[nodes.us-iad-1]
region = "us"
listen = "127.20.0.1:4433"
admin = "127.20.0.1:9090"
[[links]]
between = ["eu-fra-1", "eu-ams-1"]
rtt_ms = 30
[[links]]
between = ["eu-fra-1", "uk-lon-1"]
rtt_ms = 12
[[links]]
between = ["uk-lon-1", "us-iad-1"]
rtt_ms = 70
[apps.acme]
secret = "dev"
allow_regions = ["eu"]
[apps.globex]
secret = "dev"
allow_regions = ["eu", "uk"]
"#;

pub(crate) fn fleet() -> Fleet {
    Fleet::parse(FLEET, Path::new("/srv/georelay/regions.toml")).expect("valid fixture fleet")
}

/// The start of the fixture's ten minutes: 30 minutes ago, on a minute.
pub(crate) fn fixture_start_ms() -> u64 {
    let now = SystemClock.now_unix_ms();
    (now - 30 * MINUTE) / MINUTE * MINUTE
}

fn key(app: &str, direction: Direction, peer: &str) -> TrafficKey {
    TrafficKey {
        app: AppId::from(app),
        direction,
        peer: TrafficPeer::parse(peer).expect("peer"),
    }
}

/// (app, direction, peer).
type Flow = (&'static str, Direction, &'static str);

/// Ten one-minute intervals from `start_ms` on every node but iad (which
/// never reports): fra receives acme from its clients and forwards it to
/// ams, ams delivers it to its clients; globex goes fra → lon (transit,
/// allowed) → lon's clients; lon carries no acme. Every minute adds
/// 10 packets of 100 bytes per flow.
pub(crate) fn record_fixture(recorder: &Recorder, fleet: &Fleet, start_ms: u64) {
    let flows: [(&str, &[Flow]); 3] = [
        (
            "eu-fra-1",
            &[
                (APP, Direction::In, "clients"),
                (APP, Direction::Out, "node:eu-ams-1"),
                ("globex", Direction::In, "clients"),
                ("globex", Direction::Out, "node:uk-lon-1"),
            ],
        ),
        (
            "eu-ams-1",
            &[
                (APP, Direction::In, "node:eu-fra-1"),
                (APP, Direction::Out, "clients"),
            ],
        ),
        (
            "uk-lon-1",
            &[
                ("globex", Direction::In, "node:eu-fra-1"),
                ("globex", Direction::Out, "clients"),
            ],
        ),
    ];
    for (node, node_flows) in flows {
        let mut traffic =
            TrafficRecorder::start(recorder.clone(), fleet, &NodeId::from(node), start_ms)
                .expect("a node of the fleet");
        for minute in 1..=10u64 {
            let snapshot: TrafficSnapshot = node_flows
                .iter()
                .map(|(app, direction, peer)| {
                    let counts = TrafficCounts {
                        packets: 10 * minute,
                        bytes: 1000 * minute,
                    };
                    (key(app, *direction, peer), counts)
                })
                .collect();
            traffic.record_interval(start_ms + minute * MINUTE, &snapshot);
        }
    }
}

/// Records the fixture through the real metadata pipeline (`start`,
/// the writer, the stores) and shuts it down, which flushes everything.
pub(crate) async fn write_fixture(config: &MetadataConfig, dsns: StoreDsns, extra: Vec<Event>) {
    let fleet = fleet();
    let clock: SharedClock = Arc::new(ManualClock::new(SystemClock.now_unix_ms()));
    let (recorder, handle) = start_with_dsns(config, BTreeMap::new(), clock, dsns)
        .await
        .expect("metadata starts");
    record_fixture(&recorder, &fleet, fixture_start_ms());
    for event in extra {
        recorder.record(event);
    }
    let stats = handle.shutdown().await.expect("metadata stops");
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert_eq!(stats.unsent_postgres, 0, "{stats:?}");
}

/// A hand-made record: uk-lon-1 received 7 packets (700 bytes) of the
/// EU-only app from eu-fra-1, in the fixture's fifth minute.
pub(crate) fn violating_record(start_ms: u64) -> Event {
    let fleet = fleet();
    Event {
        at_ms: start_ms + 4 * MINUTE,
        node: NodeId::from("uk-lon-1"),
        region: "uk".into(),
        app: Some(AppId::from(APP)),
        kind: EventKind::Traffic {
            interval_ms: MINUTE,
            direction: Direction::In,
            peer: TrafficPeer::Node(NodeId::from("eu-fra-1")),
            packets: 7,
            bytes: 700,
            policy_version: fleet.policy_version(),
        },
    }
}

/// A metadata config writing to `dir` only.
pub(crate) fn sqlite_config(dir: &Path) -> MetadataConfig {
    let mut config = MetadataConfig::default_for(dir);
    config.dir = dir.join("metadata");
    config.flush_interval_ms = 20;
    config
}
