//! Traffic records written by the relay itself: a three-node chain
//! (publisher → eu-fra-1 → uk-lon-1 → eu-ams-1 → subscriber, the cheapest
//! path of globex-media) where uk-lon-1 only forwards. With a one-hour
//! interval nothing is recorded while the media flows; the clean shutdown
//! flushes the partial interval, and each node's records match its
//! `/status` counters: transit on uk-lon-1 from and to its peers and
//! nothing from or to clients; client ingress at the publisher's node,
//! client egress at the subscriber's. Datagrams and messages both count.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use georelay::auth::Role;
use georelay::client::Event;
use georelay::metadata::{Direction, EventKind, SqliteStore, TrafficPeer};
use georelay::wire::TrackKind;
use support::fleet::{FleetSpec, TestFleet};

const CHAIN: [&str; 3] = ["eu-fra-1", "uk-lon-1", "eu-ams-1"];

/// (node, direction, peer) → (packets, bytes), summed over the records.
type Flows = BTreeMap<(String, Direction, String), (u64, u64)>;

/// `node`'s counters of globex-media once two reads 50 ms apart agree.
async fn settled(fleet: &TestFleet, node: &str) -> georelay::admin::AppTraffic {
    let deadline = georelay::clock::timer_now() + Duration::from_secs(5);
    let mut last = fleet.status(node).await.apps["globex-media"];
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = fleet.status(node).await.apps["globex-media"];
        if now == last {
            return now;
        }
        assert!(
            georelay::clock::timer_now() < deadline,
            "{node}: counters never settled"
        );
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transit_node_records_what_it_forwarded_and_shutdown_flushes_the_partial_interval() {
    let spec = FleetSpec {
        metadata: true,
        extra: "traffic_interval_secs = 3600\n".into(),
        ..FleetSpec::default()
    };
    let fleet = TestFleet::start_nodes(spec, &CHAIN).await;
    let mut subscriber = fleet
        .connect(
            "eu-ams-1",
            "globex-media",
            "show",
            "viewer",
            Role::Subscribe,
            Some("NL"),
        )
        .await
        .expect("subscriber");
    subscriber.subscribe().await.expect("subscribe");
    let publisher = fleet
        .connect(
            "eu-fra-1",
            "globex-media",
            "show",
            "host",
            Role::Publish,
            Some("DE"),
        )
        .await
        .expect("publisher");
    let track = publisher
        .announce(TrackKind::Video, false, "cam")
        .await
        .expect("announce");
    support::events::active(&mut subscriber).await;

    const DATAGRAMS: u64 = 200;
    const MESSAGES: u64 = 20;
    for seq in 0..DATAGRAMS {
        publisher
            .send_media(track, seq, seq, &[7u8; 300])
            .expect("send");
        if seq % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for n in 0..MESSAGES {
        publisher
            .send_message(track, format!("note {n}").as_bytes())
            .await
            .expect("message");
    }
    let (mut media, mut messages) = (0u64, 0u64);
    let until = georelay::clock::timer_now() + Duration::from_secs(10);
    while messages < MESSAGES {
        match tokio::time::timeout_at(until, subscriber.events().next()).await {
            Ok(Some(Event::Media { .. })) => media += 1,
            Ok(Some(Event::Message { .. })) => messages += 1,
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    assert_eq!(messages, MESSAGES, "every message arrived");
    assert!(media > 0, "media arrived through the chain");
    let mut status = BTreeMap::new();
    for node in CHAIN {
        status.insert(node, settled(&fleet, node).await);
    }
    assert_eq!(
        fleet.status("uk-lon-1").await.sessions,
        0,
        "lon has no session"
    );

    let dir = fleet.dir.path().join("metadata");
    let store_before = SqliteStore::open_existing(&dir)
        .expect("store")
        .read_events_of_kinds(0, &["traffic", "traffic_interval"])
        .expect("read");
    assert!(
        store_before.is_empty(),
        "nothing recorded before the interval or the shutdown: {store_before:?}"
    );
    publisher.close().await;
    subscriber.close().await;
    fleet.fleet.shutdown().await;
    fleet.metadata.shutdown().await.expect("metadata flushed");

    let events = SqliteStore::open_existing(&dir)
        .expect("store")
        .read_events(0, None)
        .expect("read");
    let mut flows = Flows::new();
    let mut markers = BTreeMap::new();
    for event in &events {
        match &event.kind {
            EventKind::Traffic {
                direction,
                peer,
                packets,
                bytes,
                policy_version,
                ..
            } => {
                assert_eq!(event.app.as_ref().map(|a| a.as_str()), Some("globex-media"));
                assert_eq!(*policy_version, fleet.policy.version);
                let entry = flows
                    .entry((event.node.to_string(), *direction, peer.to_string()))
                    .or_default();
                entry.0 += packets;
                entry.1 += bytes;
            }
            EventKind::TrafficInterval { interval_ms, .. } => {
                *markers.entry(event.node.to_string()).or_insert(0) += 1;
                assert!(
                    *interval_ms < 3_600_000,
                    "a partial interval: {interval_ms} ms"
                );
            }
            _ => {}
        }
    }
    for node in CHAIN {
        assert_eq!(markers.get(node), Some(&1), "{node}: one partial interval");
    }
    let flow = |node: &str, direction, peer: TrafficPeer| {
        flows
            .get(&(node.to_string(), direction, peer.to_string()))
            .copied()
            .unwrap_or_default()
    };
    let node = |id: &str| TrafficPeer::Node(georelay::ids::NodeId::new(id));
    let packets = DATAGRAMS + MESSAGES;
    let in_flows: BTreeMap<&str, (u64, u64)> = [
        (
            "eu-fra-1",
            flow("eu-fra-1", Direction::In, TrafficPeer::Clients),
        ),
        (
            "uk-lon-1",
            flow("uk-lon-1", Direction::In, node("eu-fra-1")),
        ),
        (
            "eu-ams-1",
            flow("eu-ams-1", Direction::In, node("uk-lon-1")),
        ),
    ]
    .into();
    let out_flows: BTreeMap<&str, (u64, u64)> = [
        (
            "eu-fra-1",
            flow("eu-fra-1", Direction::Out, node("uk-lon-1")),
        ),
        (
            "uk-lon-1",
            flow("uk-lon-1", Direction::Out, node("eu-ams-1")),
        ),
        (
            "eu-ams-1",
            flow("eu-ams-1", Direction::Out, TrafficPeer::Clients),
        ),
    ]
    .into();
    assert_eq!(in_flows["eu-fra-1"].0, packets, "{flows:#?}");
    for node in CHAIN {
        let counted = status[node];
        assert_eq!(
            in_flows[node],
            (counted.packets_in, counted.bytes_in),
            "{node}: records in = /status in ({flows:#?})"
        );
        assert_eq!(
            out_flows[node],
            (counted.packets_out, counted.bytes_out),
            "{node}: records out = /status out ({flows:#?})"
        );
        assert!(in_flows[node].0 > 0 && out_flows[node].0 > 0, "{node}");
        let node_flows = flows.keys().filter(|(n, _, _)| n == node).count();
        assert_eq!(node_flows, 2, "{node}: exactly one flow in and one out");
    }
    assert_eq!(
        flow("uk-lon-1", Direction::In, TrafficPeer::Clients),
        (0, 0),
        "transit: nothing from clients"
    );
    assert_eq!(
        flow("uk-lon-1", Direction::Out, TrafficPeer::Clients),
        (0, 0),
        "transit: nothing to clients"
    );
}
