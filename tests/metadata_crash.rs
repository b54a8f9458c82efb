//! Crash semantics of the embedded store: a process that records events and
//! is killed with SIGKILL loses at most what it had not flushed; the store
//! opens cleanly and holds every flushed event.
//!
//! The test binary runs itself as the child (`crash_child`, switched on by
//! an environment variable) so the kill hits a real process mid-stream.

// Each test binary uses a different part of the shared fixtures.
#[allow(dead_code)]
mod metadata_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use georelay::clock::{ManualClock, SharedClock};
use georelay::config::MetadataConfig;
use georelay::metadata::day::DAY_MS;
use georelay::metadata::{Event, SqliteStore, start};
use metadata_common::{T0, day_events};

const CHILD_DIR_ENV: &str = "GEORELAY_METADATA_CRASH_CHILD_DIR";
const FLUSHED_LINE: &str = "FLUSHED";

fn stream(days: u64) -> Vec<Event> {
    (0..days).flat_map(day_events).collect()
}

/// The child: records a first batch, flushes it, reports, then keeps
/// recording (with periodic flushes) until it is killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut config = MetadataConfig::default_for(std::path::Path::new(&dir));
        config.dir = std::path::PathBuf::from(&dir);
        config.flush_interval_ms = 10;
        let clock: SharedClock = Arc::new(ManualClock::new(T0 + 10 * DAY_MS));
        let (recorder, handle) = start(&config, BTreeMap::new(), clock).await.unwrap();
        let first = stream(5);
        for event in &first {
            recorder.record(event.clone());
        }
        handle.flush().await.unwrap();
        println!("{FLUSHED_LINE} {}", first.len());
        // Keep writing until killed; bounded so a lost parent cannot leave
        // this running for ever.
        for round in 0..5_000u64 {
            for event in day_events(5 + round % 5) {
                recorder.record(event);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        std::mem::forget(handle);
    });
}

#[test]
fn sigkill_after_a_flush_keeps_every_flushed_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut flushed = None;
    for line in BufReader::new(stdout).lines().take(100) {
        let line = line.unwrap();
        // libtest may print the test name on the same line.
        if let Some((_, count)) = line.split_once(FLUSHED_LINE) {
            flushed = Some(count.trim().parse::<usize>().unwrap());
            break;
        }
    }
    let flushed = flushed.expect("the child reported its flush");
    // Let later flushes run, so the kill lands among them.
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());

    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "sqlite") {
            continue;
        }
        files += 1;
        let conn = rusqlite::Connection::open(&path).unwrap();
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "{}", path.display());
    }
    assert!(files >= 5);

    let store = SqliteStore::open(dir.path()).unwrap();
    let stored = store.read_events(0, None).unwrap();
    let first = stream(5);
    assert_eq!(flushed, first.len());
    assert!(stored.len() > first.len(), "later flushes also landed");
    for event in &first {
        assert!(stored.contains(event), "flushed event lost: {event:?}");
    }
}
