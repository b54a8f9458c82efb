//! The geofenced mesh over real QUIC on loopback (six nodes, four regions):
//! path enforcement with per-node counters, fail-closed routing, failover,
//! redirects, policy reload mid-stream and fan-out trees.

mod support;

use std::time::Duration;

use georelay::auth::Role;
use georelay::client::{Client, Event};
use georelay::wire::{SubscriptionStatus, TrackKind};
use support::events::{media_seqs, next_matching};
use support::fleet::{FleetSpec, NODES, TestFleet};

/// Sends `count` datagrams starting at `first`, paced at about 1 kpps.
async fn send_burst(publisher: &Client, track: u64, first: u64, count: u64) {
    for seq in first..first + count {
        publisher
            .send_media(track, seq, seq, b"payload")
            .expect("send");
        if seq % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn publisher_and_subscriber(
    fleet: &TestFleet,
    app: &str,
    channel: &str,
    from: &str,
    to: &str,
) -> (Client, u64, Client) {
    let mut subscriber = fleet
        .connect(to, app, channel, "sub", Role::Subscribe, None)
        .await
        .expect("subscriber admitted");
    subscriber.subscribe().await.expect("subscribe");
    let publisher = fleet
        .connect(from, app, channel, "pub", Role::Publish, None)
        .await
        .expect("publisher admitted");
    let track = publisher
        .announce(TrackKind::Video, true, "camera")
        .await
        .expect("announce");
    let added = next_matching(&mut subscriber, Duration::from_secs(5), |e| match e {
        Event::TrackAdded(info) => Some(info.track),
        _ => None,
    })
    .await;
    assert_eq!(
        added,
        Some(track),
        "the remote track is announced to the subscriber"
    );
    support::events::active(&mut subscriber).await;
    (publisher, track, subscriber)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eu_only_media_avoids_the_cheaper_uk_transit_and_other_apps_take_it() {
    let fleet = TestFleet::start(FleetSpec::default()).await;
    let (publisher, track, mut subscriber) =
        publisher_and_subscriber(&fleet, "acme-health", "ward-7", "eu-fra-1", "eu-ams-1").await;
    send_burst(&publisher, track, 0, 300).await;
    let seen = media_seqs(&mut subscriber, track, Duration::from_millis(800)).await;
    assert!(
        seen.len() >= 297,
        "EU-only media flows fra -> ams ({} of 300)",
        seen.len()
    );

    for node in ["uk-lon-1", "us-iad-1", "us-sfo-1", "ap-sin-1"] {
        let status = fleet.status(node).await;
        let acme = status.apps.get("acme-health").copied().unwrap_or_default();
        assert_eq!(
            acme,
            Default::default(),
            "{node} carried no acme-health media"
        );
        let (_, channels) =
            support::fleet::http_request(fleet.admin_addr(node), "GET", "/debug/channels").await;
        assert!(
            !channels.contains("ward-7"),
            "{node} never saw the channel name: {channels}"
        );
    }
    let fra = fleet.status("eu-fra-1").await.apps["acme-health"];
    assert_eq!(fra.packets_in, 300);
    assert!(fra.packets_out >= 297, "fra forwarded straight to ams");
    let (_, channels) =
        support::fleet::http_request(fleet.admin_addr("eu-ams-1"), "GET", "/debug/channels").await;
    assert!(
        channels.contains("ward-7"),
        "the subscriber's node saw the channel: {channels}"
    );

    // globex-media may cross the UK, so it takes the cheaper path via London.
    let (publisher, track, mut subscriber) =
        publisher_and_subscriber(&fleet, "globex-media", "show", "eu-fra-1", "eu-ams-1").await;
    send_burst(&publisher, track, 0, 200).await;
    let seen = media_seqs(&mut subscriber, track, Duration::from_millis(800)).await;
    assert!(
        seen.len() >= 198,
        "globex media flows ({} of 200)",
        seen.len()
    );
    let lon = fleet.status("uk-lon-1").await.apps["globex-media"];
    assert!(
        lon.packets_in >= 198 && lon.packets_out >= 198,
        "globex transits London: {lon:?}"
    );
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_nodes_joined_only_through_a_disallowed_region_fail_closed() {
    let fleet = TestFleet::start(FleetSpec::default()).await;
    let mut subscriber = fleet
        .connect(
            "eu-fra-1",
            "initech-chat",
            "standup",
            "sub",
            Role::Subscribe,
            None,
        )
        .await
        .expect("subscriber admitted");
    subscriber.subscribe().await.expect("subscribe");
    let state = next_matching(&mut subscriber, Duration::from_secs(5), |e| match e {
        Event::State(state) => Some(state),
        _ => None,
    })
    .await
    .expect("the subscriber is told");
    assert_eq!(state.state, SubscriptionStatus::Unavailable);
    assert_eq!(
        state.code,
        georelay::error::ErrorCode::RouteUnavailable.to_wire()
    );
    assert!(
        state.message.contains("us-iad-1"),
        "names the unreachable nodes: {}",
        state.message
    );

    let publisher = fleet
        .connect(
            "us-iad-1",
            "initech-chat",
            "standup",
            "pub",
            Role::Publish,
            None,
        )
        .await
        .expect("publisher admitted");
    let track = publisher
        .announce(TrackKind::Audio, false, "mic")
        .await
        .expect("announce");
    send_burst(&publisher, track, 0, 100).await;
    let seen = media_seqs(&mut subscriber, track, Duration::from_millis(500)).await;
    assert!(seen.is_empty(), "nothing crosses the UK");
    let lon = fleet.status("uk-lon-1").await;
    assert_eq!(
        lon.apps.get("initech-chat").copied().unwrap_or_default(),
        Default::default()
    );
    let (_, channels) =
        support::fleet::http_request(fleet.admin_addr("uk-lon-1"), "GET", "/debug/channels").await;
    assert!(
        !channels.contains("standup"),
        "the UK never saw the channel: {channels}"
    );
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_transit_node_reroutes_then_fails_closed_then_recovers() {
    let mut fleet = TestFleet::start(FleetSpec::default()).await;
    // globex-media may use every region but apac. fra -> ams goes via London
    // (20 ms) with the direct link (30 ms) as the next allowed path; fra ->
    // iad has no allowed path but London (the detour through ap-sin-1 is
    // not allowed).
    let (publisher, track, mut near) =
        publisher_and_subscriber(&fleet, "globex-media", "live", "eu-fra-1", "eu-ams-1").await;
    let mut far = fleet
        .connect(
            "us-iad-1",
            "globex-media",
            "live",
            "far",
            Role::Subscribe,
            None,
        )
        .await
        .expect("far subscriber admitted");
    far.subscribe().await.expect("subscribe");
    assert!(
        next_matching(&mut far, Duration::from_secs(5), |e| matches!(
            e,
            Event::TrackAdded(_)
        )
        .then_some(()))
        .await
        .is_some()
    );
    support::events::active(&mut far).await;
    send_burst(&publisher, track, 0, 100).await;
    assert!(
        media_seqs(&mut near, track, Duration::from_millis(500))
            .await
            .len()
            >= 99
    );
    assert!(
        media_seqs(&mut far, track, Duration::from_millis(100))
            .await
            .len()
            >= 99
    );

    // Kill London mid-stream; publish continuously and time the gap.
    let lon = fleet.fleet.take("uk-lon-1").expect("london runs");
    let killed_at = georelay::clock::timer_now();
    lon.kill().await;
    let mut seq = 1_000;
    let mut resumed = None;
    while killed_at.elapsed() < Duration::from_secs(10) {
        publisher.send_media(track, seq, seq, b"x").expect("send");
        seq += 1;
        let got = media_seqs(&mut near, track, Duration::from_millis(10)).await;
        if got.iter().any(|s| *s >= 1_000) {
            resumed = Some(killed_at.elapsed());
            break;
        }
    }
    let resumed = resumed.expect("delivery resumes on the direct fra-ams link");
    println!("failover: delivery resumed {resumed:?} after the transit node was killed");
    assert!(
        resumed < Duration::from_secs(5),
        "failover bound: {resumed:?}"
    );
    send_burst(&publisher, track, 5_000, 100).await;
    assert!(
        media_seqs(&mut near, track, Duration::from_millis(500))
            .await
            .len()
            >= 99
    );

    // The far subscriber lost its last allowed path: told, and nothing leaks
    // through ap-sin-1.
    let state = next_matching(&mut far, Duration::from_secs(3), |e| match e {
        Event::State(state) if state.state == SubscriptionStatus::Unavailable => Some(state),
        _ => None,
    })
    .await
    .expect("ROUTE_UNAVAILABLE reaches the far subscriber");
    assert_eq!(
        state.code,
        georelay::error::ErrorCode::RouteUnavailable.to_wire()
    );
    assert!(
        media_seqs(&mut far, track, Duration::from_millis(200))
            .await
            .iter()
            .all(|s| *s < 1_000)
    );
    let sin = fleet.status("ap-sin-1").await;
    assert_eq!(
        sin.apps.get("globex-media").copied().unwrap_or_default(),
        Default::default(),
        "no detour via apac"
    );

    // London comes back: the far subscriber recovers without reconnecting.
    fleet.restart("uk-lon-1").await;
    let restarted_at = georelay::clock::timer_now();
    let mut recovered = None;
    let mut seq = 10_000;
    while restarted_at.elapsed() < Duration::from_secs(10) {
        publisher.send_media(track, seq, seq, b"x").expect("send");
        seq += 1;
        let got = media_seqs(&mut far, track, Duration::from_millis(10)).await;
        if got.iter().any(|s| *s >= 10_000) {
            recovered = Some(restarted_at.elapsed());
            break;
        }
    }
    let recovered = recovered.expect("the far subscriber recovers when London returns");
    println!("recovery: delivery to us-iad-1 resumed {recovered:?} after uk-lon-1 restarted");

    // The near subscriber moves back to the cheaper path through London:
    // London then forwards each packet twice (to us-iad-1 and eu-ams-1).
    let deadline = georelay::clock::timer_now() + Duration::from_secs(5);
    let mut seq = 20_000;
    loop {
        let before = fleet.status("uk-lon-1").await.apps["globex-media"];
        send_burst(&publisher, track, seq, 20).await;
        seq += 20;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after = fleet.status("uk-lon-1").await.apps["globex-media"];
        if after.packets_in - before.packets_in >= 20
            && after.packets_out - before.packets_out >= 40
        {
            break;
        }
        assert!(
            georelay::clock::timer_now() < deadline,
            "London carries the stream to both subscribers again: {before:?} -> {after:?}"
        );
    }
    assert!(
        media_seqs(&mut near, track, Duration::from_millis(300))
            .await
            .len()
            >= 19
    );
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_start_and_report_ready() {
    let fleet = TestFleet::start(FleetSpec::default()).await;
    for node in NODES {
        let (code, body) =
            support::fleet::http_request(fleet.admin_addr(node), "GET", "/readyz").await;
        assert_eq!(code, 200, "{node} ready: {body}");
    }
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_from_a_disallowed_node_lands_on_an_allowed_one_and_delivers() {
    let fleet = TestFleet::start(FleetSpec::default()).await;
    // A German client of the EU-only app dials London: it is redirected.
    let mut options = fleet.options(Some("DE"));
    options.max_redirects = 0;
    let join = georelay::client::Join {
        app: "acme-health".into(),
        channel: "consult".into(),
        token: fleet.token("acme-health", "consult", "sub", Role::Subscribe, 600),
    };
    let refused = Client::connect(&options, &[fleet.target("uk-lon-1")], &join)
        .await
        .expect_err("refused");
    assert_eq!(
        refused.code(),
        Some(georelay::error::ErrorCode::GeofenceRedirect)
    );
    let georelay::client::ClientError::Refused { redirect, .. } = &refused else {
        panic!("a refusal");
    };
    let nodes: Vec<&str> = redirect.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(
        nodes,
        ["eu-ams-1", "eu-fra-1"],
        "the EU nodes, nearest first"
    );

    // Following it, like an SDK does, lands on an EU node.
    let mut subscriber = Client::connect(
        &fleet.options(Some("DE")),
        &[fleet.target("uk-lon-1")],
        &join,
    )
    .await
    .expect("redirect followed");
    assert_eq!(subscriber.redirects(), 1);
    assert_eq!(subscriber.region(), "eu");
    subscriber.subscribe().await.expect("subscribe");
    let publisher = fleet
        .connect(
            "eu-fra-1",
            "acme-health",
            "consult",
            "pub",
            Role::Publish,
            Some("NL"),
        )
        .await
        .expect("publisher");
    let track = publisher
        .announce(TrackKind::Audio, false, "mic")
        .await
        .expect("announce");
    assert!(
        next_matching(&mut subscriber, Duration::from_secs(5), |e| matches!(
            e,
            Event::TrackAdded(_)
        )
        .then_some(()))
        .await
        .is_some()
    );
    support::events::active(&mut subscriber).await;
    send_burst(&publisher, track, 0, 500).await;
    let seen = media_seqs(&mut subscriber, track, Duration::from_millis(800)).await;
    assert!(
        seen.len() * 100 >= 500 * 99,
        "delivery after redirect is at least 99%: {}",
        seen.len()
    );
    let lon = fleet.status("uk-lon-1").await;
    assert_eq!(
        lon.apps.get("acme-health").copied().unwrap_or_default(),
        Default::default()
    );
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transit_node_forwards_each_packet_once_to_twenty_subscribers() {
    let fleet = TestFleet::start(FleetSpec::default()).await;
    let mut subscribers = Vec::new();
    for i in 0..20 {
        let sub = fleet
            .connect(
                "eu-ams-1",
                "globex-media",
                "keynote",
                &format!("viewer-{i}"),
                Role::Subscribe,
                None,
            )
            .await
            .expect("subscriber");
        sub.subscribe().await.expect("subscribe");
        subscribers.push(sub);
    }
    let publisher = fleet
        .connect(
            "eu-fra-1",
            "globex-media",
            "keynote",
            "speaker",
            Role::Publish,
            None,
        )
        .await
        .expect("publisher");
    let track = publisher
        .announce(TrackKind::Video, false, "stage")
        .await
        .expect("announce");
    for sub in &mut subscribers {
        assert!(
            next_matching(sub, Duration::from_secs(5), |e| matches!(
                e,
                Event::TrackAdded(_)
            )
            .then_some(()))
            .await
            .is_some()
        );
        support::events::active(sub).await;
    }
    const PACKETS: u64 = 200;
    send_burst(&publisher, track, 0, PACKETS).await;
    for sub in &mut subscribers {
        let seen = media_seqs(sub, track, Duration::from_millis(300)).await;
        assert!(
            seen.len() as u64 >= PACKETS - 2,
            "each viewer gets the stream: {}",
            seen.len()
        );
    }
    let lon = fleet.status("uk-lon-1").await.apps["globex-media"];
    assert_eq!(lon.packets_in, PACKETS, "London receives each packet once");
    assert_eq!(
        lon.packets_out, PACKETS,
        "and forwards it once, not once per viewer"
    );
    let ams = fleet.status("eu-ams-1").await.apps["globex-media"];
    assert_eq!(ams.packets_in, PACKETS);
    assert!(
        ams.packets_out >= 20 * (PACKETS - 2),
        "the subscriber's node fans out to 20: {ams:?}"
    );
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_region_mid_stream_revokes_sessions_and_stops_transit() {
    let fleet = TestFleet::start(FleetSpec::default()).await;
    // globex-media starts allowed in the UK: a London viewer, and fra -> ams
    // media transits London.
    let (publisher, track, mut ams_viewer) =
        publisher_and_subscriber(&fleet, "globex-media", "match", "eu-fra-1", "eu-ams-1").await;
    let mut lon_viewer = fleet
        .connect(
            "uk-lon-1",
            "globex-media",
            "match",
            "lon-viewer",
            Role::Subscribe,
            Some("GB"),
        )
        .await
        .expect("london viewer");
    lon_viewer.subscribe().await.expect("subscribe");
    support::events::track_ready(&mut lon_viewer).await;
    send_burst(&publisher, track, 0, 100).await;
    assert!(
        media_seqs(&mut ams_viewer, track, Duration::from_millis(400))
            .await
            .len()
            >= 99
    );
    let before = fleet.status("uk-lon-1").await.apps["globex-media"];
    assert!(
        before.packets_in >= 99,
        "London carried globex before the reload: {before:?}"
    );

    // The customer now excludes the UK too.
    let mut spec = FleetSpec::default();
    spec.apps = spec.apps.replace(
        "deny_regions = [\"apac\"]",
        "deny_regions = [\"apac\", \"uk\"]",
    );
    fleet.rewrite_config(&spec);
    let (code, body) =
        support::fleet::http_request(fleet.admin_addr("eu-fra-1"), "POST", "/reload").await;
    assert_eq!(code, 200, "reload accepted: {body}");
    assert!(
        body.contains("\"revoked_sessions\":1"),
        "the London viewer is revoked: {body}"
    );

    let closed = next_matching(&mut lon_viewer, Duration::from_secs(3), |e| match e {
        Event::Closed { code, redirect, .. } => Some((code, redirect)),
        _ => None,
    })
    .await
    .expect("the London session is closed");
    assert_eq!(closed.0, Some(georelay::error::ErrorCode::GeofenceRevoked));
    let targets: Vec<&str> = closed.1.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(
        targets,
        ["eu-ams-1", "eu-fra-1", "us-iad-1"],
        "allowed nodes nearest to London first"
    );

    // From the moment the reload returned, London forwards nothing of globex.
    let at_reload = fleet.status("uk-lon-1").await.apps["globex-media"];
    send_burst(&publisher, track, 1_000, 200).await;
    let seen = media_seqs(&mut ams_viewer, track, Duration::from_millis(800)).await;
    assert!(
        seen.iter().filter(|s| **s >= 1_000).count() >= 195,
        "media re-routed over the direct link: {}",
        seen.len()
    );
    let after = fleet.status("uk-lon-1").await.apps["globex-media"];
    assert_eq!(
        after, at_reload,
        "no globex packet crossed London after the reload"
    );
    let (_, channels) =
        support::fleet::http_request(fleet.admin_addr("uk-lon-1"), "GET", "/debug/channels").await;
    assert!(
        !channels.contains("\"match\""),
        "London forgot the channel: {channels}"
    );

    // An invalid file is rejected and the old policy stays in force.
    std::fs::write(fleet.config_path(), "[regions.eu]\ncountries = [\"XX\"]\n").expect("write");
    let (code, body) =
        support::fleet::http_request(fleet.admin_addr("eu-fra-1"), "POST", "/reload").await;
    assert_eq!(code, 400, "invalid config rejected: {body}");
    send_burst(&publisher, track, 2_000, 100).await;
    let seen = media_seqs(&mut ams_viewer, track, Duration::from_millis(500)).await;
    assert!(
        seen.iter().filter(|s| **s >= 2_000).count() >= 99,
        "still flowing under the old policy"
    );
    fleet.fleet.shutdown().await;
}

/// Publishes one packet every 2 ms until `stop`, reconnecting through the
/// SDK whenever the node is lost; returns how many reconnections it made.
fn spawn_publisher(
    mut session: georelay::client::Session,
    track: georelay::client::TrackHandle,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut seq = 0u64;
        let started = georelay::clock::timer_now();
        while !*stop.borrow() && started.elapsed() < Duration::from_secs(30) {
            if session.send_media(track, seq, seq, b"live").is_err() {
                let _ = session.ensure_connected().await;
            }
            seq += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        session.reconnects()
    })
}

/// Reads a session's events until media arrives after a reconnection to
/// `node`; returns the time it took.
async fn until_media_after_reconnect(
    session: &mut georelay::client::Session,
    node: &str,
    limit: Duration,
) -> Duration {
    let started = georelay::clock::timer_now();
    let mut reconnected = false;
    while started.elapsed() < limit {
        let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(200), session.next_event()).await
        else {
            continue;
        };
        match event {
            Event::Reconnected { node: landed } => {
                assert_eq!(landed, node, "reconnected to the other allowed node");
                reconnected = true;
            }
            Event::Media { .. } if reconnected => return started.elapsed(),
            _ => {}
        }
    }
    panic!("no media after reconnecting to {node} within {limit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_node_dies_its_clients_reconnect_through_the_sdk_and_resume() {
    let mut fleet = TestFleet::start(FleetSpec::default()).await;
    let join = |user: &str, role| georelay::client::Join {
        app: "acme-health".into(),
        channel: "icu".into(),
        token: fleet.token("acme-health", "icu", user, role, 600),
    };
    let eu = |first: &str, second: &str| vec![fleet.target(first), fleet.target(second)];
    let mut subscriber = georelay::client::Session::connect(
        &fleet.options(Some("NL")),
        &eu("eu-ams-1", "eu-fra-1"),
        &join("monitor", Role::Subscribe),
    )
    .await
    .expect("subscriber");
    subscriber.subscribe().await.expect("subscribe");
    let mut publisher = georelay::client::Session::connect(
        &fleet.options(Some("DE")),
        &eu("eu-fra-1", "eu-ams-1"),
        &join("sensor", Role::Publish),
    )
    .await
    .expect("publisher");
    let track = publisher
        .announce(TrackKind::Data, true, "vitals")
        .await
        .expect("announce");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let publishing = spawn_publisher(publisher, track, stop_rx);

    // Media flows first; then the subscriber's node dies: it reconnects to
    // Frankfurt and resumes.
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = subscriber.next_event().await {
            if matches!(event, Event::Media { .. }) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(first, Ok(true), "media flows before the node dies");
    fleet.fleet.take("eu-ams-1").expect("ams").kill().await;
    let took =
        until_media_after_reconnect(&mut subscriber, "eu-fra-1", Duration::from_secs(10)).await;
    println!("subscriber's node killed: media again after {took:?}");

    // Now the publisher's (and the subscriber's) node dies: both move to
    // Amsterdam, the publisher re-announces, the subscription is restored.
    fleet.restart("eu-ams-1").await;
    fleet.wait_mesh_ready(Duration::from_secs(10)).await;
    fleet.fleet.take("eu-fra-1").expect("fra").kill().await;
    let took =
        until_media_after_reconnect(&mut subscriber, "eu-ams-1", Duration::from_secs(10)).await;
    println!("publisher's node killed: media again after {took:?}");
    let _ = stop.send(true);
    let reconnects = publishing.await.expect("publisher task");
    assert_eq!(
        reconnects, 1,
        "the publisher kept publishing through one reconnection"
    );
    fleet.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_denies_a_client_country_revokes_those_sessions_only() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &["eu-fra-1"]).await;
    let mut german = fleet
        .connect(
            "eu-fra-1",
            "acme-health",
            "ward",
            "de",
            Role::Subscribe,
            Some("DE"),
        )
        .await
        .expect("admitted from DE");
    let mut dutch = fleet
        .connect(
            "eu-fra-1",
            "acme-health",
            "ward",
            "nl",
            Role::Subscribe,
            Some("NL"),
        )
        .await
        .expect("admitted from NL");
    let mut spec = FleetSpec::default();
    spec.apps = spec.apps.replace(
        "client_countries = { deny = [\"RU\"] }",
        "client_countries = { deny = [\"RU\", \"DE\"] }",
    );
    fleet.rewrite_config(&spec);
    let report = fleet.fleet.reload().expect("valid config");
    assert_eq!(report.revoked_sessions, 1, "{report:?}");
    let closed = next_matching(&mut german, Duration::from_secs(3), |e| match e {
        Event::Closed { code, redirect, .. } => Some((code, redirect)),
        _ => None,
    })
    .await
    .expect("the German session is closed");
    assert_eq!(closed.0, Some(georelay::error::ErrorCode::GeofenceRevoked));
    assert!(closed.1.is_empty(), "no node would admit it: no redirect");
    let dutch_closed = next_matching(&mut dutch, Duration::from_millis(500), |e| {
        matches!(e, Event::Closed { .. }).then_some(())
    })
    .await;
    assert!(dutch_closed.is_none(), "the Dutch session stays");
    assert_eq!(fleet.status("eu-fra-1").await.sessions, 1);
    fleet.fleet.shutdown().await;
}
