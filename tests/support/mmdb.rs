//! Builds small MaxMind DB files for tests, in either record schema, so the
//! real reader path runs in CI without `../shared`.
//!
//! ```ignore
//! let dir = tempfile::tempdir()?;
//! let db = MmdbBuilder::new(Schema::GeoLite2)
//!     .network("127.10.0.0/16", "DE")
//!     .network("2001:db8::/32", "NL")
//!     .write_in(dir.path(), "geo.mmdb");
//! ```
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use mmdb_writer::{IpVersion, Value, Writer};

/// The record layout to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// MaxMind GeoLite2/GeoIP2 and DB-IP:
    /// `{"country": {"iso_code": "DE", "geoname_id": .., "names": {..}},
    ///   "registered_country": {..}, "continent": {..}}`.
    GeoLite2,
    /// ip-location-db: `{"country_code": "DE"}`.
    IpLocationDb,
}

/// A MaxMind DB under construction: networks and their countries.
#[derive(Clone, Debug)]
pub struct MmdbBuilder {
    schema: Schema,
    ipv4_only: bool,
    networks: Vec<(IpNet, Value)>,
}

impl MmdbBuilder {
    /// An empty IPv6 database (IPv4 networks are reachable as IPv4 and as
    /// IPv4-mapped IPv6) in `schema`.
    pub fn new(schema: Schema) -> Self {
        Self {
            schema,
            ipv4_only: false,
            networks: Vec::new(),
        }
    }

    /// Writes an IPv4-only database (`ip_version` 4) instead.
    pub fn ipv4_only(mut self) -> Self {
        self.ipv4_only = true;
        self
    }

    /// Maps `cidr` to `country` in the builder's schema. Later networks win
    /// where they overlap earlier ones.
    pub fn network(mut self, cidr: &str, country: &str) -> Self {
        let record = match self.schema {
            Schema::GeoLite2 => geolite2_record(country),
            Schema::IpLocationDb => Value::map([("country_code", Value::from(country))]),
        };
        self.networks.push((parse_net(cidr), record));
        self
    }

    /// Maps `cidr` to an arbitrary record (for odd or broken records).
    pub fn raw_record(mut self, cidr: &str, record: Value) -> Self {
        self.networks.push((parse_net(cidr), record));
        self
    }

    /// The encoded database.
    pub fn to_bytes(&self) -> Vec<u8> {
        let database_type = match self.schema {
            Schema::GeoLite2 => "GeoLite2-Country",
            Schema::IpLocationDb => "ip-location-db-country",
        };
        let ip_version = if self.ipv4_only {
            IpVersion::V4
        } else {
            IpVersion::V6
        };
        let mut writer = Writer::builder(database_type)
            .ip_version(ip_version)
            .build();
        for (net, record) in &self.networks {
            writer
                .insert_value(*net, record.clone())
                .unwrap_or_else(|err| panic!("mmdb-writer refused {net}: {err}"));
        }
        writer
            .to_bytes()
            .unwrap_or_else(|err| panic!("mmdb-writer failed: {err}"))
    }

    /// Writes the database to `dir/name` and returns its path.
    pub fn write_in(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.to_bytes())
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
        path
    }
}

/// A GeoLite2-Country-shaped record, with the fields a reader must skip.
fn geolite2_record(country: &str) -> Value {
    let names = Value::map([("en", Value::from(format!("Country {country}")))]);
    let country_map = Value::map([
        ("geoname_id", Value::from(1_000_u32)),
        ("is_in_european_union", Value::from(false)),
        ("iso_code", Value::from(country)),
        ("names", names.clone()),
    ]);
    Value::map([
        (
            "continent",
            Value::map([("code", Value::from("EU")), ("names", names)]),
        ),
        ("country", country_map.clone()),
        ("registered_country", country_map),
    ])
}

fn parse_net(cidr: &str) -> IpNet {
    cidr.parse()
        .unwrap_or_else(|err| panic!("bad test CIDR {cidr}: {err}"))
}

/// The loopback layout the example fleet and the integration tests use:
/// 127.10/16 → DE, 127.20/16 → US, 127.30/16 → JP, 127.66/16 → RU, plus
/// documentation IPv6 ranges 2001:db8:10::/48 → DE, 2001:db8:20::/48 → US.
pub fn loopback_fleet_db(dir: &Path, schema: Schema) -> PathBuf {
    MmdbBuilder::new(schema)
        .network("127.10.0.0/16", "DE")
        .network("127.20.0.0/16", "US")
        .network("127.30.0.0/16", "JP")
        .network("127.66.0.0/16", "RU")
        .network("2001:db8:10::/48", "DE")
        .network("2001:db8:20::/48", "US")
        .write_in(dir, "loopback-fleet.mmdb")
}
