//! What the relay records as operational metadata, end to end: a session's
//! open and close (with its traffic, matching `/status`), its track, periodic
//! quality samples (loss, bitrates, RTT, a publisher's jitter), every
//! geofence decision, and mesh links; and that the client address is stored
//! minimised.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use georelay::auth::Role;
use georelay::client::Event;
use georelay::metadata::{EventKind, GeofenceDecision, SqliteStore};
use georelay::wire::TrackKind;
use support::fleet::{FleetSpec, TestFleet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_tracks_quality_and_decisions_are_recorded() {
    let spec = FleetSpec {
        metadata: true,
        ..FleetSpec::default()
    };
    let fleet = TestFleet::start_nodes(spec, &["eu-fra-1", "eu-ams-1", "uk-lon-1"]).await;
    let mut subscriber = fleet
        .connect(
            "eu-fra-1",
            "acme-health",
            "clinic",
            "doctor",
            Role::Subscribe,
            Some("DE"),
        )
        .await
        .expect("subscriber");
    subscriber.subscribe().await.expect("subscribe");
    let publisher = fleet
        .connect(
            "eu-fra-1",
            "acme-health",
            "clinic",
            "patient",
            Role::Publish,
            Some("NL"),
        )
        .await
        .expect("publisher");
    let refused = fleet
        .connect(
            "eu-fra-1",
            "acme-health",
            "clinic",
            "spy",
            Role::Subscribe,
            Some("RU"),
        )
        .await;
    assert_eq!(
        refused.expect_err("denied").code(),
        Some(georelay::error::ErrorCode::GeofenceDenied)
    );
    let track = publisher
        .announce(TrackKind::Audio, false, "voice")
        .await
        .expect("announce");
    // 2.5 s of 50 pps spans at least two 1 s quality samples.
    let started = georelay::clock::timer_now();
    let mut seq = 0;
    while started.elapsed() < Duration::from_millis(2_500) {
        let now_us = started.elapsed().as_micros() as u64;
        publisher
            .send_media(track, seq, now_us, &[0u8; 160])
            .expect("send");
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut received = 0;
    let until = georelay::clock::timer_now() + Duration::from_millis(300);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, subscriber.events().next()).await {
        if matches!(event, Event::Media { .. }) {
            received += 1;
        }
    }
    assert!(received as u64 >= seq - 1, "delivered {received} of {seq}");
    let status = fleet.status("eu-fra-1").await.apps["acme-health"];
    publisher.close().await;
    subscriber.close().await;
    let hub = &fleet.fleet.node("eu-fra-1").expect("node").hub;
    support::events::until(Duration::from_secs(5), "both sessions ended", || async {
        hub.session_count() == 0
    })
    .await;
    let dir = fleet.dir.path().join("metadata");
    fleet.fleet.shutdown().await;
    fleet.metadata.shutdown().await.expect("metadata flushed");

    let events = SqliteStore::open_existing(&dir)
        .expect("store")
        .read_events(0, None)
        .expect("read");
    let fra: Vec<_> = events
        .iter()
        .filter(|e| e.node.as_str() == "eu-fra-1")
        .collect();
    let opened: Vec<_> = fra
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SessionOpened {
                session_id,
                user,
                client_country,
                client_ip,
                ..
            } => Some((*session_id, user.clone(), *client_country, *client_ip)),
            _ => None,
        })
        .collect();
    assert_eq!(opened.len(), 2, "two sessions opened on fra: {opened:?}");
    for (_, user, country, ip) in &opened {
        let network = ip.network().expect("truncated, not dropped");
        assert_eq!(network.prefix_len(), 24, "{user}: IPv4 minimised to /24");
        assert!(
            ip.full_address().is_none(),
            "{user}: the full address is not stored"
        );
        assert!(country.is_some(), "{user}: country recorded");
    }
    let closed: Vec<_> = fra
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SessionClosed {
                bytes_in,
                bytes_out,
                packets_in,
                packets_out,
                ..
            } => Some((*bytes_in, *bytes_out, *packets_in, *packets_out)),
            _ => None,
        })
        .collect();
    assert_eq!(closed.len(), 2, "both sessions closed: {closed:?}");
    let bytes_in: u64 = closed.iter().map(|c| c.0).sum();
    let bytes_out: u64 = closed.iter().map(|c| c.1).sum();
    assert_eq!(
        bytes_in, status.bytes_in,
        "session bytes in add up to /status"
    );
    assert_eq!(
        bytes_out, status.bytes_out,
        "session bytes out add up to /status"
    );

    let samples: Vec<_> = fra
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::QualitySample {
                bitrate_in_bps,
                bitrate_out_bps,
                rtt_ms,
                jitter_ms,
                loss_ratio,
                ..
            } => Some((
                *bitrate_in_bps,
                *bitrate_out_bps,
                *rtt_ms,
                *jitter_ms,
                *loss_ratio,
            )),
            _ => None,
        })
        .collect();
    assert!(
        samples.len() >= 4,
        "two sessions, at least two samples each: {samples:?}"
    );
    assert!(
        samples.iter().any(|s| s.0 > 50_000 && s.3.is_some()),
        "the publisher's bitrate in and jitter: {samples:?}"
    );
    assert!(
        samples.iter().any(|s| s.1 > 50_000),
        "the subscriber's bitrate out: {samples:?}"
    );
    assert!(
        samples
            .iter()
            .all(|s| s.2 > 0.0 && (0.0..=1.0).contains(&s.4)),
        "RTT and loss: {samples:?}"
    );

    let decisions: Vec<&GeofenceDecision> = fra
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Geofence { decision, .. } => Some(decision),
            _ => None,
        })
        .collect();
    assert_eq!(
        decisions
            .iter()
            .filter(|d| matches!(d, GeofenceDecision::Admitted))
            .count(),
        2
    );
    assert!(decisions.iter().any(|d| matches!(d, GeofenceDecision::Denied { code, .. } if *code == georelay::error::ErrorCode::GeofenceDenied)));
    assert!(
        fra.iter().any(
            |e| matches!(&e.kind, EventKind::TrackPublished { track, .. } if track == "voice")
        )
    );
    assert!(
        fra.iter().any(
            |e| matches!(&e.kind, EventKind::LinkUp { peer, .. } if peer.as_str() == "eu-ams-1")
        )
    );
}
