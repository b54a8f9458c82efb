//! `georelay route` end to end: the binary against a fleet file written to a
//! temp dir, checking the JSON answers, the human note about excluded paths,
//! and the exit codes (0 path, 1 ROUTE_UNAVAILABLE, 2 invalid input).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

mod support;

/// Apps over the shared test topology (support::fleet): eu (fra, ams), uk
/// (lon), us (iad, sfo), apac (sin); fra→ams is 30 ms direct but 20 ms
/// through London (uk).
const APPS: &str = r#"
[apps.eu-only]
secret = "test-secret-eu-only"
allow_regions = ["eu"]
[apps.eu-uk]
secret = "test-secret-eu-uk"
allow_regions = ["eu", "uk"]
[apps.eu-us]
secret = "test-secret-eu-us"
allow_regions = ["eu", "us"]
[apps.no-apac]
secret = "test-secret-no-apac"
deny_regions = ["apac"]
"#;

/// The fleet file; `route` never binds its addresses.
fn fleet_text() -> String {
    let spec = support::fleet::FleetSpec {
        apps: APPS.to_string(),
        ..support::fleet::FleetSpec::default()
    };
    support::fleet::config_text((200, 0), &spec)
}

struct Fixture {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("regions.toml");
    std::fs::write(&config, fleet_text()).expect("write config");
    Fixture { _dir: dir, config }
}

fn route(config: &Path, app: &str, from: &str, to: &str, json: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_georelay"));
    command
        .arg("route")
        .arg("--config")
        .arg(config)
        .args(["--app", app, "--from", from, "--to", to]);
    if json {
        command.arg("--json");
    }
    command.output().expect("run georelay")
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not one JSON object ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn eu_only_app_takes_the_direct_link_and_the_note_names_the_excluded_transit() {
    let fixture = fixture();
    let output = route(&fixture.config, "eu-only", "eu-fra-1", "eu-ams-1", true);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        json_of(&output),
        json!({"app":"eu-only","from":"eu-fra-1","to":"eu-ams-1",
               "path":["eu-fra-1","eu-ams-1"],"cost_ms":30})
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with(r#"{"app":"eu-only","from":"eu-fra-1","to":"eu-ams-1","path":"#),
        "keys in contract order: {stdout}"
    );

    let human = route(&fixture.config, "eu-only", "eu-fra-1", "eu-ams-1", false);
    assert_eq!(human.status.code(), Some(0));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("-> eu-ams-1 (eu): 30 ms"), "{text}");
    assert!(text.contains("total: 30 ms"), "{text}");
    assert!(
        text.contains("cheaper path via uk-lon-1 (20 ms) excluded: region uk not allowed"),
        "{text}"
    );
}

#[test]
fn apps_that_allow_the_transit_take_the_cheaper_path() {
    let fixture = fixture();
    for app in ["eu-uk", "no-apac"] {
        let output = route(&fixture.config, app, "eu-fra-1", "eu-ams-1", true);
        assert_eq!(output.status.code(), Some(0), "{app}");
        let answer = json_of(&output);
        assert_eq!(
            answer["path"],
            json!(["eu-fra-1", "uk-lon-1", "eu-ams-1"]),
            "{app}"
        );
        assert_eq!(answer["cost_ms"], json!(20), "{app}");
    }
    let human = route(&fixture.config, "eu-uk", "eu-fra-1", "eu-ams-1", false);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(!text.contains("excluded"), "{text}");
}

#[test]
fn nodes_connected_only_through_disallowed_regions_are_route_unavailable() {
    let fixture = fixture();
    let output = route(&fixture.config, "eu-us", "eu-fra-1", "us-iad-1", true);
    assert_eq!(output.status.code(), Some(1));
    let answer = json_of(&output);
    let object = answer.as_object().expect("an object");
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{answer}");
    assert_eq!(answer["app"], "eu-us");
    assert_eq!(answer["from"], "eu-fra-1");
    assert_eq!(answer["to"], "us-iad-1");
    assert_eq!(answer["error"], "ROUTE_UNAVAILABLE");
    let reason = answer["reason"].as_str().expect("a reason string");
    assert!(
        reason.contains("connected only through regions not allowed for this app: uk"),
        "{reason}"
    );

    let human = route(&fixture.config, "eu-us", "eu-fra-1", "us-iad-1", false);
    assert_eq!(human.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&human.stdout).contains("ROUTE_UNAVAILABLE"));
}

#[test]
fn a_disallowed_endpoint_is_route_unavailable_with_its_region() {
    let fixture = fixture();
    let output = route(&fixture.config, "eu-only", "eu-fra-1", "uk-lon-1", true);
    assert_eq!(output.status.code(), Some(1));
    let answer = json_of(&output);
    assert_eq!(answer["error"], "ROUTE_UNAVAILABLE");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|r| r.contains("region uk")),
        "{answer}"
    );
}

#[test]
fn unknown_app_node_or_bad_config_is_invalid_input() {
    let fixture = fixture();
    let unknown_app = route(&fixture.config, "nobody", "eu-fra-1", "eu-ams-1", true);
    assert_eq!(unknown_app.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown_app.stderr).contains("nobody"));
    let unknown_node = route(&fixture.config, "eu-only", "eu-fra-1", "eu-xyz-9", true);
    assert_eq!(unknown_node.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown_node.stderr).contains("eu-xyz-9"));
    assert!(unknown_node.stdout.is_empty());

    let broken = fixture.config.with_file_name("broken.toml");
    std::fs::write(
        &broken,
        fleet_text().replace("rtt_ms = 12", "rtt_ms = \"fast\""),
    )
    .expect("write");
    let invalid = route(&broken, "eu-only", "eu-fra-1", "eu-ams-1", true);
    assert_eq!(invalid.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("broken.toml:"));
}
