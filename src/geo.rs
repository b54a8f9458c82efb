//! IP address → country: `[geoip.overrides]` first (longest prefix wins), then
//! an optional MaxMind DB.
//!
//! This module owns the GeoIP database reader ([`MaxMindDb`]), the override
//! table, and the combined lookup ([`Geo`]) that admission and the CLI use.
//! Mapping a country to a region is the config's job
//! (`Fleet::region_of_country`).
//!
//! Both record schemas in the wild are accepted: `country.iso_code`
//! (MaxMind GeoLite2/GeoIP2, DB-IP) and a top-level `country_code`
//! (ip-location-db). Addresses are canonicalised first, so an IPv4-mapped IPv6
//! client (`::ffff:a.b.c.d`) is found under its IPv4 address, both in the
//! overrides and in the database.
//!
//! A lookup never fails: an address that is not found, a record without a
//! usable country, or a decode error all give `None` ("unknown"), and the
//! app's `unknown_client_country` policy decides. Client addresses are
//! personal data, so they are logged at `trace` level only.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;

use crate::config::GeoipConfig;
use crate::ids::CountryCode;

/// Anything that maps an address to a country. Implemented by [`MaxMindDb`];
/// tests may plug in their own.
pub trait CountryLookup: Send + Sync {
    /// The country of `ip`, or `None` when unknown.
    fn country(&self, ip: IpAddr) -> Option<CountryCode>;
}

/// Why a GeoIP database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file is missing, unreadable, or not a MaxMind DB. Check the path
    /// (relative paths in regions.toml are relative to that file).
    #[error("cannot open GeoIP database {}: {source}", path.display())]
    Open {
        /// The database path as given.
        path: PathBuf,
        /// What the reader reported.
        #[source]
        source: maxminddb::MaxMindDbError,
    },
}

/// A MaxMind DB file (either schema), loaded into memory.
///
/// The file is read once at open (about 4 ms and 7.7 MB for a 7.8 MB
/// database; see docs/BENCHMARKS.md), so replacing or truncating the file
/// while the relay runs cannot affect it. Reload by opening a new one.
pub struct MaxMindDb {
    path: PathBuf,
    reader: maxminddb::Reader<Vec<u8>>,
}

/// The fields of a record that name a country, in either schema. Every
/// other field of the record is skipped without being decoded.
#[derive(Deserialize)]
struct CountryRecord<'a> {
    /// GeoLite2/GeoIP2/DB-IP: `{"country": {"iso_code": "NL", ..}, ..}`.
    #[serde(borrow, default)]
    country: Option<CountryField<'a>>,
    /// ip-location-db: `{"country_code": "NL"}`.
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct CountryField<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

impl CountryRecord<'_> {
    fn code(&self) -> Option<&str> {
        self.country
            .as_ref()
            .and_then(|country| country.iso_code)
            .or(self.country_code)
    }
}

impl MaxMindDb {
    /// Reads the database at `path` into memory and checks its metadata.
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|source| GeoError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
        })
    }

    /// The path the database was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `database_type` of the file's metadata, e.g. `GeoLite2-Country`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }
}

impl CountryLookup for MaxMindDb {
    fn country(&self, ip: IpAddr) -> Option<CountryCode> {
        let ip = ip.to_canonical();
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return None;
        }
        let record = match self
            .reader
            .lookup(ip)
            .and_then(|found| found.decode::<CountryRecord<'_>>())
        {
            Ok(record) => record?,
            Err(err) => {
                tracing::debug!(db = %self.path.display(), error = %err, "GeoIP record not decodable");
                tracing::trace!(%ip, "GeoIP record not decodable");
                return None;
            }
        };
        let code = record.code()?;
        let country = CountryCode::parse(code);
        if country.is_none() {
            tracing::debug!(db = %self.path.display(), code, "GeoIP record has an invalid country code");
        }
        country
    }
}

impl fmt::Debug for MaxMindDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaxMindDb")
            .field("path", &self.path)
            .field("database_type", &self.database_type())
            .finish()
    }
}

/// The override table: for each prefix length present, longest first, a map
/// from masked network address to country. A lookup costs at most one hash
/// probe per distinct prefix length (33 for IPv4, 129 for IPv6), whatever
/// the number of overrides.
#[derive(Debug, Default)]
struct Overrides {
    v4: Vec<(u8, HashMap<u32, CountryCode>)>,
    v6: Vec<(u8, HashMap<u128, CountryCode>)>,
}

impl Overrides {
    fn new(overrides: impl IntoIterator<Item = (IpNet, CountryCode)>) -> Self {
        let mut table = Self::default();
        for (net, country) in overrides {
            match canonical_net(net) {
                IpNet::V4(net) => {
                    let len = net.prefix_len();
                    let key = u32::from(net.network());
                    insert_at(&mut table.v4, len, key, country);
                }
                IpNet::V6(net) => {
                    let len = net.prefix_len();
                    let key = u128::from(net.network());
                    insert_at(&mut table.v6, len, key, country);
                }
            }
        }
        table
    }

    fn lookup(&self, ip: IpAddr) -> Option<CountryCode> {
        match ip.to_canonical() {
            IpAddr::V4(ip) => {
                let bits = u32::from(ip);
                self.v4.iter().find_map(|(len, networks)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                    networks.get(&(bits & mask)).copied()
                })
            }
            IpAddr::V6(ip) => {
                let bits = u128::from(ip);
                self.v6.iter().find_map(|(len, networks)| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                    networks.get(&(bits & mask)).copied()
                })
            }
        }
    }

    fn len(&self) -> usize {
        let v4: usize = self.v4.iter().map(|(_, networks)| networks.len()).sum();
        let v6: usize = self.v6.iter().map(|(_, networks)| networks.len()).sum();
        v4 + v6
    }
}

/// Adds `key/len → country` to a table kept sorted by prefix length,
/// longest first. A later duplicate network replaces an earlier one.
fn insert_at<K: std::hash::Hash + Eq>(
    table: &mut Vec<(u8, HashMap<K, CountryCode>)>,
    len: u8,
    key: K,
    country: CountryCode,
) {
    let index = match table.binary_search_by(|(other, _)| len.cmp(other)) {
        Ok(index) => index,
        Err(index) => {
            table.insert(index, (len, HashMap::new()));
            index
        }
    };
    if let Some((_, networks)) = table.get_mut(index) {
        networks.insert(key, country);
    }
}

/// Host bits cleared, and an IPv4-mapped IPv6 network (`::ffff:a.b.c.d/n`,
/// n ≥ 96) turned into its IPv4 network, so it matches canonicalised clients.
fn canonical_net(net: IpNet) -> IpNet {
    match net.trunc() {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(IpNet::V6(v6)),
            None => IpNet::V6(v6),
        },
        other => other,
    }
}

/// The combined lookup: overrides first (longest prefix wins), then the
/// database, if any. Cheap to share behind an `Arc`.
pub struct Geo {
    overrides: Overrides,
    database: Option<Arc<dyn CountryLookup>>,
}

impl Geo {
    /// A lookup from explicit overrides and an optional database.
    pub fn new(
        overrides: impl IntoIterator<Item = (IpNet, CountryCode)>,
        database: Option<Arc<dyn CountryLookup>>,
    ) -> Self {
        Self {
            overrides: Overrides::new(overrides),
            database,
        }
    }

    /// The lookup a `[geoip]` section describes: its overrides, and its
    /// database opened (fails if it names one that cannot be read).
    pub fn from_config(config: &GeoipConfig) -> Result<Self, GeoError> {
        let database = match &config.database {
            Some(path) => Some(Arc::new(MaxMindDb::open(path)?) as Arc<dyn CountryLookup>),
            None => None,
        };
        Ok(Self::new(config.overrides.iter().cloned(), database))
    }

    /// The country of `ip`, or `None` when neither an override nor the
    /// database knows it.
    pub fn lookup(&self, ip: IpAddr) -> Option<CountryCode> {
        let country = self
            .overrides
            .lookup(ip)
            .or_else(|| self.database.as_ref()?.country(ip));
        tracing::trace!(%ip, country = ?country, "geo lookup");
        country
    }

    /// Whether a database is configured (overrides alone otherwise).
    pub fn has_database(&self) -> bool {
        self.database.is_some()
    }
}

impl CountryLookup for Geo {
    fn country(&self, ip: IpAddr) -> Option<CountryCode> {
        self.lookup(ip)
    }
}

impl fmt::Debug for Geo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Geo")
            .field("overrides", &self.overrides.len())
            .field("has_database", &self.has_database())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use ipnet::Ipv6Net;

    use super::*;

    fn cc(code: &str) -> CountryCode {
        CountryCode::parse(code).unwrap_or_else(|| panic!("bad test country {code}"))
    }

    fn net(cidr: &str) -> IpNet {
        cidr.parse()
            .unwrap_or_else(|_| panic!("bad test cidr {cidr}"))
    }

    fn ip(addr: &str) -> IpAddr {
        addr.parse()
            .unwrap_or_else(|_| panic!("bad test ip {addr}"))
    }

    /// A database stand-in that knows exactly one address.
    struct OneAddress(IpAddr, CountryCode);

    impl CountryLookup for OneAddress {
        fn country(&self, ip: IpAddr) -> Option<CountryCode> {
            (ip.to_canonical() == self.0).then_some(self.1)
        }
    }

    #[test]
    fn longest_override_prefix_wins_whatever_the_order() {
        let entries = [
            (net("10.0.0.0/8"), cc("US")),
            (net("10.20.30.0/24"), cc("FR")),
            (net("10.20.0.0/16"), cc("DE")),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            let geo = Geo::new(order.map(|i| entries[i]), None);
            assert_eq!(geo.lookup(ip("10.20.30.40")), Some(cc("FR")));
            assert_eq!(geo.lookup(ip("10.20.31.1")), Some(cc("DE")));
            assert_eq!(geo.lookup(ip("10.99.0.1")), Some(cc("US")));
            assert_eq!(geo.lookup(ip("11.0.0.1")), None);
        }
    }

    #[test]
    fn overrides_take_precedence_over_the_database() {
        let database = Arc::new(OneAddress(ip("127.1.2.3"), cc("NL")));
        let geo = Geo::new([(net("127.1.0.0/16"), cc("DE"))], Some(database.clone()));
        assert_eq!(geo.lookup(ip("127.1.2.3")), Some(cc("DE")));
        let geo = Geo::new([(net("127.2.0.0/16"), cc("DE"))], Some(database));
        assert_eq!(geo.lookup(ip("127.1.2.3")), Some(cc("NL")));
        assert_eq!(geo.lookup(ip("127.3.0.1")), None);
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_overrides_and_mapped_overrides_match_ipv4() {
        let geo = Geo::new(
            [
                (net("127.1.0.0/16"), cc("DE")),
                (net("::ffff:10.20.0.0/112"), cc("US")),
            ],
            None,
        );
        assert_eq!(geo.lookup(ip("::ffff:127.1.0.9")), Some(cc("DE")));
        assert_eq!(geo.lookup(ip("10.20.3.4")), Some(cc("US")));
        assert_eq!(geo.lookup(ip("::ffff:10.20.3.4")), Some(cc("US")));
        assert_eq!(geo.lookup(ip("::ffff:127.2.0.9")), None);
    }

    #[test]
    fn ipv6_overrides_and_edge_prefix_lengths() {
        let geo = Geo::new(
            [
                (net("2001:db8::/32"), cc("NL")),
                (net("2001:db8:1::1/128"), cc("BE")),
                (net("0.0.0.0/0"), cc("AQ")),
                (net("192.0.2.7/32"), cc("FR")),
            ],
            None,
        );
        assert_eq!(geo.lookup(ip("2001:db8:1::1")), Some(cc("BE")));
        assert_eq!(geo.lookup(ip("2001:db8:1::2")), Some(cc("NL")));
        assert_eq!(geo.lookup(ip("2001:db9::1")), None);
        assert_eq!(geo.lookup(ip("192.0.2.7")), Some(cc("FR")));
        assert_eq!(geo.lookup(ip("192.0.2.8")), Some(cc("AQ")));
    }

    #[test]
    fn host_bits_in_an_override_are_ignored() {
        let geo = Geo::new([(net("10.20.1.2/16"), cc("US"))], None);
        assert_eq!(geo.lookup(ip("10.20.200.1")), Some(cc("US")));
    }

    #[test]
    fn a_missing_database_is_an_open_error_naming_the_path() {
        let missing = Path::new("/nonexistent/georelay-test.mmdb");
        match MaxMindDb::open(missing) {
            Err(err @ GeoError::Open { .. }) => {
                assert!(err.to_string().contains("/nonexistent/georelay-test.mmdb"));
            }
            Ok(db) => panic!("opened {db:?}"),
        }
    }

    #[test]
    fn from_config_uses_overrides_and_fails_on_an_unreadable_database() {
        let overrides_only = GeoipConfig {
            database: None,
            overrides: vec![(net("127.1.0.0/16"), cc("DE"))],
        };
        let geo = Geo::from_config(&overrides_only).unwrap_or_else(|err| panic!("{err}"));
        assert!(!geo.has_database());
        assert_eq!(geo.lookup(ip("127.1.9.9")), Some(cc("DE")));
        let broken = GeoipConfig {
            database: Some(PathBuf::from("/nonexistent/georelay.mmdb")),
            overrides: Vec::new(),
        };
        assert!(matches!(
            Geo::from_config(&broken),
            Err(GeoError::Open { .. })
        ));
    }

    #[test]
    fn ten_thousand_overrides_resolve_by_prefix() {
        let overrides = (0..10_000u32).map(|i| {
            let base = Ipv4Addr::from(0x0a00_0000 | (i << 8));
            (
                IpNet::V4(Ipv4Net::new(base, 24).unwrap_or_default()),
                cc("DE"),
            )
        });
        let geo = Geo::new(
            overrides.chain([(
                IpNet::V6(Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).unwrap_or_default()),
                cc("NL"),
            )]),
            None,
        );
        assert_eq!(geo.lookup(ip("10.0.5.1")), Some(cc("DE")));
        assert_eq!(geo.lookup(ip("::1")), Some(cc("NL")));
        assert_eq!(geo.lookup(ip("11.0.0.1")), None);
    }
}
