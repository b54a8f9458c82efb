//! `georelay metadata audit` end to end over records written through the
//! real metadata pipeline, for SQLite (`--dir`) and PostgreSQL (`--dsn`):
//! a clean period exits 0 with every node's totals (transit included, zero
//! on the nodes the app does not allow); a hand-made violating record
//! exits 3 and is named; bad input exits 2.

mod audit_common;
// Each test binary uses a different part of the shared fixtures.
#[allow(dead_code)]
mod metadata_common;

use std::process::{Command, Output};

use audit_common::{APP, MINUTE, fixture_start_ms, sqlite_config, violating_record, write_fixture};
use georelay::config::PostgresConfig;
use georelay::metadata::postgres::DEFAULT_TABLE;
use georelay::metadata::{PostgresStore, SqliteStore, StoreDsns};
use serde_json::Value;

fn georelay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_georelay"))
        .args(args)
        .output()
        .expect("georelay runs")
}

fn audit_json(store_flag: &str, store: &str, expected_code: i32) -> Value {
    let output = georelay(&[
        "metadata", "audit", "--app", APP, "--since", "1h", store_flag, store, "--json",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(expected_code),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

fn audit_text(store_flag: &str, store: &str) -> String {
    let output = georelay(&[
        "metadata", "audit", "--app", APP, "--since", "1h", store_flag, store,
    ]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn node<'a>(audit: &'a Value, id: &str) -> &'a Value {
    audit["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|node| node["node"] == id))
        .unwrap_or_else(|| panic!("no node {id} in {audit}"))
}

/// The clean fixture's audit: what every node carried and was allowed.
fn assert_clean(audit: &Value) {
    assert_eq!(audit["app"], APP);
    assert_eq!(audit["violations"], serde_json::json!([]), "{audit}");
    assert_eq!(
        audit["policy_versions"].as_array().map(Vec::len),
        Some(1),
        "{audit}"
    );
    let since = audit["since_ms"].as_u64().unwrap();
    let until = audit["until_ms"].as_u64().unwrap();
    assert!(until - since >= 60 * MINUTE - 1000, "{audit}");
    // 10 intervals × 10 packets × 100 bytes, per flow.
    let fra = node(audit, "eu-fra-1");
    assert_eq!(fra["region"], "eu");
    assert_eq!(fra["allowed"], true);
    assert_eq!(
        [
            &fra["packets_in"],
            &fra["packets_out"],
            &fra["bytes_in"],
            &fra["bytes_out"]
        ],
        [100, 100, 10_000, 10_000]
    );
    let ams = node(audit, "eu-ams-1");
    assert_eq!(
        (&ams["allowed"], &ams["packets_in"], &ams["mesh_packets"]),
        (&true.into(), &100.into(), &100.into())
    );
    // lon carried globex only (transit fra → lon): none of the EU-only app.
    let lon = node(audit, "uk-lon-1");
    assert_eq!(
        (&lon["region"], &lon["allowed"]),
        (&"uk".into(), &false.into())
    );
    for field in ["packets_in", "packets_out", "bytes_in", "bytes_out"] {
        assert_eq!(lon[field], 0, "{field}: {lon}");
    }
    assert_eq!(lon["reported_ms"], 10 * MINUTE);
    // iad never reported: listed, and named as not proven.
    let iad = node(audit, "us-iad-1");
    assert_eq!(iad["packets_in"], 0);
    assert_eq!(
        audit["coverage"]["nodes_without_records"],
        serde_json::json!(["us-iad-1"])
    );
    let gaps = audit["coverage"]["gaps"].as_array().unwrap();
    assert!(
        gaps.iter()
            .any(|gap| gap["node"] == "eu-fra-1"
                && gap["until_ms"].as_u64() == Some(fixture_start_ms())),
        "the hour before the fixture is a gap: {gaps:?}"
    );
}

fn assert_violation_named(audit: &Value, text: &str) {
    let violations = audit["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "{audit}");
    let violation = &violations[0];
    assert_eq!(violation["node"], "uk-lon-1");
    assert_eq!(violation["region"], "uk");
    assert_eq!(
        violation["interval_start_ms"],
        fixture_start_ms() + 4 * MINUTE
    );
    assert_eq!(
        (&violation["packets"], &violation["bytes"]),
        (&7.into(), &700.into())
    );
    assert_eq!(violation["policy_version"], audit["policy_versions"][0]);
    assert!(text.contains("Violations: 1"), "{text}");
    assert!(
        text.contains("uk-lon-1 (uk): 7 packets, 700 bytes from node:eu-fra-1"),
        "{text}"
    );
    assert!(text.contains("which app acme does not allow"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_clean_then_a_violating_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path());
    write_fixture(&config, StoreDsns::default(), Vec::new()).await;
    let store_dir = config.dir.to_str().unwrap();

    let clean = audit_json("--dir", store_dir, 0);
    assert_clean(&clean);
    let text = audit_text("--dir", store_dir);
    for expected in [
        "Geofence audit of app acme",
        "Period: ",
        "Violations: none",
        "What these records cannot prove:",
        "us-iad-1 has no records in this period",
        "eu         eu-fra-1         yes",
        "uk         uk-lon-1         no",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    SqliteStore::open(&config.dir)
        .unwrap()
        .write_batch(&[violating_record(fixture_start_ms())])
        .unwrap();
    let found = audit_json("--dir", store_dir, 3);
    assert_violation_named(&found, &audit_text("--dir", store_dir));
    assert_eq!(node(&found, "uk-lon-1")["packets_in"], 7);
}

#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    for args in [
        vec![
            "metadata",
            "audit",
            "--since",
            "1h",
            "--dir",
            dir.path().to_str().unwrap(),
        ],
        vec!["metadata", "audit", "--app", APP, "--since", "3w"],
        vec![
            "metadata",
            "audit",
            "--app",
            APP,
            "--dir",
            missing.to_str().unwrap(),
        ],
        // A typo in the app: nothing knows it.
        vec![
            "metadata",
            "audit",
            "--app",
            "acme-typo",
            "--dir",
            dir.path().to_str().unwrap(),
        ],
    ] {
        let output = georelay(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clean_then_a_violating_record() {
    let Some(schema) = metadata_common::PgSchema::create("audit").await else {
        return;
    };
    let dsn = schema.dsn.clone();

    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path());
    config.postgres = Some(PostgresConfig {
        dsn_env: "UNUSED".into(),
        buffer_events: 100_000,
        local_store: false,
    });
    let dsns = StoreDsns {
        fleet: Some(dsn.clone()),
        ..StoreDsns::default()
    };
    write_fixture(&config, dsns, Vec::new()).await;
    assert!(!config.dir.exists(), "local_store = false writes no file");
    assert_clean(&audit_json("--dsn", &dsn, 0));

    let mut pg = PostgresStore::connect(&dsn, DEFAULT_TABLE).await.unwrap();
    pg.write_batch(&[violating_record(fixture_start_ms())])
        .await
        .unwrap();
    drop(pg);
    let found = audit_json("--dsn", &dsn, 3);
    assert_violation_named(&found, &audit_text("--dsn", &dsn));
    schema.drop_schema().await;
}
