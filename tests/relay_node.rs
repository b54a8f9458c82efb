//! The relay on one node over real QUIC on loopback: publish/subscribe of
//! datagram media and reliable messages, late joiners, unsubscribe, slow
//! subscribers, every refusal code, and the admin counters.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use georelay::auth::Role;
use georelay::client::{Client, Event};
use georelay::wire::TrackKind;
use support::fleet::{FleetSpec, TestFleet};

/// Waits for the next event matching `pick`, up to `limit`.
async fn next_matching<T>(client: &mut Client, limit: Duration, mut pick: impl FnMut(Event) -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, client.events().next()).await.ok()??;
        if let Some(found) = pick(event) {
            return Some(found);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_and_messages_reach_three_subscribers() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let node = "eu-fra-1";
    let mut subscribers = Vec::new();
    for i in 0..3 {
        let sub = fleet
            .connect(node, "acme-health", "room-1", &format!("sub-{i}"), Role::Subscribe, Some("DE"))
            .await
            .expect("subscriber admitted");
        sub.subscribe().await.expect("subscribe");
        subscribers.push(sub);
    }
    let publisher = fleet
        .connect(node, "acme-health", "room-1", "pub", Role::Publish, Some("NL"))
        .await
        .expect("publisher admitted");
    let track = publisher.announce(TrackKind::Audio, false, "mic").await.expect("announce");
    for sub in &mut subscribers {
        let added = next_matching(sub, Duration::from_secs(5), |e| match e {
            Event::TrackAdded(info) => Some(info),
            _ => None,
        })
        .await
        .expect("track announced to subscriber");
        assert_eq!(added.track, track);
        assert_eq!(added.publisher, "pub");
    }
    const PACKETS: u64 = 200;
    for seq in 0..PACKETS {
        publisher.send_media(track, seq, seq * 20_000, format!("frame-{seq}").as_bytes()).expect("send");
        if seq % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    publisher.send_message(track, b"hello, reliable world").await.expect("message");
    for sub in &mut subscribers {
        let mut seen = std::collections::BTreeSet::new();
        let mut message = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while (seen.len() < PACKETS as usize || message.is_none()) && tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, sub.events().next()).await {
                Ok(Some(Event::Media { header, payload })) => {
                    assert_eq!(header.track, track);
                    assert_eq!(payload, format!("frame-{}", header.seq).as_bytes());
                    seen.insert(header.seq);
                }
                Ok(Some(Event::Message { track: t, payload })) => {
                    assert_eq!(t, track);
                    message = Some(payload);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        assert_eq!(seen.len(), PACKETS as usize, "every datagram delivered on loopback");
        assert_eq!(message.as_deref(), Some(&b"hello, reliable world"[..]));
    }
    let status = fleet.status(node).await;
    let acme = status.apps.get("acme-health").expect("acme counters");
    assert_eq!(acme.packets_in, PACKETS + 1, "200 datagrams and 1 message in");
    assert_eq!(acme.packets_out, 3 * (PACKETS + 1), "each fanned out to 3 subscribers");
    assert_eq!(status.sessions, 4);
    fleet.fleet.shutdown().await;
}
