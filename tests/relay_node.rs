//! The relay on one node over real QUIC on loopback: publish/subscribe of
//! datagram media and reliable messages, late joiners, unsubscribe, slow
//! subscribers, every refusal code, and the admin counters.

mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures_util::StreamExt;
use georelay::admin::{AppTraffic, StatusReport};
use georelay::auth::Role;
use georelay::client::{Client, ClientError, ClientOptions, Event, Join, Target};
use georelay::error::ErrorCode;
use georelay::ids::{AppId, NodeId, RegionId};
use georelay::wire::{MediaHeader, TrackInfo, TrackKind};
use support::events::{media_within, next_matching, track_added};
use support::fleet::{FleetSpec, TestFleet};
use support::udp_proxy::UdpProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_and_messages_reach_three_subscribers() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let node = "eu-fra-1";
    let mut subscribers = Vec::new();
    for i in 0..3 {
        let sub = fleet
            .connect(
                node,
                "acme-health",
                "room-1",
                &format!("sub-{i}"),
                Role::Subscribe,
                Some("DE"),
            )
            .await
            .expect("subscriber admitted");
        sub.subscribe().await.expect("subscribe");
        subscribers.push(sub);
    }
    let publisher = fleet
        .connect(
            node,
            "acme-health",
            "room-1",
            "pub",
            Role::Publish,
            Some("NL"),
        )
        .await
        .expect("publisher admitted");
    let track = publisher
        .announce(TrackKind::Audio, false, "mic")
        .await
        .expect("announce");
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
        publisher
            .send_media(track, seq, seq * 20_000, format!("frame-{seq}").as_bytes())
            .expect("send");
        if seq % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    publisher
        .send_message(track, b"hello, reliable world")
        .await
        .expect("message");
    for sub in &mut subscribers {
        let mut seen = std::collections::BTreeSet::new();
        let mut message = None;
        let deadline = georelay::clock::timer_now() + Duration::from_secs(5);
        while (seen.len() < PACKETS as usize || message.is_none())
            && georelay::clock::timer_now() < deadline
        {
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
        assert_eq!(
            seen.len(),
            PACKETS as usize,
            "every datagram delivered on loopback"
        );
        assert_eq!(message.as_deref(), Some(&b"hello, reliable world"[..]));
    }
    let status = fleet.status(node).await;
    let acme = status.apps.get("acme-health").expect("acme counters");
    assert_eq!(
        acme.packets_in,
        PACKETS + 1,
        "200 datagrams and 1 message in"
    );
    assert_eq!(
        acme.packets_out,
        3 * (PACKETS + 1),
        "each fanned out to 3 subscribers"
    );
    assert_eq!(status.sessions, 4);
    fleet.fleet.shutdown().await;
}

/// Waits for the next `TRACK_ADDED`, up to 5 s.
/// Collects the sequence numbers of `track`'s media until `want` distinct
/// ones arrived or `limit` passed. Other tracks' media is returned apart.
async fn receive_media(
    client: &mut Client,
    track: u64,
    want: usize,
    limit: Duration,
) -> (BTreeSet<u64>, Vec<u64>) {
    let deadline = georelay::clock::timer_now() + limit;
    let mut seen = BTreeSet::new();
    let mut other_tracks = Vec::new();
    while seen.len() < want {
        match tokio::time::timeout_at(deadline, client.events().next()).await {
            Ok(Some(Event::Media { header, .. })) if header.track == track => {
                seen.insert(header.seq);
            }
            Ok(Some(Event::Media { header, .. })) => other_tracks.push(header.track),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    (seen, other_tracks)
}

/// Sends `seqs` on `track` at about `pps` packets per second (bursts every
/// 10 ms), each payload made by `payload`.
async fn send_paced(
    publisher: &Client,
    track: u64,
    seqs: std::ops::Range<u64>,
    pps: u64,
    payload: impl Fn(u64) -> Vec<u8>,
) {
    let per_tick = (pps / 100).max(1);
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let mut seq = seqs.start;
    while seq < seqs.end {
        ticks.tick().await;
        for _ in 0..per_tick {
            if seq >= seqs.end {
                break;
            }
            publisher
                .send_media(track, seq, seq * 2_000, &payload(seq))
                .expect("send media");
            seq += 1;
        }
    }
}

/// The counters of `app` in a `/status` report (zero when absent).
fn traffic(status: &StatusReport, app: &str) -> AppTraffic {
    status.apps.get(app).copied().unwrap_or_default()
}

/// A drop counter of a `/status` report.
fn drops(status: &StatusReport, reason: &str) -> u64 {
    *status
        .drops
        .get(reason)
        .unwrap_or_else(|| panic!("/status has no drop reason {reason}: {:?}", status.drops))
}

/// The sum of every sample of Prometheus series `name` carrying all `labels`.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_text, value) = match rest.strip_prefix('{') {
                Some(inner) => inner.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let present: Vec<&str> = label_text.split(',').collect();
            let all = labels
                .iter()
                .all(|(k, v)| present.contains(&format!("{k}=\"{v}\"").as_str()));
            all.then(|| value.trim().parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A `Join` with an explicit token.
fn join(app: &str, channel: &str, token: String) -> Join {
    Join {
        app: app.to_string(),
        channel: channel.to_string(),
        token,
    }
}

/// Connects and expects a refusal, which must come promptly (a clean close,
/// never a hang until the connect timeout).
async fn refused(options: &ClientOptions, targets: &[Target], join: &Join) -> ClientError {
    let started = georelay::clock::monotonic_now();
    let result = Client::connect(options, targets, join).await;
    let elapsed = started.elapsed();
    let err = match result {
        Ok(client) => panic!("expected a refusal, was admitted by {}", client.node()),
        Err(err) => err,
    };
    assert!(
        elapsed < Duration::from_secs(2),
        "refusal took {elapsed:?}: {err}"
    );
    err
}

/// The redirect targets of a refusal.
fn redirect_of(err: &ClientError) -> Vec<Target> {
    match err {
        ClientError::Refused { redirect, .. } => redirect.clone(),
        other => panic!("not a refusal: {other}"),
    }
}

/// Waits until `node` reports `sessions` open sessions (up to 3 s).
async fn wait_sessions(fleet: &TestFleet, node: &str, sessions: u64) {
    let deadline = georelay::clock::timer_now() + Duration::from_secs(3);
    loop {
        let status = fleet.status(node).await;
        if status.sessions == sessions {
            return;
        }
        assert!(
            georelay::clock::timer_now() < deadline,
            "{node} has {} sessions, expected {sessions}",
            status.sessions
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_is_told_of_existing_tracks_then_gets_media() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let node = "eu-fra-1";
    let publisher = fleet
        .connect(
            node,
            "acme-health",
            "room-late",
            "pub",
            Role::Publish,
            Some("NL"),
        )
        .await
        .expect("publisher admitted");
    let mic = publisher
        .announce(TrackKind::Audio, false, "mic")
        .await
        .expect("announce mic");
    let cam = publisher
        .announce(TrackKind::Video, true, "cam")
        .await
        .expect("announce cam");
    // Media before anyone listens goes nowhere (the relay has counted it
    // in before the late subscriber joins).
    let before = traffic(&fleet.status(node).await, "acme-health").packets_in;
    for seq in 0..20 {
        publisher.send_media(mic, seq, 0, b"early").expect("send");
    }
    support::events::until(
        Duration::from_secs(5),
        "the early media reached the relay",
        || async { traffic(&fleet.status(node).await, "acme-health").packets_in >= before + 20 },
    )
    .await;

    let mut late = fleet
        .connect(
            node,
            "acme-health",
            "room-late",
            "late",
            Role::Subscribe,
            Some("DE"),
        )
        .await
        .expect("late joiner admitted");
    late.subscribe().await.expect("subscribe");
    let mut announced = vec![track_added(&mut late).await, track_added(&mut late).await];
    announced.sort_by_key(|t| t.name.clone());
    assert_eq!(
        announced,
        vec![
            TrackInfo {
                track: cam,
                publisher: "pub".into(),
                kind: TrackKind::Video,
                e2ee: true,
                name: "cam".into(),
            },
            TrackInfo {
                track: mic,
                publisher: "pub".into(),
                kind: TrackKind::Audio,
                e2ee: false,
                name: "mic".into(),
            },
        ]
    );

    for seq in 100..150 {
        publisher.send_media(mic, seq, seq, b"late").expect("send");
    }
    let (seen, other) = receive_media(&mut late, mic, 50, Duration::from_secs(5)).await;
    assert_eq!(
        seen,
        (100..150).collect::<BTreeSet<u64>>(),
        "only media sent after joining, all of it"
    );
    assert!(other.is_empty(), "no media of other tracks: {other:?}");

    publisher.unannounce(cam).await.expect("unannounce");
    let removed = next_matching(&mut late, Duration::from_secs(5), |e| match e {
        Event::TrackRemoved(track) => Some(track),
        _ => None,
    })
    .await;
    assert_eq!(
        removed,
        Some(cam),
        "the subscriber is told the track went away"
    );
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_to_that_subscriber_only() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let node = "eu-fra-1";
    let mut leaving = fleet
        .connect(
            node,
            "acme-health",
            "room-unsub",
            "leaving",
            Role::Subscribe,
            Some("DE"),
        )
        .await
        .expect("admitted");
    let mut staying = fleet
        .connect(
            node,
            "acme-health",
            "room-unsub",
            "staying",
            Role::Subscribe,
            Some("DE"),
        )
        .await
        .expect("admitted");
    leaving.subscribe().await.expect("subscribe");
    staying.subscribe().await.expect("subscribe");
    let publisher = fleet
        .connect(
            node,
            "acme-health",
            "room-unsub",
            "pub",
            Role::Publish,
            Some("NL"),
        )
        .await
        .expect("publisher admitted");
    let track = publisher
        .announce(TrackKind::Audio, false, "mic")
        .await
        .expect("announce");
    assert_eq!(track_added(&mut leaving).await.track, track);
    assert_eq!(track_added(&mut staying).await.track, track);

    const BATCH: u64 = 50;
    for seq in 0..BATCH {
        publisher
            .send_media(track, seq, seq, b"before")
            .expect("send");
    }
    for sub in [&mut leaving, &mut staying] {
        let (seen, _) = receive_media(sub, track, BATCH as usize, Duration::from_secs(5)).await;
        assert_eq!(
            seen.len(),
            BATCH as usize,
            "both subscribers get the first batch"
        );
    }
    let before = traffic(&fleet.status(node).await, "acme-health");
    assert_eq!(before.packets_out, 2 * BATCH);

    leaving.unsubscribe().await.expect("unsubscribe");
    // The relay handles UNSUBSCRIBE on the control stream; the media comes on
    // another connection, so wait until the track's route lost the receiver.
    let hub = &fleet.fleet.node(node).expect("node").hub;
    support::events::until(
        Duration::from_secs(5),
        "the route dropped the leaver",
        || async { hub.routes().route(track).map(|r| r.fanout()) == Some(1) },
    )
    .await;
    for seq in BATCH..2 * BATCH {
        publisher
            .send_media(track, seq, seq, b"after")
            .expect("send");
    }
    let (seen, _) =
        receive_media(&mut staying, track, BATCH as usize, Duration::from_secs(5)).await;
    assert_eq!(
        seen,
        (BATCH..2 * BATCH).collect::<BTreeSet<u64>>(),
        "the other subscriber still gets everything"
    );
    assert_eq!(
        media_within(&mut leaving, Duration::from_millis(500)).await,
        0,
        "no media after UNSUBSCRIBE"
    );

    let after = traffic(&fleet.status(node).await, "acme-health");
    assert_eq!(after.packets_in - before.packets_in, BATCH);
    assert_eq!(
        after.packets_out - before.packets_out,
        BATCH,
        "packets_out grew by one copy per packet (the staying subscriber), not two"
    );
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_dropped_not_waited_for() {
    // The stalled subscriber's QUIC datagram send buffer holds this many
    // bytes; beyond it the oldest buffered datagram is dropped (queue_full).
    const SEND_BUFFER: u64 = 64_000;
    let spec = FleetSpec {
        extra: format!("[limits]\ndatagram_send_buffer_bytes = {SEND_BUFFER}\n"),
        ..Default::default()
    };
    let fleet = TestFleet::start_nodes(spec, &["eu-fra-1"]).await;
    let node = "eu-fra-1";
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let proxy = UdpProxy::start(localhost, fleet.node_addr(node), localhost)
        .await
        .expect("proxy");
    let slow_join = join(
        "acme-health",
        "room-slow",
        fleet.token("acme-health", "room-slow", "slow", Role::Subscribe, 600),
    );
    let via_proxy = Target {
        node: node.to_string(),
        addr: proxy.addr(),
    };
    let mut slow = Client::connect(&fleet.options(None), &[via_proxy], &slow_join)
        .await
        .expect("slow subscriber admitted through the proxy");
    slow.subscribe().await.expect("subscribe");
    let mut normal = Vec::new();
    for i in 0..3 {
        let sub = fleet
            .connect(
                node,
                "acme-health",
                "room-slow",
                &format!("sub-{i}"),
                Role::Subscribe,
                Some("DE"),
            )
            .await
            .expect("admitted");
        sub.subscribe().await.expect("subscribe");
        normal.push(sub);
    }
    let publisher = fleet
        .connect(
            node,
            "acme-health",
            "room-slow",
            "pub",
            Role::Publish,
            Some("NL"),
        )
        .await
        .expect("publisher admitted");
    let track = publisher
        .announce(TrackKind::Video, false, "cam")
        .await
        .expect("announce");
    assert_eq!(
        track_added(&mut slow).await.track,
        track,
        "the proxied subscriber is subscribed"
    );
    for sub in &mut normal {
        assert_eq!(track_added(sub).await.track, track);
    }

    // From here on the slow subscriber neither reads nor acknowledges.
    proxy.pause();
    const PACKETS: u64 = 1_000;
    let payload = vec![0x5a; 1_000];
    let started = georelay::clock::monotonic_now();
    send_paced(&publisher, track, 0..PACKETS, 500, |_| payload.clone()).await;
    let sending = started.elapsed();
    assert!(
        sending < Duration::from_secs(4),
        "the publisher was not held back: {sending:?}"
    );

    for (i, sub) in normal.iter_mut().enumerate() {
        let (seen, _) = receive_media(sub, track, PACKETS as usize, Duration::from_secs(5)).await;
        assert!(
            seen.len() as u64 * 100 >= PACKETS * 99,
            "subscriber {i} got {} of {PACKETS} while another subscriber stalled",
            seen.len()
        );
    }
    let status = fleet.status(node).await;
    let acme = traffic(&status, "acme-health");
    let queue_full = drops(&status, "queue_full");
    assert_eq!(acme.packets_in, PACKETS);
    assert!(
        queue_full > 0,
        "the stalled subscriber's queue overflowed and dropped: {:?}",
        status.drops
    );
    assert!(
        acme.packets_out < 4 * PACKETS,
        "the stalled subscriber did not get everything"
    );
    // Every copy was either handed to QUIC or dropped, exactly once (a
    // datagram that displaced an older one counts as that one's drop).
    let accounted = acme.packets_out + queue_full;
    assert!(
        accounted == 4 * PACKETS,
        "sent {} + dropped {queue_full} = {accounted} copies of {}",
        acme.packets_out,
        4 * PACKETS
    );
    assert!(
        proxy.dropped_while_paused() > 0,
        "the proxy really stalled the slow subscriber"
    );
    assert!(
        slow.dropped_events() == 0,
        "the slow client's SDK itself dropped nothing: the relay did"
    );
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_unauthorized() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let node = "eu-fra-1";
    let options = fleet.options(Some("DE"));
    let targets = [fleet.target(node)];

    let valid = fleet.token("acme-health", "room-1", "alice", Role::Subscribe, 600);
    let (payload, signature) = valid.rsplit_once('.').expect("gr1.payload.signature");
    let mut flipped: Vec<char> = signature.chars().collect();
    flipped[0] = if flipped[0] == 'A' { 'B' } else { 'A' };
    let forged = format!("{payload}.{}", flipped.iter().collect::<String>());
    let cases = [
        (
            "expired",
            join(
                "acme-health",
                "room-1",
                fleet.token("acme-health", "room-1", "alice", Role::Subscribe, -60),
            ),
        ),
        ("forged signature", join("acme-health", "room-1", forged)),
        (
            "token of another app",
            join(
                "acme-health",
                "room-1",
                fleet.token("globex-media", "room-1", "alice", Role::Subscribe, 600),
            ),
        ),
        (
            "token for another channel",
            join(
                "acme-health",
                "room-1",
                fleet.token("acme-health", "room-2", "alice", Role::Subscribe, 600),
            ),
        ),
    ];
    for (case, bad) in &cases {
        let err = refused(&options, &targets, bad).await;
        assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{case}: {err}");
        assert!(
            redirect_of(&err).is_empty(),
            "{case}: no redirect for a bad token"
        );
    }
    // The same client with the untampered token is admitted.
    let client = Client::connect(&options, &targets, &join("acme-health", "room-1", valid))
        .await
        .expect("a valid token is admitted");
    assert_eq!(client.node(), node);
    wait_sessions(&fleet, node, 1).await;
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_announces_is_closed_unauthorized() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let node = "eu-fra-1";
    let mut sub = fleet
        .connect(
            node,
            "acme-health",
            "room-1",
            "sneaky",
            Role::Subscribe,
            Some("DE"),
        )
        .await
        .expect("subscriber admitted");
    sub.subscribe().await.expect("subscribe");
    let err = sub
        .announce(TrackKind::Audio, false, "mic")
        .await
        .expect_err("a subscriber may not announce");
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
    let closed = next_matching(&mut sub, Duration::from_secs(3), |e| match e {
        Event::Closed { code, .. } => Some(code),
        _ => None,
    })
    .await;
    assert_eq!(
        closed,
        Some(Some(ErrorCode::Unauthorized)),
        "the session is closed with UNAUTHORIZED"
    );
    wait_sessions(&fleet, node, 0).await;
    fleet.fleet.shutdown().await;
}

/// Connects `user` with `role` to eu-fra-1's acme-health room-1.
async fn acme_on_fra(fleet: &TestFleet, user: &str, role: Role) -> Client {
    fleet
        .connect("eu-fra-1", "acme-health", "room-1", user, role, Some("DE"))
        .await
        .expect("admitted")
}

/// The code `client`'s session closes with, within 3 s.
async fn closed_with(client: &mut Client) -> Option<Option<ErrorCode>> {
    next_matching(client, Duration::from_secs(3), |e| match e {
        Event::Closed { code, .. } => Some(code),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_sends_a_datagram_is_closed_unauthorized() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let mut sub = acme_on_fra(&fleet, "sneaky", Role::Subscribe).await;
    sub.send_media(1, 1, 1, b"x").expect("sent");
    assert_eq!(
        closed_with(&mut sub).await,
        Some(Some(ErrorCode::Unauthorized))
    );
    wait_sessions(&fleet, "eu-fra-1", 0).await;
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unannouncing_a_track_of_another_session_is_a_protocol_violation() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let owner = acme_on_fra(&fleet, "owner", Role::Publish).await;
    let track = owner
        .announce(TrackKind::Audio, false, "mic")
        .await
        .expect("announce");
    let mut other = acme_on_fra(&fleet, "other", Role::Publish).await;
    other.unannounce(track).await.expect("sent");
    assert_eq!(
        closed_with(&mut other).await,
        Some(Some(ErrorCode::ProtocolViolation))
    );
    wait_sessions(&fleet, "eu-fra-1", 1).await;
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_from_a_denied_country_is_refused() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let node = "eu-fra-1";
    let targets = [fleet.target(node)];
    let token = fleet.token("acme-health", "room-1", "ivan", Role::Subscribe, 600);
    let err = refused(
        &fleet.options(Some("RU")),
        &targets,
        &join("acme-health", "room-1", token.clone()),
    )
    .await;
    assert_eq!(err.code(), Some(ErrorCode::GeofenceDenied), "{err}");
    assert!(
        redirect_of(&err).is_empty(),
        "a denied country gets no alternatives"
    );
    // The same token from an allowed country is admitted; another app without
    // client rules admits the RU address.
    Client::connect(
        &fleet.options(Some("DE")),
        &targets,
        &join("acme-health", "room-1", token),
    )
    .await
    .expect("admitted from DE");
    fleet
        .connect(
            node,
            "globex-media",
            "room-1",
            "ivan",
            Role::Subscribe,
            Some("RU"),
        )
        .await
        .expect("globex-media has no client-country rules");
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_apps_regions_redirects_to_the_nearest_allowed_nodes() {
    let fleet =
        TestFleet::start_nodes(FleetSpec::default(), &["uk-lon-1", "eu-fra-1", "eu-ams-1"]).await;
    let app = "acme-health";
    let token = fleet.token(app, "room-1", "hans", Role::Subscribe, 600);
    let mut options = fleet.options(Some("DE"));
    options.max_redirects = 0;
    let err = refused(
        &options,
        &[fleet.target("uk-lon-1")],
        &join(app, "room-1", token.clone()),
    )
    .await;
    assert_eq!(err.code(), Some(ErrorCode::GeofenceRedirect), "{err}");
    let redirect = redirect_of(&err);

    // The routing core's answer for a client in the EU entering at London.
    let allowed = fleet.policy.allowed(&AppId::new(app)).expect("app policy");
    let from_core: Vec<Target> = fleet
        .policy
        .topology
        .nearest_allowed(
            allowed,
            Some(&RegionId::new("eu")),
            &NodeId::new("uk-lon-1"),
            4,
        )
        .into_iter()
        .map(|n| fleet.target(n.as_str()))
        .collect();
    assert_eq!(
        redirect, from_core,
        "targets in the routing core's order, with client addresses"
    );
    // Both EU nodes are in the client's home region at distance 0: the tie
    // is broken by node id.
    assert_eq!(
        redirect,
        vec![fleet.target("eu-ams-1"), fleet.target("eu-fra-1")]
    );

    // Following redirects (the SDK default) lands on the first EU node.
    let client = Client::connect(
        &fleet.options(Some("DE")),
        &[fleet.target("uk-lon-1")],
        &join(app, "room-1", token),
    )
    .await
    .expect("admitted after the redirect");
    assert_eq!(client.node(), "eu-ams-1");
    assert_eq!(client.region(), "eu");
    assert_eq!(client.redirects(), 1);
    assert_eq!(fleet.status("uk-lon-1").await.sessions, 0);
    assert_eq!(fleet.status("eu-ams-1").await.sessions, 1);
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_each_apps_packets_and_bytes_exactly() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let node = "eu-fra-1";
    let mut expected = std::collections::BTreeMap::new();
    let mut open = Vec::new();
    for (app, subscribers, packets, messages) in [
        ("acme-health", 2u64, 120u64, 3u64),
        ("globex-media", 1, 40, 1),
    ] {
        let mut subs = Vec::new();
        for i in 0..subscribers {
            let sub = fleet
                .connect(
                    node,
                    app,
                    "room-count",
                    &format!("sub-{i}"),
                    Role::Subscribe,
                    Some("DE"),
                )
                .await
                .expect("admitted");
            sub.subscribe().await.expect("subscribe");
            subs.push(sub);
        }
        let publisher = fleet
            .connect(node, app, "room-count", "pub", Role::Publish, Some("NL"))
            .await
            .expect("admitted");
        let track = publisher
            .announce(TrackKind::Data, false, "data")
            .await
            .expect("announce");
        for sub in &mut subs {
            assert_eq!(track_added(sub).await.track, track);
        }
        let mut bytes_in = 0u64;
        for seq in 0..packets {
            let payload = vec![b'x'; 10 + (seq as usize % 7) * 150];
            let header = MediaHeader {
                track,
                seq,
                timestamp_us: seq * 20_000,
            };
            publisher
                .send_media(track, seq, header.timestamp_us, &payload)
                .expect("send");
            bytes_in += (header.encoded_len() + payload.len()) as u64;
        }
        for m in 0..messages {
            let payload = format!("message {m} of {app}");
            publisher
                .send_message(track, payload.as_bytes())
                .await
                .expect("message");
            let mut framed = bytes::BytesMut::new();
            georelay::wire::encode_message(track, payload.as_bytes(), &mut framed);
            bytes_in += framed.len() as u64;
        }
        for sub in &mut subs {
            let deadline = georelay::clock::timer_now() + Duration::from_secs(5);
            let (mut media, mut received_messages) = (0, 0);
            while (media < packets || received_messages < messages)
                && georelay::clock::timer_now() < deadline
            {
                match tokio::time::timeout_at(deadline, sub.events().next()).await {
                    Ok(Some(Event::Media { .. })) => media += 1,
                    Ok(Some(Event::Message { .. })) => received_messages += 1,
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            assert_eq!(
                (media, received_messages),
                (packets, messages),
                "{app}: everything delivered"
            );
        }
        expected.insert(
            app.to_string(),
            AppTraffic {
                packets_in: packets + messages,
                packets_out: subscribers * (packets + messages),
                bytes_in,
                bytes_out: subscribers * bytes_in,
            },
        );
        // Keep the sessions open until the counts are read.
        open.push(publisher);
        open.extend(subs);
    }
    let status = fleet.status(node).await;
    assert_eq!(status.node, node);
    assert_eq!(status.region, "eu");
    assert_eq!(status.sessions, 2 + 1 + 1 + 1);
    assert_eq!(
        status.apps, expected,
        "per-app packets and bytes, in and out"
    );
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_media_by_app_and_refusals_by_code() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let node = "eu-fra-1";
    let metrics = || support::fleet::http_get(fleet.admin_addr(node), "/metrics");
    // The recorder is process-wide and node ids repeat across tests of this
    // binary, so compare deltas, at least what this test caused.
    let unauthorized = [("node", node), ("code", "UNAUTHORIZED")];
    let denied = [("node", node), ("code", "GEOFENCE_DENIED")];
    let acme = [("node", node), ("app", "acme-health")];
    let before = metrics().await;

    let expired = join(
        "acme-health",
        "room-m",
        fleet.token("acme-health", "room-m", "late", Role::Subscribe, -5),
    );
    let err = refused(&fleet.options(Some("DE")), &[fleet.target(node)], &expired).await;
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    let err = fleet
        .connect(
            node,
            "acme-health",
            "room-m",
            "ivan",
            Role::Subscribe,
            Some("RU"),
        )
        .await
        .expect_err("RU is denied");
    assert_eq!(err.code(), Some(ErrorCode::GeofenceDenied));

    let mut sub = fleet
        .connect(
            node,
            "acme-health",
            "room-m",
            "sub",
            Role::Subscribe,
            Some("DE"),
        )
        .await
        .expect("admitted");
    sub.subscribe().await.expect("subscribe");
    let publisher = fleet
        .connect(
            node,
            "acme-health",
            "room-m",
            "pub",
            Role::Publish,
            Some("NL"),
        )
        .await
        .expect("admitted");
    let track = publisher
        .announce(TrackKind::Audio, false, "mic")
        .await
        .expect("announce");
    assert_eq!(track_added(&mut sub).await.track, track);
    const PACKETS: u64 = 30;
    for seq in 0..PACKETS {
        publisher
            .send_media(track, seq, seq, &[7u8; 100])
            .expect("send");
    }
    let (seen, _) = receive_media(&mut sub, track, PACKETS as usize, Duration::from_secs(5)).await;
    assert_eq!(seen.len() as u64, PACKETS);
    const UNKNOWN: u64 = 3;
    for seq in 0..UNKNOWN {
        publisher
            .send_media(12345, seq, 0, b"no such track")
            .expect("send");
    }
    let deadline = georelay::clock::timer_now() + Duration::from_secs(3);
    while drops(&fleet.status(node).await, "unknown_track") < UNKNOWN
        && georelay::clock::timer_now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let after = metrics().await;
    let present: BTreeSet<&str> = after
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .filter(|name| !name.is_empty())
        .collect();
    let delta = |name: &str, labels: &[(&str, &str)]| {
        metric_sum(&after, name, labels) - metric_sum(&before, name, labels)
    };
    assert!(
        delta("georelay_refusals_total", &unauthorized) >= 1.0,
        "UNAUTHORIZED refusal counted; series present: {present:?}"
    );
    assert!(
        delta("georelay_refusals_total", &denied) >= 1.0,
        "GEOFENCE_DENIED refusal counted; series present: {present:?}"
    );
    assert!(
        metric_sum(
            &after,
            "georelay_connections_total",
            &[("node", node), ("kind", "client")]
        ) >= 4.0,
        "client connections counted; series present: {present:?}"
    );
    assert!(
        after.contains("georelay_handshake_duration_seconds"),
        "handshake durations recorded"
    );
    assert!(
        delta("georelay_packets_in_total", &acme) >= PACKETS as f64,
        "packets in by app; series present: {present:?}"
    );
    assert!(
        delta("georelay_packets_out_total", &acme) >= PACKETS as f64,
        "packets out by app; series present: {present:?}"
    );
    assert!(
        delta("georelay_bytes_in_total", &acme) >= (PACKETS * 100) as f64,
        "bytes in by app; series present: {present:?}"
    );
    assert!(
        delta("georelay_bytes_out_total", &acme) >= (PACKETS * 100) as f64,
        "bytes out by app; series present: {present:?}"
    );
    assert!(
        delta(
            "georelay_drops_total",
            &[("node", node), ("reason", "unknown_track")]
        ) >= UNKNOWN as f64,
        "drops by reason; series present: {present:?}"
    );
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_for_a_track_the_sender_does_not_own_is_dropped_and_counted() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let node = "eu-fra-1";
    let mut subs = Vec::new();
    for i in 0..2 {
        let sub = fleet
            .connect(
                node,
                "acme-health",
                "room-x",
                &format!("sub-{i}"),
                Role::Subscribe,
                Some("DE"),
            )
            .await
            .expect("admitted");
        sub.subscribe().await.expect("subscribe");
        subs.push(sub);
    }
    let publisher = fleet
        .connect(
            node,
            "acme-health",
            "room-x",
            "pub",
            Role::Publish,
            Some("NL"),
        )
        .await
        .expect("admitted");
    let intruder = fleet
        .connect(
            node,
            "acme-health",
            "room-x",
            "intruder",
            Role::Publish,
            Some("NL"),
        )
        .await
        .expect("admitted");
    let track = publisher
        .announce(TrackKind::Audio, false, "mic")
        .await
        .expect("announce");
    let own = intruder
        .announce(TrackKind::Audio, false, "own")
        .await
        .expect("announce");
    for sub in &mut subs {
        let mut tracks =
            BTreeSet::from([track_added(sub).await.track, track_added(sub).await.track]);
        assert_eq!(tracks.len(), 2);
        assert!(tracks.remove(&track) && tracks.remove(&own));
    }
    let before = drops(&fleet.status(node).await, "unknown_track");

    const FORGED: u64 = 10;
    for seq in 0..FORGED {
        intruder
            .send_media(12345, seq, 0, b"no such track")
            .expect("send");
        intruder
            .send_media(track, 10_000 + seq, 0, b"someone else's track")
            .expect("send");
    }
    let deadline = georelay::clock::timer_now() + Duration::from_secs(3);
    let counted = loop {
        let counted = drops(&fleet.status(node).await, "unknown_track") - before;
        if counted >= 2 * FORGED || georelay::clock::timer_now() >= deadline {
            break counted;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        counted,
        2 * FORGED,
        "every forged datagram dropped as unknown_track"
    );

    // Both sessions and the others keep working.
    for seq in 0..50 {
        publisher.send_media(track, seq, 0, b"legit").expect("send");
    }
    for seq in 0..5 {
        intruder.send_media(own, seq, 0, b"its own").expect("send");
    }
    for sub in &mut subs {
        let (seen, other) = receive_media(sub, track, 50, Duration::from_secs(5)).await;
        assert_eq!(
            seen,
            (0..50).collect::<BTreeSet<u64>>(),
            "the real publisher's media only"
        );
        let (own_seen, _) = receive_media(sub, own, 5 - other.len(), Duration::from_secs(5)).await;
        assert_eq!(
            other.iter().filter(|t| **t == own).count() + own_seen.len(),
            5
        );
        assert!(
            other.iter().all(|t| *t == own),
            "no forged track reached a subscriber: {other:?}"
        );
    }
    let status = fleet.status(node).await;
    assert_eq!(status.sessions, 4);
    assert_eq!(drops(&status, "unknown_track") - before, 2 * FORGED);
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_proxy_forwards_delays_and_drops_while_paused() {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let server = tokio::net::UdpSocket::bind((localhost, 0))
        .await
        .expect("bind");
    let proxy = UdpProxy::start(localhost, server.local_addr().expect("addr"), localhost)
        .await
        .expect("proxy");
    let client = tokio::net::UdpSocket::bind((localhost, 0))
        .await
        .expect("bind");
    let mut buf = [0u8; 64];
    let limit = Duration::from_secs(2);

    client.send_to(b"ping", proxy.addr()).await.expect("send");
    let (len, from) = tokio::time::timeout(limit, server.recv_from(&mut buf))
        .await
        .expect("forwarded")
        .expect("recv");
    assert_eq!(&buf[..len], b"ping");
    assert_eq!(from, proxy.upstream_local_addr());
    server.send_to(b"pong", from).await.expect("send");
    let (len, _) = tokio::time::timeout(limit, client.recv_from(&mut buf))
        .await
        .expect("returned")
        .expect("recv");
    assert_eq!(&buf[..len], b"pong");

    proxy.set_delay(Duration::from_millis(150));
    let sent = georelay::clock::monotonic_now();
    client.send_to(b"slow", proxy.addr()).await.expect("send");
    let (len, _) = tokio::time::timeout(limit, server.recv_from(&mut buf))
        .await
        .expect("delayed")
        .expect("recv");
    assert_eq!(&buf[..len], b"slow");
    assert!(
        sent.elapsed() >= Duration::from_millis(150),
        "delayed by {:?}",
        sent.elapsed()
    );
    proxy.set_delay(Duration::ZERO);

    proxy.pause();
    client.send_to(b"lost", proxy.addr()).await.expect("send");
    server.send_to(b"lost", from).await.expect("send");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), server.recv_from(&mut buf))
            .await
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf))
            .await
            .is_err()
    );
    assert_eq!(proxy.dropped_while_paused(), 2);

    proxy.resume();
    client.send_to(b"back", proxy.addr()).await.expect("send");
    let (len, _) = tokio::time::timeout(limit, server.recv_from(&mut buf))
        .await
        .expect("resumed")
        .expect("recv");
    assert_eq!(&buf[..len], b"back");
    assert_eq!(proxy.forwarded(), 4);
}
