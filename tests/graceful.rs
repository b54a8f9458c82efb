//! Graceful behaviour under faults, each measured:
//!
//! - the SDK's reconnecting [`Session`] on a node that drains (SIGTERM:
//!   `SHUTTING_DOWN` with targets) or dies (SIGKILL: noticed by the idle
//!   timeout) is connected again to the other allowed node, and its media
//!   resumes, within a bound (separate `serve --node` processes);
//! - a client and a mesh peer that stop acknowledging (every packet to and
//!   from them dropped by nftables inside a network namespace) are dropped
//!   after the idle timeout: the session leaves `/status` (its queues go
//!   with it), the link is reported down, and a bystander keeps its media.

mod faults;
mod support;

use std::time::Duration;

use georelay::auth::Role;
use georelay::client::{Event, Session};
use georelay::wire::TrackKind;
use support::fleet::{FleetSpec, TestFleet};
use support::served::ServedFleet;

/// The client idle timeout of these tests (`[limits] idle_timeout_ms`).
const IDLE: Duration = Duration::from_secs(3);
const LIMITS: &str =
    "[limits]\nidle_timeout_ms = 3000\nkeep_alive_ms = 500\ndrain_timeout_ms = 1000\n";
/// Rounds per way of losing the node.
const ROUNDS: usize = 3;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Reads `session`'s events until `done` says so or `limit` passes; the
/// moment it did, from `since`.
async fn wait_event(
    session: &mut Session,
    since: std::time::Instant,
    limit: Duration,
    mut done: impl FnMut(&Event) -> bool,
) -> Option<Duration> {
    let deadline = georelay::clock::timer_now() + limit;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, session.next_event()).await {
        if done(&event) {
            return Some(since.elapsed());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_drained_or_killed_node_reconnect_to_an_allowed_node_within_a_bound() {
    let spec = FleetSpec {
        extra: LIMITS.into(),
        ..FleetSpec::default()
    };
    let mut fleet = ServedFleet::configure(&spec);
    fleet.use_certs(&spec);
    fleet.serve_nodes(&["eu-fra-1", "eu-ams-1"], "warn");
    fleet.wait_links("eu-fra-1", &["eu-ams-1"]).await;
    let options = fleet.client_options();
    let targets = [fleet.target("eu-fra-1"), fleet.target("eu-ams-1")];
    let mut publisher = Session::connect(
        &options,
        &targets[1..],
        &fleet.join("acme-health", "ward", "monitor", Role::Publish),
    )
    .await
    .expect("publisher on ams");
    let track = publisher
        .announce(TrackKind::Audio, false, "mic")
        .await
        .expect("announce");
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let pace = {
        let sending = std::sync::Arc::clone(&sending);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut seq = 0;
            while sending.load(std::sync::atomic::Ordering::SeqCst) {
                tick.tick().await;
                seq += 1;
                let _ = publisher.send_media(track, seq, seq, b"vitals");
            }
        })
    };

    let mut figures: Vec<(&str, Vec<Duration>, Vec<Duration>)> = Vec::new();
    for (signal, bound) in [
        ("-TERM", Duration::from_secs(3)),
        ("-KILL", IDLE + Duration::from_secs(3)),
    ] {
        let mut reconnected = Vec::new();
        let mut resumed = Vec::new();
        for round in 0..ROUNDS {
            let mut subscriber = Session::connect(
                &options,
                &targets,
                &fleet.join("acme-health", "ward", "nurse", Role::Subscribe),
            )
            .await
            .expect("subscriber");
            assert_eq!(subscriber.client().node(), "eu-fra-1");
            subscriber.subscribe().await.expect("subscribe");
            let flowing = wait_event(
                &mut subscriber,
                georelay::clock::monotonic_now(),
                Duration::from_secs(10),
                |e| matches!(e, Event::Media { .. }),
            )
            .await;
            assert!(
                flowing.is_some(),
                "round {round}: media flows before {signal}"
            );
            fleet.signal("eu-fra-1", signal);
            let lost = georelay::clock::monotonic_now();
            let mut node = String::new();
            let back = wait_event(&mut subscriber, lost, bound, |e| match e {
                Event::Reconnected { node: n } => {
                    node = n.clone();
                    true
                }
                _ => false,
            })
            .await
            .unwrap_or_else(|| panic!("{signal} round {round}: reconnected within {bound:?}"));
            assert_eq!(node, "eu-ams-1", "reconnected to the other allowed node");
            let media = wait_event(&mut subscriber, lost, bound, |e| {
                matches!(e, Event::Media { .. })
            })
            .await
            .unwrap_or_else(|| panic!("{signal} round {round}: media resumes within {bound:?}"));
            reconnected.push(back);
            resumed.push(media);
            let status = fleet.wait_exit("eu-fra-1", Duration::from_secs(10)).await;
            if signal == "-TERM" {
                assert!(status.success(), "a drained node exits 0: {status}");
            }
            fleet.restart("eu-fra-1");
            fleet.wait_links("eu-fra-1", &["eu-ams-1"]).await;
        }
        reconnected.sort();
        resumed.sort();
        figures.push((signal, reconnected, resumed));
    }
    sending.store(false, std::sync::atomic::Ordering::SeqCst);
    pace.await.expect("publisher");
    for (signal, reconnected, resumed) in &figures {
        println!(
            "node {signal}: subscriber reconnected to eu-ams-1 p50 {:?} max {:?}; media resumed p50 {:?} max {:?} ({ROUNDS} rounds, idle timeout {IDLE:?})",
            percentile(reconnected, 0.5),
            reconnected[reconnected.len() - 1],
            percentile(resumed, 0.5),
            resumed[resumed.len() - 1],
        );
    }
}

#[test]
fn a_client_and_a_mesh_peer_that_stop_acknowledging_are_dropped_after_the_idle_timeout() {
    if !faults::netns::available() {
        return;
    }
    let netns = faults::netns::Netns::create().expect("namespace");
    let rules = netns.rules();
    netns.run(move || async move {
        let spec = FleetSpec {
            extra: LIMITS.into(),
            ..FleetSpec::default()
        };
        let fleet = TestFleet::start_nodes(spec, &["eu-fra-1", "eu-ams-1"]).await;
        let node = "eu-fra-1";
        let mut bystander = fleet
            .connect(node, "acme-health", "ward", "nurse", Role::Subscribe, None)
            .await
            .expect("bystander");
        bystander.subscribe().await.expect("subscribe");
        // The silent one comes from its own address (DE), so that nftables
        // can cut it alone.
        let mut silent = fleet
            .connect(node, "acme-health", "ward", "gone", Role::Subscribe, Some("DE"))
            .await
            .expect("subscriber that will go silent");
        silent.subscribe().await.expect("subscribe");
        let publisher = fleet
            .connect(node, "acme-health", "ward", "monitor", Role::Publish, None)
            .await
            .expect("publisher");
        let track = publisher
            .announce(TrackKind::Audio, false, "mic")
            .await
            .expect("announce");
        support::events::track_ready(&mut bystander).await;
        support::events::track_ready(&mut silent).await;
        assert_eq!(fleet.status(node).await.sessions, 3);

        let done = std::sync::atomic::AtomicBool::new(false);
        let send = support::events::send_until(&publisher, track, b"vitals", &done);
        let receive = support::events::receive_until(&mut bystander, track, &done);
        let faults = async {
            // The client stops acknowledging: nothing reaches it or comes back.
            rules
                .partition(fleet.node_addr(node).ip(), fleet.client_ip(Some("DE")))
                .expect("nft");
            let cut = georelay::clock::monotonic_now();
            let limit = IDLE + Duration::from_secs(3);
            let deadline = georelay::clock::timer_now() + limit;
            while fleet.status(node).await.sessions != 2 {
                assert!(
                    georelay::clock::timer_now() < deadline,
                    "the silent client is dropped within {limit:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let client_dropped = cut.elapsed();
            // The mesh peer stops acknowledging: the link is reported down.
            rules
                .partition(fleet.node_addr(node).ip(), fleet.node_addr("eu-ams-1").ip())
                .expect("nft");
            let cut = georelay::clock::monotonic_now();
            let deadline = georelay::clock::timer_now() + Duration::from_secs(5);
            while fleet
                .status(node)
                .await
                .links
                .get("eu-ams-1")
                .is_some_and(|l| l.up)
            {
                assert!(
                    georelay::clock::timer_now() < deadline,
                    "the silent mesh peer is dropped within 5 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let link_dropped = cut.elapsed();
            rules.heal().expect("heal");
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            (client_dropped, link_dropped)
        };
        let (sent, got, (client_dropped, link_dropped)) = tokio::join!(send, receive, faults);
        let delivery = got.len() as f64 / sent as f64;
        println!(
            "blackholed client dropped after {client_dropped:?} (idle timeout {IDLE:?}); blackholed mesh peer \
             reported down after {link_dropped:?} (mesh idle timeout 2 s); bystander delivery {delivery:.4} ({} of {sent})",
            got.len()
        );
        assert!(
            client_dropped >= IDLE - Duration::from_millis(500),
            "dropped by the idle timeout, not earlier: {client_dropped:?}"
        );
        assert!(link_dropped >= Duration::from_millis(1500), "{link_dropped:?}");
        assert!(delivery >= 0.99, "the bystander keeps its media: {delivery}");
        // The silent client's connection is gone on its side too once it
        // hears nothing (its own idle timeout).
        support::events::until(Duration::from_secs(10), "the silent client sees its close", || {
            let closed = silent.is_closed();
            async move { closed }
        })
        .await;
    });
}
