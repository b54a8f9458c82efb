//! A fleet of separate `georelay serve --node` processes with certificates
//! from `georelay certs`: mutual TLS between processes, failover when a
//! transit process is SIGKILLed (no QUIC close reaches its peers), draining
//! on SIGTERM, and core dumps disabled in every serving process.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use georelay::auth::Role;
use georelay::client::{Client, Event};
use georelay::wire::TrackKind;
use support::fleet::FleetSpec;
use support::served::ServedFleet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_with_certs_fail_over_when_the_transit_is_sigkilled() {
    let mut fleet = ServedFleet::configure(&FleetSpec::default());
    fleet.use_certs(&FleetSpec::default());
    fleet.serve_nodes(&["eu-fra-1", "eu-ams-1", "uk-lon-1"], "info");
    fleet
        .wait_links("eu-fra-1", &["eu-ams-1", "uk-lon-1"])
        .await;
    fleet
        .wait_links("eu-ams-1", &["eu-fra-1", "uk-lon-1"])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let options = fleet.client_options();
    let mut subscriber = Client::connect(
        &options,
        &[fleet.target("eu-ams-1")],
        &fleet.join("globex-media", "tv", "viewer", Role::Subscribe),
    )
    .await
    .expect("subscriber");
    subscriber.subscribe().await.expect("subscribe");
    let publisher = Client::connect(
        &options,
        &[fleet.target("eu-fra-1")],
        &fleet.join("globex-media", "tv", "studio", Role::Publish),
    )
    .await
    .expect("publisher");
    let track = publisher
        .announce(TrackKind::Video, false, "cam")
        .await
        .expect("announce");
    support::events::track_added(&mut subscriber).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Media flows fra -> lon -> ams between three processes.
    let mut seq = 0u64;
    for _ in 0..100 {
        publisher
            .send_media(track, seq, seq, b"frame")
            .expect("send");
        seq += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut received_before = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, subscriber.events().next()).await {
        if matches!(event, Event::Media { .. }) {
            received_before += 1;
        }
    }
    assert!(
        received_before >= 99,
        "media crosses three processes: {received_before}"
    );
    let lon = fleet.status("uk-lon-1").await;
    assert!(
        lon.apps
            .get("globex-media")
            .is_some_and(|t| t.packets_in >= 99),
        "London is the transit: {lon:?}"
    );

    // SIGKILL London: no CONNECTION_CLOSE reaches its peers; they notice by
    // the mesh idle timeout and re-route over the direct link.
    fleet.signal("uk-lon-1", "-KILL");
    let killed = tokio::time::Instant::now();
    let mut resumed = None;
    let first_after = seq;
    while killed.elapsed() < Duration::from_secs(15) {
        publisher
            .send_media(track, seq, seq, b"frame")
            .expect("send");
        seq += 1;
        if let Ok(Some(Event::Media { header, .. })) =
            tokio::time::timeout(Duration::from_millis(5), subscriber.events().next()).await
        {
            if header.seq >= first_after {
                resumed = Some(killed.elapsed());
                break;
            }
        }
    }
    let resumed = resumed.expect("delivery resumes over fra -> ams after London's silent death");
    println!("SIGKILL failover: delivery resumed {resumed:?} after the transit process died");
    assert!(
        resumed < Duration::from_secs(6),
        "bounded by the 2 s mesh idle timeout plus re-routing: {resumed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_disables_core_dumps_and_drains_on_sigterm() {
    let mut fleet = ServedFleet::configure(&FleetSpec::default());
    fleet.use_certs(&FleetSpec::default());
    fleet.serve_nodes(&["eu-fra-1", "eu-ams-1"], "info");
    fleet.wait_links("eu-fra-1", &["eu-ams-1"]).await;

    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", fleet.pid("eu-fra-1"))).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core line");
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "RLIMIT_CORE is 0: {core}"
    );

    let mut client = Client::connect(
        &fleet.client_options(),
        &[fleet.target("eu-fra-1")],
        &fleet.join("acme-health", "ward", "nurse", Role::Subscribe),
    )
    .await
    .expect("admitted");
    fleet.signal("eu-fra-1", "-TERM");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.events().next().await {
                Some(Event::Closed { code, redirect, .. }) => return (code, redirect),
                Some(_) => continue,
                None => panic!("events ended without a close"),
            }
        }
    })
    .await
    .expect("closed within the drain");
    assert_eq!(closed.0, Some(georelay::error::ErrorCode::ShuttingDown));
    let targets: Vec<&str> = closed.1.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(targets, ["eu-ams-1"], "redirected to the other EU node");
    let status = fleet.wait_exit("eu-fra-1", Duration::from_secs(10)).await;
    assert!(status.success(), "clean exit after draining: {status:?}");
}
