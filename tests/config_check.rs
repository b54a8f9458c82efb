//! `georelay check` end to end: the repository's example fleet passes, and a
//! fixture with many distinct mistakes exits 2 listing every one of them with
//! `file:line:column`.

use std::path::Path;
use std::process::{Command, Output};

fn georelay_check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_georelay"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run georelay")
}

fn repo_file(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn the_example_fleet_passes_and_is_summarised() {
    let output = georelay_check(&repo_file("regions.toml"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for expected in [
        "regions (4):",
        "nodes (6):",
        "links (7):",
        "apps (4):",
        "  eu-fra-1 in eu: listen 127.10.0.1:4433, admin 127.10.0.1:9090",
        "  uk-lon-1 <-> eu-ams-1: 8 ms",
        "  acme-health: regions [eu] (by allow_regions); clients: all but RU",
        "  globex-media: regions [eu, uk, us] (by deny_regions)",
        "  127.5.0.0/16 -> RU",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("dev-secret"),
        "check must not print secrets:\n{stdout}"
    );
}

#[test]
fn a_broken_fleet_exits_2_listing_every_problem_with_its_position() {
    let fixture = repo_file("tests/data/invalid.toml");
    let output = georelay_check(&fixture);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout when invalid");

    let file = fixture.display().to_string();
    let expected = [
        ("3:12", "geoip.database: cannot open GeoIP database"),
        (
            "6:1",
            "geoip.overrides.\"10.0.0.1/8\": CIDR \"10.0.0.1/8\" has host bits set",
        ),
        (
            "7:1",
            "geoip.overrides.\"192.168.0.0/33\": \"192.168.0.0/33\" is not a CIDR network",
        ),
        (
            "8:19",
            "\"UK\" is not an assigned ISO 3166-1 alpha-2 country code",
        ),
        (
            "11:26",
            "regions.eu.countries[2]: country codes are uppercase",
        ),
        (
            "11:32",
            "regions.eu.countries[3]: \"XYZ\" is not a country code",
        ),
        (
            "14:20",
            "regions.us.countries[1]: country \"FR\" is already in region \"eu\"",
        ),
        ("15:1", "regions.us.label: unknown key \"label\""),
        ("23:10", "nodes.us-iad-1.region: unknown region \"mars\""),
        (
            "24:10",
            "nodes.us-iad-1.listen: address 127.10.0.1:4433 is already used by nodes.eu-fra-1.listen",
        ),
        ("27:8", "nodes.Bad_Node: invalid node id \"Bad_Node\""),
        (
            "33:24",
            "links[0].between[1]: a link from \"eu-fra-1\" to itself",
        ),
        (
            "37:24",
            "links[1].between[1]: unknown node \"us-iad-2\" (did you mean \"us-iad-1\"?)",
        ),
        (
            "38:10",
            "links[1].rtt_ms: must be between 1 and 4294967295, found 0",
        ),
        (
            "41:1",
            "apps.acme.secret: only one of secret_env, secret, secret_file may be set",
        ),
        (
            "43:24",
            "apps.acme.allow_regions[1]: unknown region \"mars\"",
        ),
        (
            "44:1",
            "apps.acme.deny_regions: set allow_regions or deny_regions, not both",
        ),
        (
            "45:27",
            "apps.acme.metadata_retention_days: must be between 1 and 30, found 31",
        ),
        ("47:7", "apps.globex: no secret"),
        (
            "48:1",
            "apps.globex.allow_regions: an empty allow list allows nothing",
        ),
        (
            "49:38",
            "apps.globex.client_countries.deny: set allow or deny, not both",
        ),
        (
            "53:21",
            "metadata.ip_retention_days: ip_mode = \"full\" keeps IP addresses at most 7 days",
        ),
    ];
    let diagnostics: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with(&file))
        .collect();
    assert_eq!(diagnostics.len(), expected.len(), "stderr:\n{stderr}");
    for (line, (position, message)) in diagnostics.iter().zip(expected) {
        let prefix = format!("{file}:{position}: ");
        assert!(
            line.starts_with(&prefix),
            "{line:?} does not start with {prefix:?}"
        );
        assert!(
            line.contains(message),
            "{line:?} does not contain {message:?}"
        );
    }
    assert!(
        stderr.contains(&format!("{} errors in {file}", expected.len())),
        "stderr:\n{stderr}"
    );
}

#[test]
fn a_syntax_error_exits_2_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("regions.toml");
    std::fs::write(&config, "[regions.eu]\ncountries = [\"DE\"\n\n[nodes.a]\n").expect("write");
    let output = georelay_check(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    let prefix = format!("{}:", config.display());
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&prefix) && first.contains("TOML syntax error"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn a_missing_config_exits_2_naming_the_file() {
    let output = georelay_check(Path::new("/nonexistent/georelay/regions.toml"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.starts_with("/nonexistent/georelay/regions.toml:1:1: cannot read config"),
        "stderr:\n{stderr}"
    );
}
