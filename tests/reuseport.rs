//! A fleet whose nodes each run two QUIC endpoints on their listen port
//! (`[limits] quic_endpoints = 2`, `SO_REUSEPORT`): clients spread over
//! both by the kernel's 4-tuple hash are all admitted and served, and mesh
//! links, dialed from their own connected sockets on the listen address,
//! come up and carry media across two hops.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use georelay::auth::Role;
use georelay::client::{Client, Event};
use georelay::wire::TrackKind;
use support::events::track_ready;
use support::fleet::{FleetSpec, TestFleet};

const SUBSCRIBERS_PER_NODE: usize = 12;
const PACKETS: u64 = 200;

async fn subscribers(fleet: &TestFleet, node: &str) -> Vec<Client> {
    let mut subscribers = Vec::new();
    for i in 0..SUBSCRIBERS_PER_NODE {
        let user = format!("{node}-viewer-{i}");
        let (app, channel) = ("globex-media", "keynote");
        let sub = fleet.connect(node, app, channel, &user, Role::Subscribe, None);
        let sub = sub
            .await
            .expect("every client is admitted, whichever endpoint it hashed to");
        sub.subscribe().await.expect("subscribe");
        subscribers.push(sub);
    }
    subscribers
}

/// Distinct sequence numbers of `track`'s media, until `want` arrived or
/// `limit` passed.
async fn distinct_media(client: &mut Client, track: u64, want: u64, limit: Duration) -> u64 {
    let deadline = georelay::clock::timer_now() + limit;
    let mut seen = std::collections::BTreeSet::new();
    while (seen.len() as u64) < want {
        match tokio::time::timeout_at(deadline, client.events().next()).await {
            Ok(Some(Event::Media { header, .. })) if header.track == track => {
                seen.insert(header.seq);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    seen.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_endpoints_per_port_serve_every_client_and_the_mesh() {
    let fleet = TestFleet::start(FleetSpec {
        extra: "[limits]\nquic_endpoints = 2\n".into(),
        ..Default::default()
    })
    .await;
    // Local to the publisher, and two hops away (eu-fra-1 -> uk-lon-1 ->
    // eu-ams-1, globex-media's cheapest allowed path).
    let mut local = subscribers(&fleet, "eu-fra-1").await;
    let mut remote = subscribers(&fleet, "eu-ams-1").await;
    let (app, channel) = ("globex-media", "keynote");
    let speaker = fleet.connect("eu-fra-1", app, channel, "speaker", Role::Publish, None);
    let publisher = speaker.await.expect("publisher");
    let track = publisher.announce(TrackKind::Video, false, "stage").await;
    let track = track.expect("announce");
    for sub in local.iter_mut().chain(remote.iter_mut()) {
        let added = track_ready(sub).await;
        assert_eq!(added.track, track, "the track reaches every subscriber");
    }
    for seq in 0..PACKETS {
        publisher
            .send_media(track, seq, seq, b"payload")
            .expect("send");
        if seq % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for (where_, subs) in [("local", &mut local), ("two hops away", &mut remote)] {
        for sub in subs.iter_mut() {
            let seen = distinct_media(sub, track, PACKETS, Duration::from_secs(5)).await;
            assert!(
                seen >= PACKETS - 2,
                "a {where_} subscriber gets the stream: {seen} of {PACKETS}"
            );
        }
    }
    let lon = fleet.status("uk-lon-1").await.apps["globex-media"];
    assert_eq!(lon.packets_in, PACKETS, "the transit node got every packet");
    assert_eq!(lon.packets_out, PACKETS, "and forwarded each once");
    let fra = fleet.status("eu-fra-1").await;
    assert_eq!(
        fra.sessions,
        SUBSCRIBERS_PER_NODE as u64 + 1,
        "both endpoints' sessions count in one node"
    );
    fleet.fleet.shutdown().await;
}
