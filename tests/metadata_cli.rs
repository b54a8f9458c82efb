//! `georelay metadata report` end to end: the binary's JSON matches the
//! shared aggregator over the same store, for SQLite (`--dir`) and, when a
//! server is available, PostgreSQL (`--dsn`).

// Each test binary uses a different part of the shared fixtures.
#[allow(dead_code)]
mod metadata_common;

use std::process::{Command, Output};

use georelay::clock::{Clock, SystemClock};
use georelay::ids::AppId;
use georelay::metadata::day::{DAY_MS, UtcDay};
use georelay::metadata::postgres::DEFAULT_TABLE;
use georelay::metadata::{Event, GroupBy, PostgresStore, ReportQuery, SqliteStore, build_report};
use metadata_common::{SHORT_APP, T0, day_events};

/// Two fixture days moved to the day before yesterday and yesterday.
fn recent_events() -> Vec<Event> {
    let shift = UtcDay::of_unix_ms(SystemClock.now_unix_ms()).start_ms() - 2 * DAY_MS - T0;
    (0..2)
        .flat_map(day_events)
        .map(|mut event| {
            event.at_ms += shift;
            event
        })
        .collect()
}

fn georelay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_georelay"))
        .args(args)
        .output()
        .unwrap()
}

fn groups_of(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    report["groups"].clone()
}

fn expected_groups(events: &[Event], app: Option<&str>, by: GroupBy) -> serde_json::Value {
    let query = ReportQuery {
        since_ms: 0,
        app: app.map(AppId::from),
        by,
    };
    serde_json::to_value(build_report(events, &query)).unwrap()["groups"].clone()
}

#[test]
fn report_from_a_sqlite_directory() {
    let dir = tempfile::tempdir().unwrap();
    let events = recent_events();
    SqliteStore::open(dir.path())
        .unwrap()
        .write_batch(&events)
        .unwrap();
    let dir_arg = dir.path().to_str().unwrap();

    let by_node = groups_of(&georelay(&[
        "metadata", "report", "--dir", dir_arg, "--by", "node", "--json",
    ]));
    assert_eq!(by_node, expected_groups(&events, None, GroupBy::Node));
    assert_eq!(by_node.as_array().unwrap().len(), 2);
    assert_eq!(by_node[0]["sessions"], 8);

    let short_by_day = groups_of(&georelay(&[
        "metadata", "report", "--dir", dir_arg, "--app", SHORT_APP, "--since", "7d", "--json",
    ]));
    assert_eq!(
        short_by_day,
        expected_groups(&events, Some(SHORT_APP), GroupBy::Day)
    );

    let text = georelay(&["metadata", "report", "--dir", dir_arg, "--by", "region"]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("eu") && text.contains("GEOFENCE_DENIED"),
        "{text}"
    );
}

#[test]
fn bad_arguments_and_missing_stores_fail_with_the_contract_codes() {
    assert_eq!(
        georelay(&["metadata", "report", "--by", "planet"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        georelay(&["metadata", "report", "--since", "3w"])
            .status
            .code(),
        Some(2)
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let output = georelay(&["metadata", "report", "--dir", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let absent_config = dir.path().join("absent.toml");
    let output = georelay(&[
        "metadata",
        "report",
        "--config",
        absent_config.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("absent.toml"));
}

#[tokio::test]
async fn report_from_postgres_matches_sqlite() {
    let Some(schema) = metadata_common::PgSchema::create("cli").await else {
        return;
    };
    let dsn = schema.dsn.clone();
    let events = recent_events();
    let mut pg = PostgresStore::connect(&dsn, DEFAULT_TABLE).await.unwrap();
    pg.write_batch(&events).await.unwrap();
    drop(pg);
    let dir = tempfile::tempdir().unwrap();
    SqliteStore::open(dir.path())
        .unwrap()
        .write_batch(&events)
        .unwrap();

    // The children run while this (single-threaded) test waits; nothing
    // else needs the runtime meanwhile.
    let report_from = |flag: &str, value: &str| {
        groups_of(&georelay(&[
            "metadata", "report", flag, value, "--by", "node", "--json",
        ]))
    };
    let from_pg = report_from("--dsn", &dsn);
    let from_sqlite = report_from("--dir", dir.path().to_str().unwrap());
    assert_eq!(from_pg, from_sqlite);
    assert_eq!(from_pg, expected_groups(&events, None, GroupBy::Node));
    schema.drop_schema().await;
}
