//! The PostgreSQL fleet store against a real server
//! (`GEORELAY_TEST_PG_DSN`, started by `.ci/postgres.sh`): day partitions
//! are created on demand, expired ones dropped, and reports match the
//! SQLite store for the same events.
//!
//! Without the variable the tests print a note and pass, except under `CI`,
//! where they fail: CI must provide the server.

// Each test binary uses a different part of the shared fixtures.
#[allow(dead_code)]
mod metadata_common;

use std::sync::Arc;

use georelay::clock::{ManualClock, SharedClock};
use georelay::config::{MetadataConfig, PostgresConfig};
use georelay::ids::AppId;
use georelay::metadata::day::{DAY_MS, UtcDay};
use georelay::metadata::postgres::DEFAULT_TABLE;
use georelay::metadata::{
    Event, GroupBy, PostgresStore, ReportQuery, SqliteStore, build_report, start_with_dsn,
};
use metadata_common::{
    LONG_APP, PgSchema, SHORT_APP, T0, day_events, expected_after_sweep, policy,
};

const HOUR_MS: u64 = 3_600_000;

fn sorted(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by_key(|event| event.at_ms);
    events
}

#[tokio::test]
async fn partitions_retention_and_reports_match_sqlite() {
    let Some(schema) = PgSchema::create("match").await else {
        return;
    };
    let mut pg = PostgresStore::connect(&schema.dsn, DEFAULT_TABLE)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();

    let written: Vec<Event> = (0..40).flat_map(day_events).collect();
    // One call: more rows than one INSERT statement carries.
    assert_eq!(pg.write_batch(&written).await.unwrap(), written.len());
    sqlite.write_batch(&written).unwrap();
    let all_days: Vec<UtcDay> = (0..40)
        .map(|day| UtcDay::of_unix_ms(T0 + day * DAY_MS))
        .collect();
    assert_eq!(
        pg.partitions().await.unwrap(),
        all_days,
        "one partition per day"
    );
    assert_eq!(sqlite.days().unwrap(), all_days);

    let policy = policy();
    let end = T0 + 40 * DAY_MS + 13 * HOUR_MS;
    let pg_sweep = pg.sweep(end, &policy).await.unwrap();
    let sqlite_sweep = sqlite.sweep(end, &policy).unwrap();
    assert_eq!(pg_sweep, sqlite_sweep);
    assert_eq!(pg_sweep.days_dropped, all_days[..10]);
    assert_eq!(pg.partitions().await.unwrap(), all_days[10..]);
    let dropped_table = format!("{DEFAULT_TABLE}_{}", all_days[0].compact());
    let still_there = schema
        .admin
        .query(
            "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2",
            &[&schema.name, &dropped_table],
        )
        .await
        .unwrap();
    assert!(still_there.is_empty(), "{dropped_table} was not dropped");

    let from_pg = sorted(pg.read_events(0, None).await.unwrap());
    let from_sqlite = sorted(sqlite.read_events(0, None).unwrap());
    assert_eq!(from_pg, expected_after_sweep(&written, &policy, end));
    assert_eq!(from_pg, from_sqlite);

    for app in [
        None,
        Some(AppId::from(LONG_APP)),
        Some(AppId::from(SHORT_APP)),
    ] {
        for since_ms in [0, end - 7 * DAY_MS] {
            for by in [GroupBy::Day, GroupBy::Region, GroupBy::Node] {
                let query = ReportQuery {
                    since_ms,
                    app: app.clone(),
                    by,
                };
                let pg_events = pg.read_events(since_ms, app.as_ref()).await.unwrap();
                let sqlite_events = sqlite.read_events(since_ms, app.as_ref()).unwrap();
                let pg_report = build_report(&pg_events, &query);
                assert_eq!(pg_report, build_report(&sqlite_events, &query), "{query:?}");
                assert!(pg_report.groups.iter().any(|group| group.sessions > 0));
            }
        }
    }

    // Reconnecting finds the existing partitions; writing again to a known
    // day does not fail.
    drop(pg);
    let mut pg = PostgresStore::connect(&schema.dsn, DEFAULT_TABLE)
        .await
        .unwrap();
    assert_eq!(pg.partitions().await.unwrap(), all_days[10..]);
    pg.write_batch(&day_events(39)).await.unwrap();
    drop(pg);
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_delivers_to_postgres_without_a_local_store() {
    let Some(schema) = PgSchema::create("sink").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = MetadataConfig::default_for(dir.path());
    config.dir = dir.path().join("metadata");
    config.flush_interval_ms = 20;
    config.postgres = Some(PostgresConfig {
        dsn_env: "UNUSED_BY_START_WITH_DSN".into(),
        buffer_events: 100_000,
        local_store: false,
    });
    let clock: SharedClock = Arc::new(ManualClock::new(T0 + 3 * DAY_MS));
    let (recorder, handle) = start_with_dsn(
        &config,
        std::collections::BTreeMap::new(),
        clock,
        Some(schema.dsn.clone()),
    )
    .await
    .unwrap();
    let written: Vec<Event> = (0..3).flat_map(day_events).collect();
    for event in &written {
        recorder.record(event.clone());
    }
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.sent_postgres, written.len() as u64);
    assert_eq!((stats.unsent_postgres, stats.dropped_postgres), (0, 0));
    assert_eq!(stats.written_local, 0);
    assert!(!config.dir.exists(), "local_store = false writes no file");

    let pg = PostgresStore::connect(&schema.dsn, DEFAULT_TABLE)
        .await
        .unwrap();
    assert_eq!(sorted(pg.read_events(0, None).await.unwrap()), written);
    assert_eq!(pg.partitions().await.unwrap().len(), 3);
    drop(pg);
    schema.drop_schema().await;
}
