//! The mesh control plane's safety and liveness claims, checked on a
//! simulated network of `Plane`s (tests/support/sim.rs): no sockets, no
//! quinn, simulated time.
//!
//! Safety: a node outside an app's allowed regions never receives any of the
//! app's control messages (so never a channel name or track id), never holds
//! the channel, and never carries its media. Liveness: every subscriber node
//! with an allowed path to the origin gets the track exactly once over a
//! loop-free tree, and one without such a path gets nothing and is told the
//! origin is unreachable.

#[path = "support/sim.rs"]
mod sim;

use std::collections::{BTreeMap, BTreeSet};

use georelay::ids::NodeId;
use georelay::relay::plane::ChannelKey;
use proptest::prelude::*;
use sim::{Media, Mesh, START_MS, channel, node};

const FRA: &str = "eu-fra-1";
const AMS: &str = "eu-ams-1";
const LON: &str = "uk-lon-1";
const IAD: &str = "us-iad-1";
const SFO: &str = "us-sfo-1";
const SIN: &str = "ap-sin-1";

/// The example fleet of the repo's regions.toml (six nodes, four regions),
/// rebuilt here so the tests do not depend on that file.
const NODES: [(&str, &str); 6] = [
    (FRA, "eu"),
    (AMS, "eu"),
    (LON, "uk"),
    (IAD, "us"),
    (SFO, "us"),
    (SIN, "apac"),
];
const LINKS: [(&str, &str, u32); 7] = [
    (FRA, LON, 12),
    (LON, AMS, 8),
    (FRA, AMS, 30),
    (LON, IAD, 70),
    (IAD, SFO, 60),
    (SFO, SIN, 170),
    (FRA, SIN, 160),
];
const REGIONS: [(&str, &str); 4] = [("eu", "DE"), ("uk", "GB"), ("us", "US"), ("apac", "SG")];

/// The example apps, with their policies.
const APPS: &str = r#"
[apps.acme-health]
secret = "sim-secret-acme-health"
allow_regions = ["eu"]

[apps.globex-media]
secret = "sim-secret-globex-media"
deny_regions = ["apac"]

[apps.initech-chat]
secret = "sim-secret-initech-chat"
allow_regions = ["eu", "us"]

[apps.umbrella-video]
secret = "sim-secret-umbrella-video"
allow_regions = ["eu", "uk", "us", "apac"]
"#;

fn fleet_toml(
    regions: &[(&str, &str)],
    nodes: &[(&str, &str)],
    links: &[(&str, &str, u32)],
    apps: &str,
) -> String {
    let mut text = String::new();
    for (region, country) in regions {
        text += &format!("[regions.{region}]\ncountries = [\"{country}\"]\n");
    }
    for (index, (id, region)) in nodes.iter().enumerate() {
        text += &format!(
            "[nodes.{id}]\nregion = \"{region}\"\nlisten = \"127.0.0.{n}:4433\"\nadmin = \"127.0.0.{n}:9090\"\n",
            n = index + 1
        );
    }
    for (a, b, rtt) in links {
        text += &format!("[[links]]\nbetween = [\"{a}\", \"{b}\"]\nrtt_ms = {rtt}\n");
    }
    text + apps
}

fn example_toml(apps: &str) -> String {
    fleet_toml(&REGIONS, &NODES, &LINKS, apps)
}

/// The example fleet with every link up and the link state settled.
fn example_mesh() -> Mesh {
    let mut mesh = Mesh::new(&example_toml(APPS));
    mesh.all_links_up();
    mesh.run_until_quiet();
    mesh
}

fn ids(nodes: &[&str]) -> BTreeSet<NodeId> {
    nodes.iter().map(|n| node(n)).collect()
}

fn unreachable_from(mesh: &Mesh, at: &str, key: &ChannelKey) -> BTreeSet<NodeId> {
    mesh.plane(at)
        .reachability(key)
        .unreachable
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// The tracks' hops must be exactly `hops` (directed), one copy each, with
/// no stray copy, loop or stranded node.
fn assert_tree(media: &Media, hops: &[(&str, &str)]) {
    let expected: Vec<String> = hops.iter().map(|(a, b)| format!("{a}->{b}x1")).collect();
    let mut actual = media.hops();
    actual.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(actual, expected_sorted, "media hops: {media:#?}");
    assert!(media.rejected.is_empty(), "stray copies: {media:#?}");
    assert!(media.loops.is_empty(), "loops: {media:#?}");
    assert!(media.stranded.is_empty(), "stranded: {media:#?}");
}

/// No node outside the app's allowed regions received any of its messages,
/// and none holds the channel; and the check is not vacuous.
fn assert_fenced(mesh: &Mesh, key: &ChannelKey, outside: &[&str]) {
    let app = key.0.as_str();
    assert!(
        !mesh.app_messages(app).is_empty(),
        "no {app} message was delivered at all: the fence check would be vacuous"
    );
    let leaks = mesh.leaks(app);
    assert!(
        leaks.is_empty(),
        "{app} messages reached disallowed nodes: {leaks:#?}"
    );
    for id in outside {
        assert!(
            !mesh.nodes_that_heard_of(app).contains(*id),
            "{id} received a {app} message"
        );
        if mesh.is_alive(id) {
            assert!(
                !mesh.plane(id).seen_channels().contains(key),
                "{id} has seen channel {key:?}"
            );
            assert!(
                mesh.plane(id).forwarding(key).is_empty(),
                "{id} forwards {key:?}"
            );
        }
    }
    assert_eq!(
        mesh.violations(),
        0,
        "a plane received a frame it must never get"
    );
}

// ----- 1. path enforcement ---------------------------------------------------

#[test]
fn eu_only_app_takes_the_direct_link_and_the_uk_never_hears_of_it() {
    let mut mesh = example_mesh();
    let key = channel("acme-health", "consultation-42");
    mesh.publish(FRA, &key, &[1, 2]);
    mesh.subscribe(AMS, &key);
    mesh.run_until_quiet();

    let media = mesh.media(&key, FRA);
    assert!(media.reaches(AMS), "{media:#?}");
    assert_tree(&media, &[(FRA, AMS)]);
    assert_eq!(
        mesh.forwarding(&node(AMS), &key)
            .get(&node(FRA))
            .and_then(|f| f.upstream.clone()),
        Some(node(FRA))
    );
    assert_eq!(mesh.plane(AMS).tracks(&key).len(), 2);
    assert!(mesh.plane(FRA).seen_channels().contains(&key));
    assert!(mesh.plane(AMS).seen_channels().contains(&key));
    assert_fenced(&mesh, &key, &[LON, IAD, SFO, SIN]);
    assert_eq!(
        mesh.nodes_that_heard_of("acme-health"),
        ids(&[FRA, AMS]),
        "only the EU nodes may hear of the app"
    );
}

// ----- 2. a permitted transit is used ---------------------------------------

#[test]
fn app_allowed_to_transit_the_uk_takes_the_cheaper_path_through_london() {
    let mut mesh = example_mesh();
    let key = channel("globex-media", "launch");
    mesh.publish(FRA, &key, &[7]);
    mesh.subscribe(AMS, &key);
    mesh.run_until_quiet();

    let media = mesh.media(&key, FRA);
    assert!(media.reaches(AMS), "{media:#?}");
    assert_tree(&media, &[(FRA, LON), (LON, AMS)]);
    assert!(!media.reaches(LON), "London only transits");
    assert_fenced(&mesh, &key, &[SIN]);
}

// ----- 3. fail closed -------------------------------------------------------

#[test]
fn eu_and_us_app_fails_closed_and_never_touches_the_uk() {
    let mut mesh = example_mesh();
    let key = channel("initech-chat", "standup");
    mesh.publish(IAD, &key, &[3]);
    mesh.subscribe(FRA, &key);
    mesh.subscribe(SFO, &key);
    mesh.run_until_quiet();

    let media = mesh.media(&key, IAD);
    assert!(media.reaches(SFO), "the US side works: {media:#?}");
    assert!(!media.reaches(FRA), "{media:#?}");
    assert!(media.received.keys().all(|n| n.as_str() != FRA));
    assert!(mesh.plane(FRA).tracks(&key).is_empty());
    let unreachable = unreachable_from(&mesh, FRA, &key);
    assert!(
        unreachable.contains(IAD) && unreachable.contains(SFO),
        "fra must report the US nodes unreachable: {unreachable:?}"
    );
    assert!(!unreachable.contains(AMS), "{unreachable:?}");
    assert_fenced(&mesh, &key, &[LON, SIN]);
}

// ----- 4. failover ----------------------------------------------------------

fn flows(mesh: &Mesh, key: &ChannelKey, origin: &str, to: &str) -> bool {
    mesh.media(key, origin).reaches(to)
}

#[test]
fn failover_moves_to_the_direct_link_then_fails_closed_then_recovers() {
    let mut mesh = example_mesh();
    let key = channel("globex-media", "live");
    mesh.publish(FRA, &key, &[1]);
    mesh.subscribe(AMS, &key);
    mesh.run_until_quiet();
    assert_tree(&mesh.media(&key, FRA), &[(FRA, LON), (LON, AMS)]);

    // The transit node dies mid-stream.
    let killed_at = mesh.now_ms();
    mesh.kill(LON);
    assert!(!flows(&mesh, &key, FRA, AMS));
    let resumed = mesh
        .run_until(10_000, |m| flows(m, &key, FRA, AMS))
        .map(|at| at - killed_at);
    let quiet = mesh.run_until_quiet() - killed_at;
    assert_tree(&mesh.media(&key, FRA), &[(FRA, AMS)]);
    println!(
        "failover (transit node killed): media resumed after {resumed:?} ms, quiet after {quiet} ms"
    );
    assert!(
        resumed.is_some_and(|ms| ms <= 1_000),
        "resumed after {resumed:?} ms"
    );

    // The last allowed path dies: fail closed, no detour through apac.
    let cut_at = mesh.now_ms();
    mesh.link_down(FRA, AMS);
    mesh.run_until_quiet();
    let media = mesh.media(&key, FRA);
    assert!(!media.reaches(AMS), "{media:#?}");
    assert!(media.link_copies.is_empty(), "{media:#?}");
    let unreachable = unreachable_from(&mesh, AMS, &key);
    assert!(unreachable.contains(FRA), "{unreachable:?}");
    let failed_decision = mesh
        .decisions()
        .iter()
        .any(|d| d.at_ms >= cut_at && d.node.as_str() == AMS && d.outcome.is_unavailable());
    assert!(
        failed_decision,
        "ams must record ROUTE_UNAVAILABLE: {:#?}",
        mesh.decisions()
    );

    // London comes back: the subscriber recovers without resubscribing.
    let restored_at = mesh.now_ms();
    mesh.restart(LON);
    let recovered = mesh
        .run_until(10_000, |m| flows(m, &key, FRA, AMS))
        .map(|at| at - restored_at);
    mesh.run_until_quiet();
    println!("recovery (transit node restarted): media resumed after {recovered:?} ms");
    assert!(
        recovered.is_some_and(|ms| ms <= 1_000),
        "recovered after {recovered:?} ms"
    );
    assert_tree(&mesh.media(&key, FRA), &[(FRA, LON), (LON, AMS)]);
    assert!(unreachable_from(&mesh, AMS, &key).is_empty());

    // The direct link comes back too; media keeps flowing exactly once.
    mesh.link_up(FRA, AMS);
    mesh.run_until_quiet();
    let media = mesh.media(&key, FRA);
    assert!(media.reaches(AMS));
    assert_eq!(media.received.get(AMS), Some(&1));
    assert_fenced(&mesh, &key, &[SIN]);
}

#[test]
fn a_transit_link_failure_reroutes_without_killing_a_node() {
    let mut mesh = example_mesh();
    let key = channel("globex-media", "link-failure");
    mesh.publish(FRA, &key, &[1]);
    mesh.subscribe(AMS, &key);
    mesh.run_until_quiet();
    let cut_at = mesh.now_ms();
    mesh.link_down(LON, AMS);
    let resumed = mesh
        .run_until(10_000, |m| flows(m, &key, FRA, AMS))
        .map(|at| at - cut_at);
    mesh.run_until_quiet();
    println!("failover (transit link cut): media resumed after {resumed:?} ms");
    assert!(resumed.is_some(), "never resumed");
    assert_tree(&mesh.media(&key, FRA), &[(FRA, AMS)]);
    // London no longer forwards the channel once the subscriber moved away.
    assert!(
        mesh.plane(LON)
            .forwarding(&key)
            .values()
            .all(|f| f.downstream.is_empty()),
        "{:?}",
        mesh.plane(LON).forwarding(&key)
    );
}

// ----- 5. fan-out tree ------------------------------------------------------

#[test]
fn subscribers_sharing_a_path_get_one_copy_per_link_whatever_the_order() {
    let subscribers = [SFO, IAD, AMS, LON];
    // Every order of subscription gives the same tree.
    for rotation in 0..subscribers.len() {
        for reverse in [false, true] {
            let mut order: Vec<&str> = subscribers.to_vec();
            order.rotate_left(rotation);
            if reverse {
                order.reverse();
            }
            let mut mesh = example_mesh();
            let key = channel("umbrella-video", "keynote");
            mesh.publish(FRA, &key, &[1]);
            for sub in &order {
                mesh.subscribe(sub, &key);
            }
            mesh.run_until_quiet();
            let media = mesh.media(&key, FRA);
            for sub in subscribers {
                assert!(media.reaches(sub), "order {order:?}: {media:#?}");
                assert_eq!(media.received.get(sub), Some(&1), "order {order:?}");
            }
            // fra -> lon is shared by all four; lon -> iad by iad and sfo.
            assert_tree(&media, &[(FRA, LON), (LON, AMS), (LON, IAD), (IAD, SFO)]);
            assert!(!media.reaches(SIN));
        }
    }
}

// ----- 6. policy reload -----------------------------------------------------

#[test]
fn reload_removing_a_region_forgets_the_channel_there_and_reroutes() {
    let mut mesh = example_mesh();
    let key = channel("globex-media", "reloaded");
    mesh.publish(FRA, &key, &[1]);
    mesh.subscribe(AMS, &key);
    mesh.subscribe(IAD, &key);
    mesh.run_until_quiet();
    assert_tree(
        &mesh.media(&key, FRA),
        &[(FRA, LON), (LON, AMS), (LON, IAD)],
    );
    assert!(mesh.plane(LON).seen_channels().contains(&key));

    let reloaded = APPS.replace(
        r#"deny_regions = ["apac"]"#,
        r#"deny_regions = ["apac", "uk"]"#,
    );
    assert_ne!(reloaded, APPS);
    mesh.set_policy(&example_toml(&reloaded));
    let epoch = mesh.policies().len() - 1;
    let reload_at = mesh.now_ms();

    // From the moment the reload returns, London carries nothing of the app.
    assert!(!mesh.plane(LON).seen_channels().contains(&key));
    assert!(mesh.plane(LON).forwarding(&key).is_empty());
    assert!(mesh.plane(LON).tracks(&key).is_empty());
    let media = mesh.media(&key, FRA);
    assert!(
        media
            .link_copies
            .keys()
            .all(|(a, b)| a.as_str() != LON && b.as_str() != LON),
        "{media:#?}"
    );

    let resumed = mesh
        .run_until(10_000, |m| flows(m, &key, FRA, AMS))
        .map(|at| at - reload_at);
    mesh.run_until_quiet();
    println!("reload: media rerouted after {resumed:?} ms");
    let media = mesh.media(&key, FRA);
    assert_tree(&media, &[(FRA, AMS)]);
    assert!(
        !media.reaches(IAD),
        "the US is now cut off from the EU: {media:#?}"
    );
    assert!(unreachable_from(&mesh, IAD, &key).contains(FRA));
    assert!(!mesh.plane(LON).seen_channels().contains(&key));
    let sent_to_lon_after: Vec<_> = mesh
        .app_messages("globex-media")
        .into_iter()
        .filter(|d| d.epoch >= epoch && d.to.as_str() == LON)
        .collect();
    assert!(sent_to_lon_after.is_empty(), "{sent_to_lon_after:#?}");
    assert!(mesh.leaks("globex-media").is_empty());
}

#[test]
fn reload_that_re_allows_a_region_restores_the_cheaper_transit_for_new_subscribers() {
    let strict = APPS.replace(
        r#"deny_regions = ["apac"]"#,
        r#"deny_regions = ["apac", "uk"]"#,
    );
    let mut mesh = Mesh::new(&example_toml(&strict));
    mesh.all_links_up();
    mesh.run_until_quiet();
    let key = channel("globex-media", "widened");
    mesh.publish(FRA, &key, &[1]);
    mesh.subscribe(AMS, &key);
    mesh.run_until_quiet();
    assert_tree(&mesh.media(&key, FRA), &[(FRA, AMS)]);
    assert!(!mesh.plane(LON).seen_channels().contains(&key));

    mesh.set_policy(&example_toml(APPS));
    mesh.subscribe(IAD, &key);
    mesh.run_until_quiet();
    assert_eq!(
        mesh.plane(IAD).tracks(&key).len(),
        1,
        "iad must learn the channel's tracks once the UK transit is allowed again; \
         lon has seen it: {}",
        mesh.plane(LON).seen_channels().contains(&key)
    );
    let media = mesh.media(&key, FRA);
    assert!(media.reaches(AMS) && media.reaches(IAD), "{media:#?}");
    assert_eq!(media.received.get(IAD), Some(&1));
    assert!(
        media.loops.is_empty() && media.rejected.is_empty(),
        "{media:#?}"
    );
}

#[test]
fn reload_forgets_a_channel_name_that_a_local_client_used_before() {
    let mut mesh = example_mesh();
    // A London client subscribes to a channel nobody publishes, then leaves:
    // the plane garbage-collects the channel but keeps the name as seen.
    let key = channel("umbrella-video", "never-published");
    mesh.subscribe(LON, &key);
    mesh.run_until_quiet();
    mesh.unsubscribe(LON, &key);
    mesh.run_until_quiet();
    assert!(mesh.plane(LON).forwarding(&key).is_empty());
    assert!(mesh.plane(LON).seen_channels().contains(&key));
    // A second channel that London still subscribes to at reload time.
    let held = channel("umbrella-video", "held");
    mesh.subscribe(LON, &held);
    mesh.run_until_quiet();

    let reloaded = APPS.replace(
        r#"allow_regions = ["eu", "uk", "us", "apac"]"#,
        r#"allow_regions = ["eu", "us", "apac"]"#,
    );
    assert_ne!(reloaded, APPS);
    mesh.set_policy(&example_toml(&reloaded));
    mesh.run_until_quiet();
    assert!(
        !mesh.plane(LON).seen_channels().contains(&held),
        "a held channel is forgotten"
    );
    assert!(
        !mesh.plane(LON).seen_channels().contains(&key),
        "uk-lon-1 is no longer allowed for umbrella-video but still holds a channel name"
    );
}

// ----- wall-clock steps -----------------------------------------------------

const TWO_MINUTES_MS: i64 = 120_000;

/// Whether every subscriber node gets the origin's media and sees exactly
/// `tracks` of it.
fn all_served(mesh: &Mesh, key: &ChannelKey, subscribers: &[&str], tracks: &[u64]) -> bool {
    let media = mesh.media(key, FRA);
    subscribers.iter().all(|at| {
        let seen: BTreeSet<u64> = mesh
            .plane(at)
            .tracks(key)
            .into_iter()
            .map(|(_, t)| t.track)
            .collect();
        media.reaches(at) && seen == tracks.iter().map(|t| sim::track_key(key, *t)).collect()
    })
}

/// Runs `ms` of simulated time, checking every driver wake-up that media
/// still reaches every subscriber; returns the wake-ups where it did not.
fn outage_ticks(mesh: &mut Mesh, ms: u64, key: &ChannelKey, subscribers: &[&str]) -> u32 {
    let mut missed = 0;
    for _ in 0..ms / sim::TICK_MS {
        mesh.advance(sim::TICK_MS);
        if !all_served(mesh, key, subscribers, &[1]) {
            missed += 1;
        }
    }
    missed
}

#[test]
fn wall_clock_steps_of_two_minutes_on_the_transit_and_the_origin_keep_every_subscriber_served() {
    let mut mesh = example_mesh();
    let key = channel("globex-media", "live");
    let subscribers = [AMS, IAD, SFO];
    mesh.publish(FRA, &key, &[1]);
    for at in subscribers {
        mesh.subscribe(at, &key);
    }
    mesh.run_until_quiet();
    assert!(all_served(&mesh, &key, &subscribers, &[1]));

    // London (transit to all three) and Frankfurt (the origin) step back
    // two minutes, stay there for longer than a downstream subscription
    // lives, then step forward again.
    mesh.step_wall_clock(LON, -TWO_MINUTES_MS);
    mesh.step_wall_clock(FRA, -TWO_MINUTES_MS);
    let missed_back = outage_ticks(&mut mesh, 20_000, &key, &subscribers);
    mesh.step_wall_clock(LON, TWO_MINUTES_MS);
    mesh.step_wall_clock(FRA, TWO_MINUTES_MS);
    let missed_forward = outage_ticks(&mut mesh, 20_000, &key, &subscribers);
    assert_eq!(
        (missed_back, missed_forward),
        (0, 0),
        "wake-ups without media after the backward and the forward step"
    );
}

#[test]
fn an_origin_restarted_with_its_wall_clock_two_minutes_behind_still_replaces_its_tracks() {
    let mut mesh = example_mesh();
    let key = channel("globex-media", "live");
    mesh.publish(FRA, &key, &[1]);
    mesh.subscribe(AMS, &key);
    mesh.subscribe(IAD, &key);
    mesh.run_until_quiet();
    assert!(all_served(&mesh, &key, &[AMS, IAD], &[1]));

    // Frankfurt's clock steps back, then the process restarts: the sequence
    // numbers of its new run start two minutes below those its peers hold.
    mesh.step_wall_clock(FRA, -TWO_MINUTES_MS);
    mesh.kill(FRA);
    mesh.run_until_quiet();
    mesh.restart_empty(FRA);
    mesh.publish(FRA, &key, &[2]);
    let served = mesh.run_until(10_000, |m| all_served(m, &key, &[AMS, IAD], &[2]));
    assert!(
        served.is_some(),
        "the new run's track replaces the old one everywhere: ams sees {:?}, iad sees {:?}",
        mesh.plane(AMS).tracks(&key),
        mesh.plane(IAD).tracks(&key)
    );
    mesh.run_until_quiet();
    assert!(all_served(&mesh, &key, &[AMS, IAD], &[2]));
}

#[test]
fn a_restarted_origin_whose_publishers_left_withdraws_their_tracks() {
    let mut mesh = example_mesh();
    let key = channel("globex-media", "ghost");
    mesh.publish(FRA, &key, &[1]);
    mesh.subscribe(AMS, &key);
    mesh.run_until_quiet();
    assert_eq!(mesh.plane(AMS).tracks(&key).len(), 1);
    // Frankfurt dies; its publisher reconnects elsewhere and stops there.
    mesh.kill(FRA);
    mesh.advance(2_000);
    mesh.restart_empty(FRA);
    mesh.run_until_quiet();
    let media = mesh.media(&key, FRA);
    assert!(!media.reaches(AMS), "{media:#?}");
    let ghosts = mesh.plane(AMS).tracks(&key);
    assert!(
        ghosts.is_empty(),
        "eu-ams-1 still lists tracks of a publisher that is gone: {ghosts:?}"
    );
}

#[test]
fn a_subscription_in_flight_across_revoke_and_restore_leaves_no_orphan_forwarding() {
    let mut mesh = example_mesh();
    let key = channel("umbrella-video", "rollback");
    mesh.publish(IAD, &key, &[1]);
    mesh.run_until_quiet();
    // ams subscribes: its Subscribe to lon (ams -> lon -> iad) is in flight
    // when the operator revokes the EU and the UK (so ams cannot tell lon
    // it left) and, at once, rolls the change back.
    mesh.subscribe(AMS, &key);
    let us_apac_only = APPS.replace(
        r#"allow_regions = ["eu", "uk", "us", "apac"]"#,
        r#"allow_regions = ["us", "apac"]"#,
    );
    assert_ne!(us_apac_only, APPS);
    mesh.set_policy(&example_toml(&us_apac_only));
    mesh.set_policy(&example_toml(APPS));
    mesh.run_until_quiet();
    // lon's confirmation reaches ams, which asked for nothing: ams tells lon
    // to stop at once (found by PLANE_SIM_CASES=8000).
    let media = mesh.media(&key, IAD);
    assert!(
        media.rejected.is_empty() && media.link_copies.is_empty(),
        "an orphan subscription outlives the restore: {media:#?}"
    );
    // And subscriptions are soft state: one nobody refreshes expires.
    mesh.advance(
        (georelay::relay::plane::EXPIRE + 2 * georelay::relay::plane::REFRESH).as_millis() as u64,
    );
    mesh.run_until_quiet();

    // The revoked subscriber is gone, so nothing may be forwarded to ams.
    assert!(mesh.plane(AMS).forwarding(&key).is_empty());
    let lon = mesh.plane(LON).forwarding(&key);
    assert!(
        lon.values().all(|f| f.downstream.is_empty()),
        "uk-lon-1 forwards to a subscriber that no longer exists: {lon:?}"
    );
    let media = mesh.media(&key, IAD);
    assert!(
        media.rejected.is_empty(),
        "copies nobody accepts: {media:#?}"
    );
}

#[test]
fn tracks_of_an_origin_that_never_returns_are_forgotten_after_the_expiry() {
    let mut mesh = example_mesh();
    let key = channel("globex-media", "orphaned");
    mesh.publish(IAD, &key, &[1, 2]);
    mesh.subscribe(AMS, &key);
    mesh.run_until_quiet();
    assert_eq!(mesh.plane(AMS).tracks(&key).len(), 2);
    mesh.kill(IAD);
    // A short outage keeps the tracks (marked unreachable)...
    mesh.advance(10_000);
    mesh.run_until_quiet();
    assert_eq!(
        mesh.plane(AMS).tracks(&key).len(),
        2,
        "kept through a short outage"
    );
    assert!(
        mesh.plane(AMS)
            .reachability(&key)
            .unreachable
            .iter()
            .any(|(n, _)| n.as_str() == IAD)
    );
    // ...a long one forgets them.
    mesh.advance(georelay::relay::plane::ORIGIN_EXPIRY.as_millis() as u64);
    mesh.run_until_quiet();
    assert!(
        mesh.plane(AMS).tracks(&key).is_empty(),
        "forgotten after the expiry"
    );
    assert!(mesh.plane(LON).tracks(&key).is_empty(), "everywhere");
}

#[test]
fn a_withdrawn_channel_announcement_does_not_circulate_around_a_cycle() {
    let mut mesh = example_mesh();
    // iad publishes, then its publisher leaves: the empty announcement
    // reaches the fra - lon - ams triangle through lon.
    let key = channel("globex-media", "withdrawn");
    mesh.publish(IAD, &key, &[1]);
    mesh.run_until_quiet();
    mesh.publish(IAD, &key, &[]);
    let quiet = mesh.try_run_until_quiet();
    assert!(
        quiet.is_ok(),
        "{}",
        quiet.err().map(|e| e.to_string()).unwrap_or_default()
    );
    for id in [FRA, AMS, LON, SFO] {
        assert!(
            mesh.plane(id).tracks(&key).is_empty(),
            "{id} still lists tracks"
        );
    }
}

// ----- 7. properties on random meshes --------------------------------------

/// A random fleet: nodes `n0..`, regions `r0..`, a random spanning tree plus
/// extra links, and one fenced app.
#[derive(Clone, Debug)]
struct Scenario {
    regions: usize,
    node_regions: Vec<usize>,
    links: Vec<(usize, usize, u32)>,
    allowed: Vec<usize>,
    origin: usize,
    subscribers: Vec<usize>,
    failures: Vec<Failure>,
}

#[derive(Clone, Debug)]
enum Failure {
    LinkDown(usize),
    LinkUp(usize),
    Kill(usize),
    Restart(usize),
    /// A local session on the node subscribes to both channels.
    Subscribe(usize),
    /// The node's last local subscriber leaves both channels.
    Unsubscribe(usize),
    /// The origin's publisher changes its track set (a new track id).
    Republish(u64),
    /// Reload with the fenced app allowed in exactly these regions.
    Reload(Vec<usize>),
    /// Let this much time pass (partial delivery) before the next step.
    Wait(u64),
}

const COUNTRIES: [&str; 4] = ["DE", "GB", "US", "SG"];

fn scenario() -> impl Strategy<Value = Scenario> {
    (3usize..=7, 2usize..=4)
        .prop_flat_map(|(nodes, regions)| {
            let parents: Vec<BoxedStrategy<usize>> = (1..nodes).map(|i| (0..i).boxed()).collect();
            (
                Just(nodes),
                Just(regions),
                prop::collection::vec(0..regions, nodes),
                parents,
                prop::collection::vec((0..nodes, 0..nodes, 1u32..60), 0..nodes),
                prop::collection::vec(1u32..60, nodes - 1),
                prop::collection::btree_set(0..regions, 1..=regions),
            )
        })
        .prop_flat_map(
            |(nodes, regions, node_regions, parents, extra, tree_rtt, allowed)| {
                let mut links: Vec<(usize, usize, u32)> = Vec::new();
                let mut seen = BTreeSet::new();
                let tree = parents
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| (i + 1, p, tree_rtt[i]));
                for (a, b, rtt) in tree.chain(extra) {
                    let pair = (a.min(b), a.max(b));
                    if a != b && seen.insert(pair) {
                        links.push((pair.0, pair.1, rtt));
                    }
                }
                let allowed: Vec<usize> = allowed.into_iter().collect();
                let allowed_nodes: Vec<usize> = (0..nodes)
                    .filter(|n| allowed.contains(&node_regions[*n]))
                    .collect();
                let failures = prop::collection::vec(
                    prop_oneof![
                        (0..links.len()).prop_map(Failure::LinkDown),
                        (0..links.len()).prop_map(Failure::LinkUp),
                        (0..nodes).prop_map(Failure::Kill),
                        (0..nodes).prop_map(Failure::Restart),
                        (0..nodes).prop_map(Failure::Subscribe),
                        (0..nodes).prop_map(Failure::Unsubscribe),
                        (2u64..5).prop_map(Failure::Republish),
                        prop::collection::vec(0..regions, 1..=regions).prop_map(Failure::Reload),
                        (0u64..400).prop_map(Failure::Wait),
                    ],
                    0..16,
                );
                let pick = if allowed_nodes.is_empty() {
                    Just(Vec::new()).boxed()
                } else {
                    prop::sample::subsequence(allowed_nodes.clone(), 0..=allowed_nodes.len())
                        .boxed()
                };
                let origin = if allowed_nodes.is_empty() {
                    Just(None).boxed()
                } else {
                    prop::sample::select(allowed_nodes).prop_map(Some).boxed()
                };
                (
                    Just((regions, node_regions, links, allowed)),
                    origin,
                    pick,
                    failures,
                )
            },
        )
        .prop_filter_map(
            "the app must have an allowed node",
            |((regions, node_regions, links, allowed), origin, subscribers, failures)| {
                Some(Scenario {
                    regions,
                    node_regions,
                    links,
                    allowed,
                    origin: origin?,
                    subscribers,
                    failures,
                })
            },
        )
}

impl Scenario {
    fn toml(&self) -> String {
        self.toml_allowing(&self.allowed)
    }

    /// The fleet with the fenced app allowed in `allowed` (region indexes).
    fn toml_allowing(&self, allowed: &[usize]) -> String {
        let region_names: Vec<String> = (0..self.regions).map(|r| format!("r{r}")).collect();
        let node_names: Vec<String> = (0..self.node_regions.len())
            .map(|n| format!("n{n}"))
            .collect();
        let regions: Vec<(&str, &str)> = region_names
            .iter()
            .zip(COUNTRIES)
            .map(|(r, c)| (r.as_str(), c))
            .collect();
        let nodes: Vec<(&str, &str)> = node_names
            .iter()
            .zip(&self.node_regions)
            .map(|(n, r)| (n.as_str(), region_names[*r].as_str()))
            .collect();
        let links: Vec<(&str, &str, u32)> = self
            .links
            .iter()
            .map(|(a, b, rtt)| (node_names[*a].as_str(), node_names[*b].as_str(), *rtt))
            .collect();
        let allow = allowed
            .iter()
            .map(|r| format!("\"r{r}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let every = (0..self.regions)
            .map(|r| format!("\"r{r}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let apps = format!(
            "[apps.fenced]\nsecret = \"s1\"\nallow_regions = [{allow}]\n\
             [apps.open]\nsecret = \"s2\"\nallow_regions = [{every}]\n"
        );
        fleet_toml(&regions, &nodes, &links, &apps)
    }
}

fn name(n: usize) -> String {
    format!("n{n}")
}

fn check_scenario(scenario: &Scenario) -> Result<(), TestCaseError> {
    let text = scenario.toml();
    let mut mesh = Mesh::new(&text);
    mesh.all_links_up();
    mesh.try_run_until_quiet()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let fenced = channel("fenced", "room");
    let open = channel("open", "room");
    let origin = name(scenario.origin);
    mesh.publish(&origin, &fenced, &[1]);
    mesh.publish(&origin, &open, &[1]);
    let mut allowed = scenario.allowed.clone();
    let mut publisher_revoked = false;
    let initial: BTreeSet<usize> = scenario.subscribers.iter().copied().collect();
    let mut subscribers =
        BTreeMap::from([(fenced.clone(), initial.clone()), (open.clone(), initial)]);
    for sub in &scenario.subscribers {
        mesh.subscribe(&name(*sub), &fenced);
        mesh.subscribe(&name(*sub), &open);
    }
    mesh.try_run_until_quiet()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for failure in &scenario.failures {
        match failure {
            Failure::LinkDown(i) | Failure::LinkUp(i) => {
                let (a, b, _) = scenario.links[*i];
                if matches!(failure, Failure::LinkDown(_)) {
                    mesh.link_down(&name(a), &name(b));
                } else {
                    mesh.link_up(&name(a), &name(b));
                }
            }
            Failure::Kill(n) => mesh.kill(&name(*n)),
            Failure::Restart(n) => mesh.restart(&name(*n)),
            Failure::Subscribe(n) | Failure::Unsubscribe(n) => {
                // Sessions of an app are only admitted on its allowed nodes.
                let subscribe = matches!(failure, Failure::Subscribe(_));
                for (key, nodes) in &mut subscribers {
                    if !mesh.policy().node_allowed(&key.0, &node(&name(*n))) {
                        continue;
                    }
                    if subscribe {
                        mesh.subscribe(&name(*n), key);
                        nodes.insert(*n);
                    } else {
                        mesh.unsubscribe(&name(*n), key);
                        nodes.remove(n);
                    }
                }
            }
            Failure::Republish(track) => {
                if !publisher_revoked {
                    mesh.publish(&origin, &fenced, &[1, *track]);
                }
                mesh.publish(&origin, &open, &[1, *track]);
            }
            Failure::Reload(regions) => {
                let mut next = regions.clone();
                next.sort_unstable();
                next.dedup();
                if !next.is_empty() {
                    allowed = next;
                    mesh.set_policy(&scenario.toml_allowing(&allowed));
                    // Sessions on nodes no longer allowed are revoked.
                    if let Some(nodes) = subscribers.get_mut(&fenced) {
                        nodes.retain(|n| allowed.contains(&scenario.node_regions[*n]));
                    }
                    publisher_revoked |= !allowed.contains(&scenario.node_regions[scenario.origin]);
                }
            }
            Failure::Wait(ms) => mesh.advance(*ms),
        }
    }
    let converged = mesh
        .try_run_until_quiet()
        .map_err(|e| TestCaseError::fail(format!("{e}\nconfig:\n{text}")))?;
    let text = scenario.toml_allowing(&allowed);
    prop_assert!(converged >= START_MS);

    // (a) no fenced message ever reached a disallowed node.
    let leaks = mesh.leaks("fenced");
    prop_assert!(leaks.is_empty(), "leaks: {leaks:#?}");
    // Receivers only ever drop frames that were in flight across a reload.
    prop_assert!(mesh.violations() <= mesh.stale_deliveries().len() as u64);
    let policy = std::sync::Arc::clone(mesh.policy());
    for id in mesh.nodes() {
        if !policy.node_allowed(&fenced.0, &id) && mesh.is_alive(id.as_str()) {
            prop_assert!(
                !mesh.plane(id.as_str()).seen_channels().contains(&fenced),
                "{id} is not allowed but holds the channel name"
            );
            prop_assert!(mesh.plane(id.as_str()).forwarding(&fenced).is_empty());
        }
    }

    // (b) and (c), for the fenced app and for an unrestricted one.
    for (key, nodes) in &subscribers {
        let media = mesh.media(key, &origin);
        prop_assert!(media.loops.is_empty(), "{:?} loops: {media:#?}", key);
        prop_assert!(
            media.rejected.is_empty(),
            "{:?} stray copies: {media:#?}\nconfig:\n{text}",
            key
        );
        for at in media.received.keys() {
            prop_assert!(policy.node_allowed(&key.0, at), "{at} carries {key:?}");
        }
        for sub in nodes {
            let sub = name(*sub);
            if !mesh.is_alive(&sub) {
                continue;
            }
            if key == &fenced && publisher_revoked {
                // The publisher's session was revoked by a reload.
                prop_assert!(
                    !media.reaches(&sub),
                    "{sub} gets {key:?} from a revoked origin"
                );
                continue;
            }
            let reachable =
                mesh.is_alive(&origin) && mesh.allowed_path_exists(key.0.as_str(), &sub, &origin);
            if reachable {
                prop_assert!(
                    media.reaches(&sub),
                    "{sub} does not get {key:?}\n{media:#?}\nconfig:\n{text}"
                );
                if sub != origin {
                    prop_assert_eq!(media.received.get(sub.as_str()), Some(&1));
                }
            } else {
                prop_assert!(
                    !media.reaches(&sub),
                    "{sub} gets {key:?} without an allowed path"
                );
                let unreachable = unreachable_from(&mesh, &sub, key);
                prop_assert!(
                    unreachable.contains(origin.as_str()),
                    "{sub} does not report {origin} unreachable for {key:?}: {unreachable:?}\nconfig:\n{text}"
                );
            }
        }
        for (a, b) in media.link_copies.keys() {
            prop_assert!(
                mesh.is_connected(a.as_str(), b.as_str()),
                "copy over a dead link {a}-{b}"
            );
        }
    }
    Ok(())
}

/// Cases of the random-mesh property: 400 in the suite; set
/// `PLANE_SIM_CASES` for a longer hunt.
fn random_mesh_cases() -> u32 {
    std::env::var("PLANE_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: random_mesh_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Random connected meshes, random allowed regions, random sequences of
    /// link cuts and repairs, node deaths and restarts, (un)subscriptions,
    /// track changes and reloads (narrowing or widening the app's regions),
    /// with partial delivery between steps.
    #[test]
    fn random_meshes_never_leak_never_loop_and_deliver_exactly_when_a_path_exists(
        scenario in scenario()
    ) {
        check_scenario(&scenario)?;
    }
}
