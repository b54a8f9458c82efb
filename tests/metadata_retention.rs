//! Retention of the embedded store under a fake clock: 40 days of events
//! across two apps (30 and 7 days), swept, with restarts in the middle.

// Each test binary uses a different part of the shared fixtures.
#[allow(dead_code)]
mod metadata_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use georelay::clock::{Clock, ManualClock, SharedClock};
use georelay::config::MetadataConfig;
use georelay::ids::AppId;
use georelay::metadata::day::{DAY_MS, UtcDay};
use georelay::metadata::{Event, SqliteStore, Sweeper, start};
use metadata_common::{LONG_APP, SHORT_APP, T0, day_events, expected_after_sweep, policy};

const HOUR_MS: u64 = 3_600_000;

fn oldest_of(events: &[Event], app: &str) -> Option<u64> {
    events
        .iter()
        .filter(|event| event.app.as_ref().map(AppId::as_str) == Some(app))
        .map(|event| event.at_ms)
        .min()
}

#[test]
fn forty_days_two_apps_sweep_exactly_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy();
    let mut written = Vec::new();

    let middle = T0 + 20 * DAY_MS + 13 * HOUR_MS;
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        for day in 0..20 {
            let events = day_events(day);
            assert_eq!(store.write_batch(&events).unwrap(), events.len());
            written.extend(events);
        }
        let report = Sweeper::new(store.clone(), policy.clone())
            .sweep_once(middle)
            .unwrap();
        assert!(report.days_dropped.is_empty(), "nothing is 30 days old yet");
        assert!(report.rows_deleted > 0, "the 7-day app lost rows");
        assert_eq!(
            store.read_events(0, None).unwrap(),
            expected_after_sweep(&written, &policy, middle)
        );
    }

    // Restart: a new store over the same directory sees exactly what the
    // sweep left, then the second half of the 40 days is written.
    let end = T0 + 40 * DAY_MS + 13 * HOUR_MS;
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(
            store.read_events(0, None).unwrap(),
            expected_after_sweep(&written, &policy, middle),
            "a restart resurrected deleted rows"
        );
        for day in 20..40 {
            let events = day_events(day);
            store.write_batch(&events).unwrap();
            written.extend(events);
        }
        let report = Sweeper::new(store, policy.clone()).sweep_once(end).unwrap();
        let dropped: Vec<UtcDay> = (0..10)
            .map(|day| UtcDay::of_unix_ms(T0 + day * DAY_MS))
            .collect();
        assert_eq!(report.days_dropped, dropped);
    }

    let store = SqliteStore::open(dir.path()).unwrap();
    let left = store.read_events(0, None).unwrap();
    let expected = expected_after_sweep(&written, &policy, end);
    assert_eq!(left, expected, "exactly the unexpired rows remain");
    assert!(expected.len() > 400 && expected.len() < written.len());

    // Spelled out: nothing older than each app's retention, and the oldest
    // row of each app is the first one inside its retention.
    let long_cutoff = end - 30 * DAY_MS;
    let short_cutoff = end - 7 * DAY_MS;
    assert!(left.iter().all(|event| event.at_ms >= long_cutoff));
    let first_inside = |app: &str, cutoff: u64| {
        oldest_of(
            &written
                .iter()
                .filter(|e| e.at_ms >= cutoff)
                .cloned()
                .collect::<Vec<_>>(),
            app,
        )
    };
    assert_eq!(
        oldest_of(&left, LONG_APP),
        first_inside(LONG_APP, long_cutoff)
    );
    assert_eq!(
        oldest_of(&left, SHORT_APP),
        first_inside(SHORT_APP, short_cutoff)
    );
    assert!(oldest_of(&left, SHORT_APP).unwrap() >= short_cutoff);
    assert!(oldest_of(&left, LONG_APP).unwrap() < short_cutoff);
    // Client addresses older than 7 days are gone, younger ones kept.
    for event in &left {
        let Some(ip) = event.kind.client_ip() else {
            continue;
        };
        assert_eq!(ip.is_dropped(), event.at_ms < short_cutoff, "{event:?}");
    }
    // No file of a swept day is left on disk.
    let oldest_day = UtcDay::of_unix_ms(long_cutoff);
    assert!(store.days().unwrap().iter().all(|day| *day >= oldest_day));
    assert_eq!(store.days().unwrap().len(), 30, "days 10..=39");
}

fn metadata_config(dir: &std::path::Path) -> MetadataConfig {
    let mut config = MetadataConfig::default_for(dir);
    config.dir = dir.join("metadata");
    config.flush_interval_ms = 20;
    config.retention_days = 30;
    config.ip_retention_days = 7;
    config
}

fn app_days() -> BTreeMap<AppId, u16> {
    BTreeMap::from([(AppId::from(LONG_APP), 30), (AppId::from(SHORT_APP), 7)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_pipeline_sweeps_at_each_start_with_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let config = metadata_config(dir.path());
    let manual = Arc::new(ManualClock::new(T0));
    let clock: SharedClock = manual.clone();
    let policy = policy();
    let mut written = Vec::new();

    let (recorder, handle) = start(&config, app_days(), clock.clone()).await.unwrap();
    for day in 0..20 {
        manual.set(T0 + day * DAY_MS);
        for event in day_events(day) {
            recorder.record(event.clone());
            written.push(event);
        }
    }
    let stats = handle.shutdown().await.unwrap();
    // Events already past retention when flushed (the 7-day app's first
    // days, recorded with the clock at day 19) are not written at all.
    assert_eq!(stats.written_local + stats.expired, written.len() as u64);
    assert!(stats.expired > 0);
    assert_eq!(stats.dropped, 0);

    // Restart 20 days in: the start-up sweep applies the 7-day retention.
    let middle = T0 + 20 * DAY_MS + 13 * HOUR_MS;
    manual.set(middle);
    let (recorder, handle) = start(&config, app_days(), clock.clone()).await.unwrap();
    let store = SqliteStore::open_existing(&config.dir).unwrap();
    assert_eq!(
        store.read_events(0, None).unwrap(),
        expected_after_sweep(&written, &policy, middle)
    );
    for day in 20..40 {
        manual.set(T0 + day * DAY_MS);
        for event in day_events(day) {
            recorder.record(event.clone());
            written.push(event);
        }
    }
    handle.shutdown().await.unwrap();

    let end = T0 + 40 * DAY_MS + 13 * HOUR_MS;
    manual.set(end);
    let (_recorder, handle) = start(&config, app_days(), clock.clone()).await.unwrap();
    handle.shutdown().await.unwrap();
    assert_eq!(
        store.read_events(0, None).unwrap(),
        expected_after_sweep(&written, &policy, end)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_sweeps_follow_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = metadata_config(dir.path());
    config.sweep_interval_secs = 1;
    let manual = Arc::new(ManualClock::new(T0));
    let clock: SharedClock = manual.clone();
    let (recorder, handle) = start(&config, app_days(), clock).await.unwrap();
    for event in day_events(0) {
        recorder.record(event);
    }
    handle.flush().await.unwrap();
    let store = SqliteStore::open_existing(&config.dir).unwrap();
    assert_eq!(store.days().unwrap().len(), 1);

    manual.set(T0 + 32 * DAY_MS);
    let mut swept = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if store.days().unwrap().is_empty() {
            swept = true;
            break;
        }
    }
    assert!(swept, "the periodic sweeper did not remove the expired day");
    assert!(manual.now_unix_ms() > T0);
    handle.shutdown().await.unwrap();
}
