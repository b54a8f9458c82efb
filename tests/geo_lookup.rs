//! Geo lookup against MaxMind DBs the tests build, in both record schemas:
//! through the library (`MaxMindDb`, `Geo`) and through `georelay geo lookup`.

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use georelay::geo::{CountryLookup, Geo, MaxMindDb};
use georelay::ids::CountryCode;
use support::mmdb::{MmdbBuilder, Schema, loopback_fleet_db};

fn ip(addr: &str) -> IpAddr {
    addr.parse()
        .unwrap_or_else(|_| panic!("bad test address {addr}"))
}

fn country(db: &dyn CountryLookup, addr: &str) -> Option<String> {
    db.country(ip(addr)).map(|c| c.to_string())
}

fn open(path: &Path) -> MaxMindDb {
    MaxMindDb::open(path).unwrap_or_else(|err| panic!("{err}"))
}

#[test]
fn both_schemas_resolve_ipv4_ipv6_and_ipv4_mapped() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    for schema in [Schema::GeoLite2, Schema::IpLocationDb] {
        let db = open(&loopback_fleet_db(dir.path(), schema));
        assert_eq!(
            country(&db, "127.10.0.1").as_deref(),
            Some("DE"),
            "{schema:?}"
        );
        assert_eq!(
            country(&db, "127.20.255.255").as_deref(),
            Some("US"),
            "{schema:?}"
        );
        assert_eq!(
            country(&db, "::ffff:127.30.1.2").as_deref(),
            Some("JP"),
            "{schema:?}"
        );
        assert_eq!(
            country(&db, "2001:db8:10::7").as_deref(),
            Some("DE"),
            "{schema:?}"
        );
        assert_eq!(
            country(&db, "2001:db8:20:ffff::1").as_deref(),
            Some("US"),
            "{schema:?}"
        );
        for unknown in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "::1",
            "2001:db8:30::1",
            "8.8.8.8",
        ] {
            assert_eq!(country(&db, unknown), None, "{schema:?} {unknown}");
        }
    }
}

#[test]
fn an_ipv4_only_database_answers_ipv4_and_mapped_but_not_ipv6() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let path = MmdbBuilder::new(Schema::IpLocationDb)
        .ipv4_only()
        .network("193.0.0.0/21", "NL")
        .write_in(dir.path(), "v4.mmdb");
    let db = open(&path);
    assert_eq!(country(&db, "193.0.6.139").as_deref(), Some("NL"));
    assert_eq!(country(&db, "::ffff:193.0.6.139").as_deref(), Some("NL"));
    assert_eq!(country(&db, "2001:67c:2e8::1"), None);
}

#[test]
fn records_without_a_usable_country_are_unknown() {
    use mmdb_writer::Value;
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let path = MmdbBuilder::new(Schema::GeoLite2)
        .raw_record(
            "10.1.0.0/16",
            Value::map([("asn", Value::from(64_512_u32))]),
        )
        .raw_record(
            "10.2.0.0/16",
            Value::map([("country_code", Value::from("NLD"))]),
        )
        .raw_record(
            "10.3.0.0/16",
            Value::map([("country_code", Value::from(7_u32))]),
        )
        .raw_record(
            "10.4.0.0/16",
            Value::map([(
                "country",
                Value::map([("names", Value::map([("en", "X")]))]),
            )]),
        )
        .raw_record("10.5.0.0/16", Value::from("just a string"))
        .network("10.6.0.0/16", "fr")
        .write_in(dir.path(), "odd.mmdb");
    let db = open(&path);
    for addr in ["10.1.0.1", "10.2.0.1", "10.3.0.1", "10.4.0.1", "10.5.0.1"] {
        assert_eq!(country(&db, addr), None, "{addr}");
    }
    assert_eq!(country(&db, "10.6.0.1").as_deref(), Some("FR"));
}

#[test]
fn a_file_that_is_not_a_database_fails_to_open() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let path = dir.path().join("garbage.mmdb");
    std::fs::write(&path, b"not a maxmind db").unwrap_or_else(|err| panic!("{err}"));
    let err = MaxMindDb::open(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("garbage.mmdb"), "{err}");
}

#[test]
fn overrides_win_over_the_database_longest_prefix_first() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let db = open(&loopback_fleet_db(dir.path(), Schema::GeoLite2));
    let de = CountryCode::parse("DE");
    let overrides = [
        ("127.20.0.0/16", "FR"),
        ("127.20.5.0/24", "BE"),
        ("::ffff:127.20.5.5/128", "AT"),
    ]
    .map(|(net, code)| {
        (
            net.parse()
                .unwrap_or_else(|_| panic!("bad test cidr {net}")),
            CountryCode::parse(code).unwrap_or_else(|| panic!("bad country {code}")),
        )
    });
    let geo = Geo::new(overrides, Some(Arc::new(db)));
    let lookup = |addr: &str| geo.lookup(ip(addr)).map(|c| c.to_string());
    assert_eq!(lookup("127.20.1.1").as_deref(), Some("FR"));
    assert_eq!(lookup("127.20.5.1").as_deref(), Some("BE"));
    assert_eq!(lookup("127.20.5.5").as_deref(), Some("AT"));
    assert_eq!(lookup("::ffff:127.20.5.5").as_deref(), Some("AT"));
    assert_eq!(geo.lookup(ip("127.10.0.1")), de);
    assert_eq!(lookup("127.99.0.1"), None);
}

fn georelay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_georelay"))
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run georelay: {err}"))
}

fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "not JSON ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn cli_lookup_with_db_only_in_both_schemas() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let missing_config = dir.path().join("no-such-regions.toml");
    let missing_config = missing_config.to_string_lossy();
    for schema in [Schema::GeoLite2, Schema::IpLocationDb] {
        let db = loopback_fleet_db(dir.path(), schema);
        let db = db.to_string_lossy();
        for (addr, expected) in [
            ("127.10.0.1", Some("DE")),
            ("::ffff:127.20.0.1", Some("US")),
            ("2001:db8:10::1", Some("DE")),
            ("192.168.0.1", None),
        ] {
            let output = georelay(&[
                "geo",
                "lookup",
                addr,
                "--config",
                &missing_config,
                "--db",
                &db,
                "--json",
            ]);
            let json = stdout_json(&output);
            assert_eq!(json["ip"], addr, "{schema:?}");
            assert_eq!(json["country"].as_str(), expected, "{schema:?} {addr}");
            assert!(json["region"].is_null(), "{schema:?} {addr}");
            let keys: Vec<&String> = json
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            assert_eq!(keys.len(), 3, "{json}");
        }
        let text = georelay(&[
            "geo",
            "lookup",
            "127.30.0.1",
            "--config",
            &missing_config,
            "--db",
            &db,
        ]);
        assert_eq!(
            String::from_utf8_lossy(&text.stdout).trim(),
            "127.30.0.1  country JP  region unknown"
        );
    }
}

/// A fleet whose overrides and database both feed the lookup.
fn write_fleet(dir: &Path, database: &Path) -> std::path::PathBuf {
    let config = format!(
        r#"
[geoip]
database = "{db}"
[geoip.overrides]
"127.20.9.0/24" = "NL"

[regions.eu]
countries = ["DE", "NL"]
[regions.us]
countries = ["US"]

[nodes.eu-1]
region = "eu"
listen = "127.10.0.1:4433"
admin = "127.10.0.1:9090"
[nodes.us-1]
region = "us"
listen = "127.20.0.1:4433"
admin = "127.20.0.1:9090"

[[links]]
between = ["eu-1", "us-1"]
rtt_ms = 80

[apps.demo]
secret = "dev-secret"
allow_regions = ["eu"]
"#,
        db = database.display()
    );
    let path = dir.join("regions.toml");
    std::fs::write(&path, config).unwrap_or_else(|err| panic!("{err}"));
    path
}

#[test]
fn cli_lookup_with_config_names_the_region_and_applies_overrides() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let db = loopback_fleet_db(dir.path(), Schema::GeoLite2);
    let config = write_fleet(dir.path(), &db);
    let config = config.to_string_lossy();
    for (addr, country, region) in [
        ("127.10.3.4", Some("DE"), Some("eu")),
        ("127.20.3.4", Some("US"), Some("us")),
        ("127.20.9.9", Some("NL"), Some("eu")),
        ("127.30.0.1", Some("JP"), None),
        ("10.0.0.1", None, None),
    ] {
        let json = stdout_json(&georelay(&[
            "geo", "lookup", addr, "--config", &config, "--json",
        ]));
        assert_eq!(json["country"].as_str(), country, "{addr}");
        assert_eq!(json["region"].as_str(), region, "{addr}");
    }
    // --db replaces the config's database; the overrides still apply.
    let other = MmdbBuilder::new(Schema::IpLocationDb)
        .network("127.10.0.0/16", "US")
        .write_in(dir.path(), "other.mmdb");
    let other = other.to_string_lossy();
    let with_db = |addr: &str| {
        stdout_json(&georelay(&[
            "geo", "lookup", addr, "--config", &config, "--db", &other, "--json",
        ]))
    };
    assert_eq!(with_db("127.10.3.4")["region"], "us");
    assert_eq!(with_db("127.20.9.9")["country"], "NL");
}

#[test]
fn cli_rejects_a_bad_ip_and_an_unreadable_db_with_exit_2() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let db = loopback_fleet_db(dir.path(), Schema::GeoLite2);
    let db = db.to_string_lossy();
    let missing_config = dir.path().join("none.toml");
    let missing_config = missing_config.to_string_lossy();
    let bad_ip = georelay(&[
        "geo",
        "lookup",
        "300.1.1.1",
        "--config",
        &missing_config,
        "--db",
        &db,
    ]);
    assert_eq!(bad_ip.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_ip.stderr).contains("300.1.1.1"));
    let no_db = georelay(&[
        "geo",
        "lookup",
        "1.1.1.1",
        "--config",
        &missing_config,
        "--db",
        "/nonexistent.mmdb",
    ]);
    assert_eq!(no_db.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_db.stderr).contains("/nonexistent.mmdb"));
    let no_config = georelay(&["geo", "lookup", "1.1.1.1", "--config", &missing_config]);
    assert_eq!(no_config.status.code(), Some(2));
}
