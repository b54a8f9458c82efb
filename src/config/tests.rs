//! Unit tests of config parsing and validation: one test per rule, each
//! asserting the diagnostic's message and, where it matters, its position.

use std::path::{Path, PathBuf};

use super::*;

/// A small valid fleet that the tests extend or edit.
const BASE: &str = r#"[regions.eu]
name = "European Union"
countries = ["DE", "FR", "NL"]

[regions.uk]
countries = ["GB"]

[regions.us]
countries = ["US"]

[nodes.eu-fra-1]
region = "eu"
listen = "127.10.0.1:4433"
admin = "127.10.0.1:9090"

[nodes.uk-lon-1]
region = "uk"
listen = "127.40.0.1:4433"
admin = "127.40.0.1:9090"

[nodes.us-iad-1]
region = "us"
listen = "127.20.0.1:4433"
admin = "127.20.0.1:9090"

[[links]]
between = ["eu-fra-1", "uk-lon-1"]
rtt_ms = 12

[[links]]
between = ["uk-lon-1", "us-iad-1"]
rtt_ms = 70

[apps.acme]
secret = "dev"
allow_regions = ["eu"]
"#;

const CONFIG_PATH: &str = "/srv/georelay/regions.toml";

fn parse(text: &str) -> Result<Fleet, ConfigErrors> {
    Fleet::parse(text, Path::new(CONFIG_PATH))
}

fn base_with(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

fn base_replacing(old: &str, new: &str) -> String {
    assert!(BASE.contains(old), "BASE does not contain {old:?}");
    BASE.replacen(old, new, 1)
}

/// The diagnostics of a config that must fail.
fn diagnostics(text: &str) -> Vec<Diagnostic> {
    match parse(text) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(errors) => errors.0,
    }
}

/// Asserts exactly one diagnostic, containing `fragment`, and returns it.
fn single_error(text: &str, fragment: &str) -> Diagnostic {
    let found = diagnostics(text);
    assert_eq!(found.len(), 1, "expected one diagnostic, got {found:#?}");
    let diagnostic = found.into_iter().next().expect("one diagnostic");
    assert!(
        diagnostic.to_string().contains(fragment),
        "{diagnostic} does not contain {fragment:?}"
    );
    diagnostic
}

fn valid(text: &str) -> Fleet {
    match parse(text) {
        Ok(fleet) => fleet,
        Err(errors) => panic!("config invalid:\n{errors}"),
    }
}

fn region(id: &str) -> RegionId {
    RegionId::new(id)
}

fn country(code: &str) -> CountryCode {
    CountryCode::parse(code).expect("country code")
}

#[test]
fn base_fleet_parses_with_documented_defaults() {
    let fleet = valid(BASE);
    assert_eq!(fleet.regions.len(), 3);
    assert_eq!(fleet.regions[&region("eu")].name, "European Union");
    assert_eq!(
        fleet.regions[&region("uk")].name,
        "uk",
        "name defaults to the id"
    );
    let fra = fleet.node("eu-fra-1").expect("node");
    assert_eq!(fra.region, region("eu"));
    assert_eq!(fra.listen, "127.10.0.1:4433".parse().expect("addr"));
    assert_eq!(fra.admin, "127.10.0.1:9090".parse().expect("addr"));
    assert_eq!(
        fleet.links[1],
        Link {
            a: NodeId::new("uk-lon-1"),
            b: NodeId::new("us-iad-1"),
            rtt_ms: 70
        }
    );
    let app = fleet.app("acme").expect("app");
    assert_eq!(app.metadata_retention_days, 30);
    assert_eq!(app.client_countries, ClientCountryRule::Any);
    assert_eq!(app.unknown_client_country, UnknownCountry::Allow);
    assert_eq!(app.secret, SecretSource::Inline("dev".into()));
    assert_eq!(fleet.limits, Limits::default());
    assert_eq!(fleet.limits.max_sessions, 10_000);
    let metadata = &fleet.metadata;
    assert!(metadata.enabled);
    assert_eq!(metadata.dir, PathBuf::from("/srv/georelay/data/metadata"));
    assert_eq!(metadata.flush_interval_ms, 1000);
    assert_eq!(metadata.ip_mode, IpMode::Truncate);
    assert_eq!(metadata.ip_retention_days, 7);
    assert_eq!(metadata.retention_days, 30);
    assert_eq!(metadata.channel_capacity, 65_536);
    assert_eq!(fleet.tls, TlsConfig::default());
    assert_eq!(fleet.geoip, GeoipConfig::default());
    assert!(fleet.warnings.is_empty(), "{:?}", fleet.warnings);
}

#[test]
fn every_optional_section_is_read() {
    let fleet = valid(&base_with(
        r#"
[metadata]
enabled = false
dir = "/var/lib/georelay"
flush_interval_ms = 250
quality_interval_secs = 5
traffic_interval_secs = 30
sweep_interval_secs = 600
channel_capacity = 1024
ip_mode = "drop"
ip_retention_days = 3
retention_days = 14
mlock = true

[metadata.postgres]
dsn_env = "GEORELAY_PG"
buffer_events = 5000
local_store = false

[limits]
max_sessions = 100
max_tracks_per_session = 4
mesh_datagram_send_buffer_bytes = 131_072
quic_endpoints = 2
max_message_bytes = 1_024
drain_timeout_ms = 0
"#,
    ));
    let metadata = &fleet.metadata;
    assert!(!metadata.enabled);
    assert_eq!(metadata.dir, PathBuf::from("/var/lib/georelay"));
    assert_eq!(metadata.flush_interval_ms, 250);
    assert_eq!(metadata.quality_interval_secs, 5);
    assert_eq!(metadata.traffic_interval_secs, 30);
    assert_eq!(metadata.sweep_interval_secs, 600);
    assert_eq!(metadata.channel_capacity, 1024);
    assert_eq!(metadata.ip_mode, IpMode::Drop);
    assert_eq!(metadata.ip_retention_days, 3);
    assert_eq!(metadata.retention_days, 14);
    assert!(metadata.mlock);
    assert_eq!(
        metadata.postgres,
        Some(PostgresConfig {
            dsn_env: "GEORELAY_PG".into(),
            buffer_events: 5000,
            local_store: false
        })
    );
    assert_eq!(
        fleet.limits,
        Limits {
            max_sessions: 100,
            max_tracks_per_session: 4,
            mesh_datagram_send_buffer_bytes: 131_072,
            quic_endpoints: 2,
            max_message_bytes: 1024,
            drain_timeout_ms: 0,
            ..Limits::default()
        }
    );
    // The fleet-wide retention is the default for apps.
    assert_eq!(
        fleet.app("acme").map(|a| a.metadata_retention_days),
        Some(14)
    );
}

#[test]
fn a_removed_key_is_refused_naming_its_replacement() {
    for (removed, replacement) in [
        ("subscriber_queue_packets", "datagram_send_buffer_bytes"),
        ("mesh_queue_packets", "mesh_datagram_send_buffer_bytes"),
    ] {
        let text = base_with(&format!("[limits]\nmax_sessions = 10\n{removed} = 64"));
        let diagnostic = single_error(
            &text,
            &format!("limits.{removed}: key \"{removed}\" no longer exists"),
        );
        assert!(
            diagnostic.to_string().contains(&format!("`{replacement}`")),
            "{diagnostic} names the key that replaced it"
        );
        let line = text
            .lines()
            .position(|l| l.starts_with(removed))
            .expect("the key's line")
            + 1;
        assert_eq!((diagnostic.line, diagnostic.column), (line, 1));
        assert_eq!(diagnostic.file, PathBuf::from(CONFIG_PATH));
        assert!(
            !diagnostic.to_string().contains("did you mean"),
            "{diagnostic} explains the removal rather than guessing"
        );
    }
}

#[test]
fn unknown_keys_are_errors_with_position_and_suggestion() {
    let text = base_replacing("rtt_ms = 12", "rtt_ms = 12\nrtt = 3");
    let diagnostic = single_error(
        &text,
        "links[0].rtt: unknown key \"rtt\" (did you mean \"rtt_ms\"?)",
    );
    assert_eq!((diagnostic.line, diagnostic.column), (29, 1));
    assert_eq!(diagnostic.file, PathBuf::from(CONFIG_PATH));

    single_error(
        &base_with("[regoins.apac]\ncountries = [\"SG\"]"),
        "unknown key \"regoins\" (did you mean \"regions\"?)",
    );
    single_error(
        &base_replacing(
            "admin = \"127.10.0.1:9090\"",
            "admin = \"127.10.0.1:9090\"\nport = 1",
        ),
        "nodes.eu-fra-1.port: unknown key",
    );
    single_error(
        &base_with("[metadata]\nretention = 3"),
        "metadata.retention: unknown key",
    );
    single_error(
        &base_with("[limits]\nmax_session = 3"),
        "did you mean \"max_sessions\"",
    );
    single_error(&base_with("[tls]\ncert = \"x\""), "tls.cert: unknown key");
    single_error(&base_with("[geoip]\ndb = \"x\""), "geoip.db: unknown key");
    let misspelt_rule = diagnostics(&base_replacing(
        "allow_regions = [\"eu\"]",
        "allow_regions = [\"eu\"]\nclient_countries = { block = [\"RU\"] }",
    ));
    let messages: Vec<String> = misspelt_rule.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(
        messages[0].contains(":37:1: apps.acme.client_countries: expected { allow"),
        "{messages:#?}"
    );
    assert!(
        messages[1].contains(":37:22: apps.acme.client_countries.block: unknown key"),
        "{messages:#?}"
    );
}

#[test]
fn references_to_unknown_regions_and_nodes_are_errors() {
    let diagnostic = single_error(
        &base_replacing("region = \"us\"", "region = \"usa\""),
        "nodes.us-iad-1.region: unknown region \"usa\" (did you mean \"us\"?)",
    );
    assert_eq!((diagnostic.line, diagnostic.column), (22, 10));

    let diagnostic = single_error(
        &base_replacing(
            "between = [\"uk-lon-1\", \"us-iad-1\"]",
            "between = [\"uk-lon-1\", \"us-iad-2\"]",
        ),
        "links[1].between[1]: unknown node \"us-iad-2\"",
    );
    assert_eq!((diagnostic.line, diagnostic.column), (31, 24));

    single_error(
        &base_replacing(
            "allow_regions = [\"eu\"]",
            "allow_regions = [\"eu\", \"mars\"]",
        ),
        "apps.acme.allow_regions[1]: unknown region \"mars\"",
    );
    single_error(
        &base_replacing("allow_regions = [\"eu\"]", "deny_regions = [\"apac\"]"),
        "apps.acme.deny_regions[0]: unknown region \"apac\"",
    );
}

#[test]
fn a_reference_to_a_broken_declaration_reports_only_the_declaration() {
    // The node exists but has a bad address: the link to it is not "unknown".
    let text = base_replacing("listen = \"127.20.0.1:4433\"", "listen = \"nowhere\"");
    single_error(
        &text,
        "nodes.us-iad-1.listen: \"nowhere\" is not an IP:port address",
    );
}

#[test]
fn a_country_in_two_regions_is_an_error_at_the_second() {
    let diagnostic = single_error(
        &base_replacing("countries = [\"US\"]", "countries = [\"US\", \"DE\"]"),
        "regions.us.countries[1]: country \"DE\" is already in region \"eu\"",
    );
    assert_eq!((diagnostic.line, diagnostic.column), (9, 20));
}

#[test]
fn bad_iso_codes_are_errors() {
    for (code, fragment) in [
        (
            "UK",
            "not an assigned ISO 3166-1 alpha-2 country code (the United Kingdom is \"GB\")",
        ),
        ("ZZ", "not an assigned ISO 3166-1 alpha-2"),
        ("GBR", "expected two ASCII letters"),
        ("G1", "expected two ASCII letters"),
        ("", "expected two ASCII letters"),
        ("gb", "write \"GB\", not \"gb\""),
    ] {
        let text = base_replacing("countries = [\"GB\"]", &format!("countries = [\"{code}\"]"));
        let diagnostic = single_error(&text, fragment);
        assert_eq!(diagnostic.toml_path, "regions.uk.countries[0]");
    }
    single_error(
        &base_replacing("countries = [\"GB\"]", "countries = [\"GB\", \"GB\"]"),
        "country \"GB\" is listed twice",
    );
    single_error(
        &base_replacing("countries = [\"GB\"]", "countries = [\"GB\", 44]"),
        "regions.uk.countries[1]: expected a string, found integer",
    );
}

#[test]
fn duplicate_addresses_are_errors() {
    let diagnostic = single_error(
        &base_replacing(
            "listen = \"127.40.0.1:4433\"",
            "listen = \"127.10.0.1:4433\"",
        ),
        "nodes.uk-lon-1.listen: address 127.10.0.1:4433 is already used by nodes.eu-fra-1.listen",
    );
    assert_eq!((diagnostic.line, diagnostic.column), (18, 10));
    single_error(
        &base_replacing("admin = \"127.20.0.1:9090\"", "admin = \"127.40.0.1:9090\""),
        "nodes.us-iad-1.admin: address 127.40.0.1:9090 is already used by nodes.uk-lon-1.admin",
    );
    single_error(
        &base_replacing("admin = \"127.10.0.1:9090\"", "admin = \"127.10.0.1:4433\""),
        "nodes.eu-fra-1.admin: address 127.10.0.1:4433 is already used by nodes.eu-fra-1.listen",
    );
    single_error(
        &base_replacing("admin = \"127.10.0.1:9090\"", "admin = \"127.10.0.1:0\""),
        "port 0 is not allowed",
    );
    let missing = single_error(
        &base_replacing("admin = \"127.10.0.1:9090\"\n", ""),
        "nodes.eu-fra-1: missing required key \"admin\"",
    );
    assert_eq!((missing.line, missing.column), (11, 8));
}

#[test]
fn bad_links_are_errors() {
    single_error(
        &base_replacing(
            "between = [\"eu-fra-1\", \"uk-lon-1\"]",
            "between = [\"eu-fra-1\", \"eu-fra-1\"]",
        ),
        "links[0].between[1]: a link from \"eu-fra-1\" to itself",
    );
    let reversed = base_with("[[links]]\nbetween = [\"uk-lon-1\", \"eu-fra-1\"]\nrtt_ms = 5");
    single_error(
        &reversed,
        "links[2].between: duplicate link between \"uk-lon-1\" and \"eu-fra-1\" (first in links[0])",
    );
    single_error(
        &base_replacing("rtt_ms = 12", "rtt_ms = 0"),
        "links[0].rtt_ms: must be between 1 and 4294967295, found 0",
    );
    single_error(&base_replacing("rtt_ms = 12", "rtt_ms = -3"), "found -3");
    single_error(
        &base_replacing("rtt_ms = 12", "rtt_ms = 1.5"),
        "expected an integer, found float",
    );
    single_error(
        &base_replacing("rtt_ms = 12\n", ""),
        "links[0]: missing required key \"rtt_ms\"",
    );
    single_error(
        &base_replacing(
            "between = [\"eu-fra-1\", \"uk-lon-1\"]",
            "between = [\"eu-fra-1\", \"uk-lon-1\", \"us-iad-1\"]",
        ),
        "a link joins exactly two nodes, found 3",
    );
    let links_start = BASE.find("[[links]]").expect("links");
    let apps_start = BASE.find("[apps.acme]").expect("apps");
    let not_an_array = format!("links = 3\n{}{}", &BASE[..links_start], &BASE[apps_start..]);
    let diagnostic = single_error(
        &not_an_array,
        "links: expected an array of tables ([[links]]), found integer",
    );
    assert_eq!((diagnostic.line, diagnostic.column), (1, 9));
}

#[test]
fn app_region_policies_are_exactly_one_non_empty_list() {
    single_error(
        &base_replacing(
            "allow_regions = [\"eu\"]",
            "allow_regions = [\"eu\"]\ndeny_regions = [\"us\"]",
        ),
        "apps.acme.deny_regions: set allow_regions or deny_regions, not both",
    );
    single_error(
        &base_replacing("allow_regions = [\"eu\"]", ""),
        "apps.acme: no region policy",
    );
    single_error(
        &base_replacing("allow_regions = [\"eu\"]", "allow_regions = []"),
        "an empty allow list allows nothing",
    );
    single_error(
        &base_replacing(
            "allow_regions = [\"eu\"]",
            "deny_regions = [\"us\", \"eu\", \"uk\"]",
        ),
        "denies every configured region",
    );
    single_error(
        &base_replacing(
            "allow_regions = [\"eu\"]",
            "allow_regions = [\"eu\", \"eu\"]",
        ),
        "region \"eu\" is listed twice",
    );

    let open = valid(&base_replacing(
        "allow_regions = [\"eu\"]",
        "deny_regions = []",
    ));
    let app = open.app("acme").expect("app");
    assert_eq!(app.regions, RegionPolicy::Deny(BTreeSet::new()));
    assert_eq!(
        open.allowed_regions(app),
        [region("eu"), region("uk"), region("us")].into()
    );
}

#[test]
fn client_country_rules() {
    let with_rule = |rule: &str| {
        base_replacing(
            "allow_regions = [\"eu\"]",
            &format!("allow_regions = [\"eu\"]\n{rule}"),
        )
    };
    single_error(
        &with_rule("client_countries = { allow = [\"DE\"], deny = [\"RU\"] }"),
        "client_countries.deny: set allow or deny, not both",
    );
    single_error(
        &with_rule("client_countries = {}"),
        "expected { allow = [...] } or { deny = [...] }",
    );
    single_error(
        &with_rule("client_countries = { allow = [] }"),
        "an empty allow list refuses every client",
    );
    single_error(
        &with_rule("client_countries = { deny = [\"SU\"] }"),
        "client_countries.deny[0]: \"SU\" is not an assigned",
    );
    single_error(
        &with_rule("unknown_client_country = \"maybe\""),
        "expected \"allow\" or \"deny\", found \"maybe\"",
    );

    let fleet = valid(&with_rule(
        "client_countries = { allow = [\"DE\", \"FR\"] }\nunknown_client_country = \"deny\"",
    ));
    let app = fleet.app("acme").expect("app");
    assert!(app.client_countries.allows(country("DE")));
    assert!(!app.client_countries.allows(country("US")));
    assert_eq!(app.unknown_client_country, UnknownCountry::Deny);

    let fleet = valid(&with_rule("client_countries = { deny = [\"RU\"] }"));
    let rule = &fleet.app("acme").expect("app").client_countries;
    assert!(!rule.allows(country("RU")));
    assert!(rule.allows(country("DE")));
    assert!(ClientCountryRule::Any.allows(country("RU")));
}

#[test]
fn retention_days_are_between_1_and_30() {
    let with_days = |days: &str| {
        base_replacing(
            "allow_regions = [\"eu\"]",
            &format!("allow_regions = [\"eu\"]\nmetadata_retention_days = {days}"),
        )
    };
    single_error(
        &with_days("31"),
        "apps.acme.metadata_retention_days: must be between 1 and 30, found 31",
    );
    single_error(&with_days("0"), "must be between 1 and 30, found 0");
    assert_eq!(
        valid(&with_days("1"))
            .app("acme")
            .map(|a| a.metadata_retention_days),
        Some(1)
    );
    assert_eq!(
        valid(&with_days("30"))
            .app("acme")
            .map(|a| a.metadata_retention_days),
        Some(30)
    );
    single_error(
        &base_with("[metadata]\nretention_days = 45"),
        "metadata.retention_days: must be between 1 and 30",
    );
}

#[test]
fn an_app_needs_exactly_one_secret_source() {
    single_error(
        &base_replacing("secret = \"dev\"\n", ""),
        "apps.acme: no secret",
    );
    single_error(
        &base_replacing(
            "secret = \"dev\"",
            "secret = \"dev\"\nsecret_file = \"key\"",
        ),
        "apps.acme.secret_file: only one of secret_env, secret, secret_file may be set, found secret and secret_file",
    );
    single_error(
        &base_replacing("secret = \"dev\"", "secret = \"\""),
        "apps.acme.secret: must not be empty",
    );
    single_error(
        &base_replacing("secret = \"dev\"", "secret_env = \"ACME SECRET\""),
        "is not an environment variable name",
    );

    // An unset variable is fine at check time; it fails at resolve (serve) time.
    let fleet = valid(&base_replacing(
        "secret = \"dev\"",
        "secret_env = \"GEORELAY_TEST_UNSET_SECRET_VARIABLE\"",
    ));
    let app = fleet.app("acme").expect("app");
    assert_eq!(
        app.secret,
        SecretSource::Env("GEORELAY_TEST_UNSET_SECRET_VARIABLE".into())
    );
    let message = app
        .resolve_secret()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        message,
        "apps.acme.secret_env: environment variable GEORELAY_TEST_UNSET_SECRET_VARIABLE is not set"
    );

    let fleet = valid(&base_replacing(
        "secret = \"dev\"",
        "secret_file = \"secrets/acme.key\"",
    ));
    assert_eq!(
        fleet.app("acme").map(|a| a.secret.clone()),
        Some(SecretSource::File(PathBuf::from(
            "/srv/georelay/secrets/acme.key"
        )))
    );
}

#[test]
fn geoip_database_must_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("regions.toml");

    let missing = format!("{BASE}\n[geoip]\ndatabase = \"geo/missing.mmdb\"\n");
    let errors = Fleet::parse(&missing, &config).expect_err("missing database");
    assert_eq!(errors.0.len(), 1);
    assert!(
        errors.0[0]
            .to_string()
            .contains("geoip.database: cannot open GeoIP database"),
        "{errors}"
    );

    std::fs::write(dir.path().join("garbage.mmdb"), b"not a maxmind database").expect("write");
    let garbage = format!("{BASE}\n[geoip]\ndatabase = \"garbage.mmdb\"\n");
    let errors = Fleet::parse(&garbage, &config).expect_err("invalid database");
    assert!(
        errors.0[0].message.contains("cannot open GeoIP database"),
        "{errors}"
    );

    let mut writer = mmdb_writer::Writer::new("GeoLite2-Country");
    let record =
        mmdb_writer::Value::map([("country", mmdb_writer::Value::map([("iso_code", "NL")]))]);
    let network: ipnet::IpNet = "193.0.0.0/16".parse().expect("net");
    writer.insert_value(network, record).expect("insert");
    std::fs::write(
        dir.path().join("real.mmdb"),
        writer.to_bytes().expect("bytes"),
    )
    .expect("write");
    let real = format!("{BASE}\n[geoip]\ndatabase = \"real.mmdb\"\n");
    let fleet = Fleet::parse(&real, &config).expect("valid database");
    assert_eq!(fleet.geoip.database, Some(dir.path().join("real.mmdb")));
}

#[test]
fn geoip_overrides_are_canonical_cidrs() {
    let fleet = valid(&base_with(
        "[geoip.overrides]\n\"127.1.0.0/16\" = \"DE\"\n\"2001:db8::/32\" = \"NL\"",
    ));
    assert_eq!(
        fleet.geoip.overrides,
        vec![
            ("127.1.0.0/16".parse().expect("net"), country("DE")),
            ("2001:db8::/32".parse().expect("net"), country("NL")),
        ]
    );
    let with_override = |line: &str| base_with(&format!("[geoip.overrides]\n{line}"));
    let diagnostic = single_error(
        &with_override("\"10.0.0.1/8\" = \"DE\""),
        "geoip.overrides.\"10.0.0.1/8\": CIDR \"10.0.0.1/8\" has host bits set: did you mean \"10.0.0.0/8\"?",
    );
    assert_eq!((diagnostic.line, diagnostic.column), (39, 1));
    single_error(
        &with_override("\"10.0.0.0/33\" = \"DE\""),
        "is not a CIDR network",
    );
    single_error(
        &with_override("\"10.0.0.7\" = \"DE\""),
        "has no prefix length: write \"10.0.0.7/32\"",
    );
    single_error(
        &with_override("\"2001:db8::1\" = \"DE\""),
        "write \"2001:db8::1/128\"",
    );
    single_error(
        &with_override("\"10.0.0.0/8\" = \"XX\""),
        "\"XX\" is not an assigned",
    );
    single_error(
        &with_override("\"10.0.0.0/8\" = 49"),
        "expected a country code string, found integer",
    );
}

#[test]
fn ids_are_validated() {
    let node = |id: &str| {
        base_with(&format!(
            "[nodes.{id}]\nregion = \"eu\"\nlisten = \"127.10.0.9:4433\"\nadmin = \"127.10.0.9:9090\""
        ))
    };
    single_error(
        &node("\"Eu-Fra-2\""),
        "invalid node id \"Eu-Fra-2\": use only lowercase letters",
    );
    single_error(&node("eu_fra_2"), "invalid node id \"eu_fra_2\"");
    single_error(&node("-fra"), "must not start or end with '-'");
    single_error(&node(&"a".repeat(64)), "must be 1 to 63 characters");
    valid(&node(&"a".repeat(63)));
    single_error(
        &base_with("[regions.\"EU2\"]\ncountries = [\"IT\"]"),
        "invalid region id \"EU2\"",
    );
    valid(&base_with("[regions.eu_east]\ncountries = [\"IT\"]"));
    single_error(
        &base_with("[apps.\"Acme!\"]\nsecret = \"x\"\nallow_regions = [\"eu\"]"),
        "invalid app id \"Acme!\"",
    );
}

#[test]
fn full_ip_addresses_are_kept_at_most_7_days() {
    single_error(
        &base_with("[metadata]\nip_mode = \"full\"\nip_retention_days = 14"),
        "metadata.ip_retention_days: ip_mode = \"full\" keeps IP addresses at most 7 days, found 14",
    );
    valid(&base_with(
        "[metadata]\nip_mode = \"full\"\nip_retention_days = 7",
    ));
    valid(&base_with(
        "[metadata]\nip_mode = \"truncate\"\nip_retention_days = 14",
    ));
    single_error(
        &base_with("[metadata]\nip_mode = \"hash\""),
        "expected \"truncate\", \"full\" or \"drop\"",
    );
    single_error(
        &base_with("[metadata]\nflush_interval_ms = 5"),
        "must be between 10 and 60000",
    );
    single_error(
        &base_with("[metadata.postgres]\nbuffer_events = 5"),
        "metadata.postgres: missing required key \"dsn_env\"",
    );
}

#[test]
fn tls_settings() {
    single_error(&base_with("[tls]\ndir = \"certs\""), "[tls] ca is not");
    let half_pair = diagnostics(&base_replacing(
        "admin = \"127.10.0.1:9090\"",
        "admin = \"127.10.0.1:9090\"\ncert = \"fra.pem\"",
    ));
    let messages: Vec<String> = half_pair.iter().map(ToString::to_string).collect();
    let expected = ":15:8: nodes.eu-fra-1.cert: \"cert\" needs \"key\" too";
    assert!(
        messages.iter().any(|m| m.contains(expected)),
        "{messages:#?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----").expect("write");
    let config = dir.path().join("regions.toml");
    let text = base_replacing(
        "admin = \"127.10.0.1:9090\"",
        "admin = \"127.10.0.1:9090\"\ncert = \"own.pem\"\nkey = \"own.key\"",
    ) + "\n[tls]\nca = \"ca.pem\"\ndir = \"certs\"\n";
    let fleet = Fleet::parse(&text, &config).expect("valid tls");
    assert_eq!(fleet.tls.ca, Some(dir.path().join("ca.pem")));
    assert_eq!(
        fleet.node_cert_paths(&NodeId::new("eu-fra-1")),
        Some((dir.path().join("own.pem"), dir.path().join("own.key")))
    );
    assert_eq!(
        fleet.node_cert_paths(&NodeId::new("us-iad-1")),
        Some((
            dir.path().join("certs/us-iad-1.pem"),
            dir.path().join("certs/us-iad-1.key")
        ))
    );
    assert_eq!(valid(BASE).node_cert_paths(&NodeId::new("us-iad-1")), None);

    let no_ca = base_with("[tls]\nca = \"missing-ca.pem\"\ndir = \"certs\"");
    single_error(
        &no_ca,
        "tls.ca: CA certificate /srv/georelay/missing-ca.pem does not exist",
    );
}

#[test]
fn syntax_errors_are_reported_with_their_position() {
    let diagnostic = single_error("[regions.eu]\ncountries = [\"DE\"\n", "TOML syntax error");
    assert_eq!(diagnostic.line, 2);
    let duplicate = single_error(
        "[nodes.a]\nregion = \"x\"\n[nodes.a]\nregion = \"y\"\n",
        "TOML syntax error",
    );
    assert_eq!(duplicate.line, 3);
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let text = BASE
        .replacen("countries = [\"GB\"]", "countries = [\"UK\"]", 1)
        .replacen("region = \"us\"", "region = \"mars\"", 1)
        .replacen("rtt_ms = 70", "rtt_ms = 0", 1)
        .replacen(
            "allow_regions = [\"eu\"]",
            "allow_regions = []\nretention = 1",
            1,
        );
    let found = diagnostics(&text);
    let messages: Vec<String> = found.iter().map(ToString::to_string).collect();
    let expected = [
        ":6:14: regions.uk.countries[0]: \"UK\" is not an assigned",
        ":22:10: nodes.us-iad-1.region: unknown region \"mars\"",
        ":32:10: links[1].rtt_ms: must be between 1",
        ":36:1: apps.acme.allow_regions: an empty allow list",
        ":37:1: apps.acme.retention: unknown key \"retention\"",
    ];
    assert_eq!(found.len(), expected.len(), "{messages:#?}");
    for (message, fragment) in messages.iter().zip(expected) {
        assert!(
            message.contains(fragment),
            "{message} does not contain {fragment}"
        );
    }
    let lines: Vec<usize> = found.iter().map(|d| d.line).collect();
    assert!(lines.windows(2).all(|pair| pair[0] <= pair[1]));
}

#[test]
fn empty_or_missing_sections() {
    let found = diagnostics("");
    let messages: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("1:1: regions: no regions"))
    );
    assert!(messages.iter().any(|m| m.contains("1:1: nodes: no nodes")));
    single_error(
        &format!("regions = 3\n{}", &BASE[BASE.find("[nodes").unwrap_or(0)..]),
        "regions: expected a table, found integer",
    );
}

#[test]
fn regions_without_nodes_are_a_warning() {
    let fleet = valid(&base_with(
        "[regions.apac]\ncountries = [\"SG\"]\n\n[apps.sg-only]\nsecret = \"x\"\nallow_regions = [\"apac\"]",
    ));
    assert_eq!(
        fleet.warnings,
        vec![
            "region \"apac\" has no nodes".to_owned(),
            "app \"sg-only\" allows no region that has nodes".to_owned()
        ]
    );
    assert!(
        fleet
            .summary()
            .contains("warning: region \"apac\" has no nodes")
    );
}

#[test]
fn fleet_queries() {
    let fleet = valid(&base_with(
        "[apps.open]\nsecret = \"x\"\ndeny_regions = [\"uk\"]",
    ));
    assert_eq!(fleet.region_of_country(country("FR")), Some(&region("eu")));
    assert_eq!(fleet.region_of_country(country("GB")), Some(&region("uk")));
    assert_eq!(fleet.region_of_country(country("JP")), None);

    let acme = fleet.app("acme").expect("app");
    assert_eq!(fleet.allowed_regions(acme), [region("eu")].into());
    assert!(fleet.node_allowed_for(acme, &NodeId::new("eu-fra-1")));
    assert!(!fleet.node_allowed_for(acme, &NodeId::new("uk-lon-1")));
    assert!(!fleet.node_allowed_for(acme, &NodeId::new("no-such-node")));

    let open = fleet.app("open").expect("app");
    assert_eq!(
        fleet.allowed_regions(open),
        [region("eu"), region("us")].into()
    );
    assert!(open.regions.allows(&region("us")));
    assert!(!open.regions.allows(&region("uk")));
    assert!(fleet.node_allowed_for(open, &NodeId::new("us-iad-1")));
    assert!(!fleet.node_allowed_for(open, &NodeId::new("uk-lon-1")));

    assert!(fleet.app("nope").is_none());
    assert!(fleet.node("nope").is_none());
    let in_eu: Vec<&str> = fleet
        .nodes_in_region(&region("eu"))
        .map(|n| n.id.as_str())
        .collect();
    assert_eq!(in_eu, ["eu-fra-1"]);
}

#[test]
fn summary_lists_regions_nodes_links_and_apps() {
    let summary = valid(BASE).summary();
    assert!(
        summary.starts_with("/srv/georelay/regions.toml: ok\n"),
        "{summary}"
    );
    assert!(
        summary.contains("  eu (European Union): countries [DE, FR, NL]; nodes [eu-fra-1]"),
        "{summary}"
    );
    assert!(
        summary.contains("  eu-fra-1 in eu: listen 127.10.0.1:4433, admin 127.10.0.1:9090"),
        "{summary}"
    );
    assert!(
        summary.contains("  uk-lon-1 <-> us-iad-1: 70 ms"),
        "{summary}"
    );
    assert!(
        summary.contains("  acme: regions [eu] (by allow_regions); clients: any country"),
        "{summary}"
    );
    assert!(
        !summary.contains("dev\""),
        "the summary never prints secrets: {summary}"
    );
}

#[test]
fn loading_a_missing_file_is_a_diagnostic_at_1_1() {
    let errors =
        Fleet::load(Path::new("/nonexistent/georelay/regions.toml")).expect_err("missing file");
    assert_eq!(errors.0.len(), 1);
    assert!(
        errors
            .to_string()
            .starts_with("/nonexistent/georelay/regions.toml:1:1: cannot read config:"),
        "{errors}"
    );
}

#[test]
fn the_example_fleet_in_the_repository_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("regions.toml");
    let fleet = Fleet::load(&path).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(fleet.regions.len(), 4);
    assert_eq!(fleet.nodes.len(), 6);
    assert_eq!(fleet.links.len(), 7);
    assert_eq!(fleet.apps.len(), 4);
    assert!(fleet.warnings.is_empty(), "{:?}", fleet.warnings);
    let acme = fleet.app("acme-health").expect("app");
    assert_eq!(fleet.allowed_regions(acme), [region("eu")].into());
    assert!(!acme.client_countries.allows(country("RU")));
    let globex = fleet.app("globex-media").expect("app");
    assert_eq!(
        fleet.allowed_regions(globex),
        [region("eu"), region("uk"), region("us")].into()
    );
    assert_eq!(
        fleet.app("initech-chat").map(|a| a.metadata_retention_days),
        Some(7)
    );
    assert_eq!(fleet.region_of_country(country("GB")), Some(&region("uk")));
    assert_eq!(fleet.geoip.overrides.len(), 6);
}

#[test]
fn metadata_stores_per_region() {
    let fleet = valid(&base_with(
        "[metadata.postgres]\ndsn_env = \"FLEET_DSN\"\n[metadata.regions.eu]\ndsn_env = \"EU_DSN\"\n",
    ));
    let metadata = &fleet.metadata;
    assert_eq!(metadata.regions[&region("eu")].dsn_env, "EU_DSN");
    assert_eq!(metadata.store_env_for(&region("eu")), Some("EU_DSN"));
    assert_eq!(metadata.store_env_for(&region("us")), Some("FLEET_DSN"));
    assert!(metadata.has_postgres() && metadata.local_store());

    let only_eu = valid(&base_with("[metadata.regions.eu]\ndsn_env = \"EU_DSN\"\n"));
    assert_eq!(only_eu.metadata.store_env_for(&region("us")), None);
    assert_eq!(only_eu.metadata.postgres_buffer_events(), 100_000);
    assert!(
        only_eu
            .warnings
            .iter()
            .any(|w| w.contains("region \"us\" has nodes but no metadata store")),
        "{:?}",
        only_eu.warnings
    );

    let unknown = single_error(
        &base_with("[metadata.regions.europe]\ndsn_env = \"EU_DSN\"\n"),
        "unknown region \"europe\"",
    );
    assert_eq!(unknown.toml_path, "metadata.regions.europe");
    single_error(
        &base_with("[metadata.regions.eu]\ndsn_env = \"not a name\"\n"),
        "is not an environment variable name",
    );
    let misspelt = diagnostics(&base_with("[metadata.regions.eu]\ndsn = \"EU_DSN\"\n"));
    let messages: Vec<String> = misspelt.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].contains("missing required key \"dsn_env\""),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("unknown key \"dsn\" (did you mean \"dsn_env\"?)"),
        "{messages:?}"
    );
}
