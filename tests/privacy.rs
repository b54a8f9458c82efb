//! Nothing at rest: a fleet run as `georelay serve --all` at trace level in a
//! temporary working directory carries media whose payload is a unique
//! canary; afterwards the canary is in no file under the working directory,
//! the metadata directory or the system temp directory, and in no captured
//! log line. And a SIGKILLed server keeps every event flushed before the kill.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use georelay::auth::Role;
use georelay::client::{Client, Event};
use georelay::metadata::{EventKind, SqliteStore};
use support::fleet::FleetSpec;
use support::served::ServedFleet;

fn metadata_on() -> FleetSpec {
    FleetSpec {
        metadata: true,
        ..FleetSpec::default()
    }
}

/// Every file under `root` (bounded depth and size) modified at or after
/// `since` whose bytes contain `needle`. A file older than the test cannot
/// hold its canary, which is random and made when the test starts.
fn files_containing(root: &Path, needle: &[u8], depth: usize, since: SystemTime) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let fresh = meta.modified().is_ok_and(|at| at >= since);
        if meta.is_dir() && depth > 0 {
            found.extend(files_containing(&path, needle, depth - 1, since));
        } else if meta.is_file() && fresh && meta.len() < 256 * 1024 * 1024 {
            if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_payload_is_found_in_no_file_and_no_log_line() {
    // File times have coarser resolution than the clock: start a second early.
    let started = georelay::clock::wall_now() - Duration::from_secs(1);
    let canary = format!("CANARY-{:016x}-{:08x}", rand_u64(), std::process::id());
    let mut fleet = ServedFleet::configure(&metadata_on());
    fleet.serve_all("trace");
    fleet
        .wait_links("eu-fra-1", &["eu-ams-1", "uk-lon-1"])
        .await;
    fleet
        .wait_links("eu-ams-1", &["eu-fra-1", "uk-lon-1"])
        .await;

    let (publisher, track, mut subscriber) = fleet
        .pub_sub("globex-media", "secret-show", "eu-fra-1", "eu-ams-1")
        .await;
    for seq in 0..200u64 {
        publisher
            .send_media(track, seq, seq, canary.as_bytes())
            .expect("send");
        if seq % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    publisher
        .send_message(track, canary.as_bytes())
        .await
        .expect("message");
    let mut delivered = 0;
    let until = georelay::clock::timer_now() + Duration::from_secs(2);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, subscriber.events().next()).await {
        match event {
            Event::Media { payload, .. } | Event::Message { payload, .. }
                if payload == canary.as_bytes() =>
            {
                delivered += 1
            }
            _ => {}
        }
    }
    assert!(
        delivered >= 190,
        "the canary media was relayed across the mesh: {delivered}"
    );
    publisher.close().await;
    subscriber.close().await;

    // Clean shutdown flushes metadata; then search every byte at rest.
    fleet.signal("serve", "-TERM");
    fleet.wait_exit("serve", Duration::from_secs(15)).await;
    let log = fleet.log("serve");
    assert!(
        log.lines().count() > 100,
        "trace logging was on ({} lines)",
        log.lines().count()
    );
    assert!(
        log.contains("secret-show") || log.contains("globex-media"),
        "the log is the real one"
    );
    assert!(
        !files_containing(&fleet.metadata_dir(), b"secret-show", 3, started).is_empty(),
        "metadata recorded the session"
    );
    let hits = files_containing(fleet.path(), canary.as_bytes(), 6, started);
    assert!(
        hits.is_empty(),
        "canary at rest under the working dir: {hits:?}"
    );
    let hits = files_containing(&std::env::temp_dir(), canary.as_bytes(), 6, started);
    assert!(
        hits.is_empty(),
        "canary at rest under the temp dir: {hits:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_server_keeps_every_flushed_event_and_its_store_opens() {
    let mut fleet = ServedFleet::configure(&metadata_on());
    fleet.serve_all("warn");
    fleet.wait_links("eu-fra-1", &["eu-ams-1"]).await;
    let options = fleet.client_options();
    const SESSIONS: usize = 12;
    for i in 0..SESSIONS {
        let join = fleet.join("acme-health", "ward", &format!("u{i}"), Role::Subscribe);
        let client = Client::connect(&options, &[fleet.target("eu-fra-1")], &join)
            .await
            .expect("admitted");
        client.close().await;
    }
    // Every session's opened and closed events are flushed: a reader of the
    // live store sees all of them (other events, such as geofence decisions
    // and traffic records, are flushed alongside and do not count here).
    let dir = fleet.metadata_dir();
    support::events::until(
        Duration::from_secs(10),
        "every session event flushed",
        || {
            let dir = dir.clone();
            async move { try_session_events(&dir) == Some((SESSIONS, SESSIONS)) }
        },
    )
    .await;
    fleet.signal("serve", "-KILL");
    fleet.wait_exit("serve", Duration::from_secs(5)).await;

    let (opened, closed) = session_events(&fleet.metadata_dir());
    assert_eq!(opened, SESSIONS, "every flushed session_opened survived");
    assert_eq!(closed, SESSIONS, "every flushed session_closed survived");
}

/// Session-opened and session-closed events in the store under `dir`, read
/// as a report would (the store opens cleanly, also after SIGKILL).
fn session_events(dir: &std::path::Path) -> (usize, usize) {
    try_session_events(dir).expect("the store opens cleanly and reads")
}

/// [`session_events`], or `None` while the store is not there yet.
fn try_session_events(dir: &std::path::Path) -> Option<(usize, usize)> {
    let store = SqliteStore::open_existing(dir).ok()?;
    let events = store.read_events(0, None).ok()?;
    let opened = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::SessionOpened { .. }))
        .count();
    let closed = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::SessionClosed { .. }))
        .count();
    Some((opened, closed))
}

fn rand_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut b).expect("rand");
    u64::from_le_bytes(b)
}
