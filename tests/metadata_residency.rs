//! Metadata residency on a real PostgreSQL (`GEORELAY_TEST_PG_DSN`): the EU
//! has its own database (`[metadata.regions.eu]`), every other region uses
//! the fleet database (`[metadata.postgres]`). Rows recorded by EU nodes are
//! only in the EU database and nothing of theirs is in the other one; the
//! report and the audit that `--config` computes from both databases
//! (aggregates merged, no row read out) equal the ones computed from a
//! single store holding every event (the nodes' local SQLite store).

#[allow(dead_code)]
mod audit_common;
#[allow(dead_code)]
mod metadata_common;

use std::collections::BTreeMap;
use std::process::Command;

use audit_common::{APP, FLEET, sqlite_config, violating_record, write_fixture};
use georelay::clock::{Clock, SystemClock};
use georelay::config::{PostgresConfig, RegionStore};
use georelay::ids::RegionId;
use georelay::metadata::day::{DAY_MS, UtcDay};
use georelay::metadata::{Event, StoreDsns};
use metadata_common::{T0, day_events};
use serde_json::Value;
use tokio_postgres::NoTls;

/// A database created for this test and dropped at the end.
struct Database {
    name: String,
    dsn: String,
}

fn with_dbname(base: &str, name: &str) -> String {
    let mut parts: Vec<&str> = base
        .split_whitespace()
        .filter(|part| !part.starts_with("dbname="))
        .collect();
    let dbname = format!("dbname={name}");
    parts.push(&dbname);
    parts.join(" ")
}

/// Session, quality and geofence events of eu-fra-1 and us-iad-1, moved to
/// yesterday and the day before.
fn session_events() -> Vec<Event> {
    let shift = UtcDay::of_unix_ms(SystemClock.now_unix_ms()).start_ms() - 2 * DAY_MS - T0;
    (0..2)
        .flat_map(day_events)
        .map(|mut event| {
            event.at_ms += shift;
            event
        })
        .collect()
}

async fn regions_in(dsn: &str) -> BTreeMap<String, i64> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .query(
            "SELECT region, count(*) FROM georelay_events GROUP BY region",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

fn georelay_json(args: &[&str], envs: &[(&str, &str)], expected_code: i32) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_georelay"))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("georelay runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(expected_code),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

/// The audit's judgement, without what depends on the instant it ran or on
/// the stores' names.
fn judgement(audit: &Value) -> Value {
    serde_json::json!({
        "policy_versions": audit["policy_versions"],
        "nodes": audit["nodes"],
        "violations": audit["violations"],
        "nodes_without_records": audit["coverage"]["nodes_without_records"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eu_rows_stay_in_the_eu_database_and_merged_reports_match() {
    let Some(base) = metadata_common::pg_base_dsn() else {
        return;
    };
    let tag = metadata_common::unique_name("r");
    let (admin, connection) = tokio_postgres::connect(&base, NoTls).await.unwrap();
    tokio::spawn(connection);
    let mut databases = Vec::new();
    for region in ["eu", "fleet"] {
        let name = format!("georelay_{region}_{tag}");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        databases.push(Database {
            dsn: with_dbname(&base, &name),
            name,
        });
    }
    let (eu, fleet) = (&databases[0], &databases[1]);

    // The nodes' pipeline: the EU store, the fleet store and the local one.
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path());
    config.postgres = Some(PostgresConfig {
        dsn_env: "FLEET_DSN".into(),
        buffer_events: 100_000,
        local_store: true,
    });
    config.regions.insert(
        RegionId::from("eu"),
        RegionStore {
            dsn_env: "EU_DSN".into(),
        },
    );
    let dsns = StoreDsns {
        fleet: Some(fleet.dsn.clone()),
        regions: BTreeMap::from([(RegionId::from("eu"), eu.dsn.clone())]),
    };
    let mut extra = session_events();
    let eu_sessions = extra
        .iter()
        .filter(|event| event.region.as_str() == "eu")
        .count() as i64;
    extra.push(violating_record(audit_common::fixture_start_ms()));
    write_fixture(&config, dsns, extra).await;

    let in_eu = regions_in(&eu.dsn).await;
    let in_fleet = regions_in(&fleet.dsn).await;
    assert_eq!(
        in_eu.keys().collect::<Vec<_>>(),
        ["eu"],
        "EU database: {in_eu:?}"
    );
    assert!(
        !in_fleet.contains_key("eu"),
        "an EU row left the EU: {in_fleet:?}"
    );
    assert_eq!(
        in_fleet.keys().collect::<Vec<_>>(),
        ["uk", "us"],
        "{in_fleet:?}"
    );
    // fra and ams: 1 policy, and per interval 1 marker and their flows (4
    // and 2); and fra's part of the session fixture.
    assert_eq!(
        in_eu["eu"],
        2 * (1 + 10) + 10 * (4 + 2) + eu_sessions,
        "{in_eu:?}"
    );

    // The same config the nodes use, with the variables set: `--config`
    // reads both databases.
    let config_path = dir.path().join("regions.toml");
    std::fs::write(
        &config_path,
        format!(
            "{FLEET}\n[metadata]\ndir = \"metadata\"\n[metadata.postgres]\ndsn_env = \"FLEET_DSN\"\n[metadata.regions.eu]\ndsn_env = \"EU_DSN\"\n"
        ),
    )
    .unwrap();
    let config_arg = config_path.to_str().unwrap();
    let local = config.dir.to_str().unwrap();
    let envs = [
        ("EU_DSN", eu.dsn.as_str()),
        ("FLEET_DSN", fleet.dsn.as_str()),
    ];
    for by in ["day", "region", "node"] {
        for app in [None, Some("long-app"), Some(APP)] {
            let mut args = vec!["metadata", "report", "--json", "--by", by];
            if let Some(app) = app {
                args.extend(["--app", app]);
            }
            let merged = georelay_json(&[&args[..], &["--config", config_arg]].concat(), &envs, 0);
            let single = georelay_json(&[&args[..], &["--dir", local]].concat(), &[], 0);
            assert_eq!(merged["groups"], single["groups"], "{args:?}");
            assert!(!merged["groups"].as_array().unwrap().is_empty(), "{args:?}");
        }
    }
    let audit_args = ["metadata", "audit", "--app", APP, "--since", "1h", "--json"];
    let merged = georelay_json(
        &[&audit_args[..], &["--config", config_arg]].concat(),
        &envs,
        3,
    );
    let single = georelay_json(&[&audit_args[..], &["--dir", local]].concat(), &[], 3);
    assert_eq!(judgement(&merged), judgement(&single));
    assert_eq!(merged["violations"][0]["node"], "uk-lon-1");
    assert_eq!(
        merged["sources"],
        serde_json::json!(["postgres store of region eu", "postgres fleet store"])
    );

    // Without the EU variable, `--config` names it instead of reading less.
    let output = Command::new(env!("CARGO_BIN_EXE_georelay"))
        .args(["metadata", "audit", "--app", APP, "--config", config_arg])
        .env("FLEET_DSN", &fleet.dsn)
        .env_remove("EU_DSN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("metadata.regions.eu.dsn_env: environment variable EU_DSN")
    );

    for database in &databases {
        admin
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", database.name))
            .await
            .unwrap();
    }
}
