//! The policy version: a stable name for the geofence policy a node enforces.
//!
//! [`CanonicalPolicy`] is the part of a [`Fleet`] that decides where an
//! app's media may go: regions (their countries), nodes (id, region, QUIC
//! address), links (ends and cost) and each app's geofence (allow/deny
//! regions, client-country rule, unknown-country rule). Secrets, keys, TLS,
//! GeoIP, metadata settings, limits, admin addresses and human names are
//! not part of it: changing them does not change the version.
//!
//! Its encoding is canonical: maps are sorted by key, sets are sorted, and
//! each link is written with its ends in order and the list sorted, so the
//! file's key and table order never matters. [`PolicyVersion`] is the first
//! 8 bytes of the SHA-256 of that encoding (compact JSON), written as 16
//! lowercase hex characters. The encoding is stored with traffic records
//! (`docs/METADATA.md`), so that an audit can judge a past version and check
//! that the stored policy really hashes to its version.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ClientCountryRule, Fleet, RegionPolicy, UnknownCountry};

/// Version of the canonical encoding; part of what is hashed.
const ENCODING_VERSION: u32 = 1;
/// Bytes of the SHA-256 digest kept in a version.
const VERSION_BYTES: usize = 8;

/// The version of a fleet's geofence policy (16 lowercase hex characters).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyVersion([u8; VERSION_BYTES]);

impl PolicyVersion {
    /// The version of a canonical encoding.
    fn of_encoding(encoding: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, encoding);
        let mut bytes = [0; VERSION_BYTES];
        bytes.copy_from_slice(&digest.as_ref()[..VERSION_BYTES]);
        Self(bytes)
    }
}

impl fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyVersion({self})")
    }
}

/// A string that is not 16 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a policy version (16 lowercase hex characters)")]
pub struct BadPolicyVersion(pub String);

impl FromStr for PolicyVersion {
    type Err = BadPolicyVersion;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadPolicyVersion(text.to_owned());
        let valid = text.len() == 2 * VERSION_BYTES
            && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(bad());
        }
        let mut bytes = [0; VERSION_BYTES];
        for (slot, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *slot = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

impl Serialize for PolicyVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PolicyVersion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The policy-relevant part of a fleet, in canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanonicalPolicy {
    /// The encoding version.
    pub encoding: u32,
    /// Region id → its countries.
    pub regions: BTreeMap<String, BTreeSet<String>>,
    /// Node id → region and QUIC address.
    pub nodes: BTreeMap<String, CanonicalNode>,
    /// Links, each as `[a, b, rtt_ms]` with `a < b`, sorted.
    pub links: BTreeSet<(String, String, u32)>,
    /// App id → its geofence.
    pub apps: BTreeMap<String, CanonicalApp>,
}

/// A node in the canonical policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanonicalNode {
    /// The node's region.
    pub region: String,
    /// The node's QUIC address.
    pub listen: String,
}

/// An app's geofence in the canonical policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanonicalApp {
    /// `allow` (only these regions) or `deny` (all others).
    pub regions_rule: RuleKind,
    /// The regions the rule lists.
    pub regions: BTreeSet<String>,
    /// The client-country rule; `None` for any country.
    pub client_countries: Option<(RuleKind, BTreeSet<String>)>,
    /// Whether clients of unknown country are admitted.
    pub unknown_client_country: RuleKind,
}

/// Whether a list allows or denies what it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Only what is listed (or: admitted).
    Allow,
    /// Everything but what is listed (or: refused).
    Deny,
}

impl CanonicalPolicy {
    /// The canonical policy of a fleet.
    pub fn of_fleet(fleet: &Fleet) -> Self {
        let regions = fleet
            .regions
            .values()
            .map(|region| {
                let countries = region
                    .countries
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect();
                (region.id.to_string(), countries)
            })
            .collect();
        let nodes = fleet
            .nodes
            .values()
            .map(|node| {
                let canonical = CanonicalNode {
                    region: node.region.to_string(),
                    listen: node.listen.to_string(),
                };
                (node.id.to_string(), canonical)
            })
            .collect();
        let links = fleet
            .links
            .iter()
            .map(|link| {
                let (a, b) = if link.a <= link.b {
                    (&link.a, &link.b)
                } else {
                    (&link.b, &link.a)
                };
                (a.to_string(), b.to_string(), link.rtt_ms)
            })
            .collect();
        let apps = fleet
            .apps
            .values()
            .map(|app| {
                let (regions_rule, listed) = match &app.regions {
                    RegionPolicy::Allow(set) => (RuleKind::Allow, set),
                    RegionPolicy::Deny(set) => (RuleKind::Deny, set),
                };
                let countries = |set: &BTreeSet<crate::ids::CountryCode>| {
                    set.iter().map(|c| c.as_str().to_owned()).collect()
                };
                let client_countries = match &app.client_countries {
                    ClientCountryRule::Any => None,
                    ClientCountryRule::Allow(set) => Some((RuleKind::Allow, countries(set))),
                    ClientCountryRule::Deny(set) => Some((RuleKind::Deny, countries(set))),
                };
                let canonical = CanonicalApp {
                    regions_rule,
                    regions: listed.iter().map(ToString::to_string).collect(),
                    client_countries,
                    unknown_client_country: match app.unknown_client_country {
                        UnknownCountry::Allow => RuleKind::Allow,
                        UnknownCountry::Deny => RuleKind::Deny,
                    },
                };
                (app.id.to_string(), canonical)
            })
            .collect();
        Self {
            encoding: ENCODING_VERSION,
            regions,
            nodes,
            links,
            apps,
        }
    }

    /// The canonical encoding: compact JSON with sorted keys and sets.
    pub fn encode(&self) -> String {
        // Every map key is a string and every value serialisable: this
        // cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The version of this policy.
    pub fn version(&self) -> PolicyVersion {
        PolicyVersion::of_encoding(self.encode().as_bytes())
    }

    /// Whether `app` may have media on `node` under this policy; `None` when
    /// the policy does not know the app or the node.
    pub fn node_allowed(&self, app: &str, node: &str) -> Option<bool> {
        let app = self.apps.get(app)?;
        let region = &self.nodes.get(node)?.region;
        Some(app.region_allowed(region))
    }

    /// The regions `app` may use under this policy (a deny list resolved
    /// against the policy's regions); `None` for an unknown app.
    pub fn allowed_regions(&self, app: &str) -> Option<BTreeSet<String>> {
        let app = self.apps.get(app)?;
        Some(
            self.regions
                .keys()
                .filter(|region| app.region_allowed(region))
                .cloned()
                .collect(),
        )
    }
}

impl CanonicalApp {
    /// Whether media of this app may touch `region`.
    pub fn region_allowed(&self, region: &str) -> bool {
        let listed = self.regions.contains(region);
        match self.regions_rule {
            RuleKind::Allow => listed,
            RuleKind::Deny => !listed,
        }
    }
}

impl Fleet {
    /// The version of the geofence policy this fleet configures (see
    /// [`CanonicalPolicy`]).
    pub fn policy_version(&self) -> PolicyVersion {
        self.canonical_policy().version()
    }

    /// The policy-relevant part of this fleet, in canonical form.
    pub fn canonical_policy(&self) -> CanonicalPolicy {
        CanonicalPolicy::of_fleet(self)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    use crate::config::TEST_FLEET as FLEET;

    fn version_of(text: &str) -> PolicyVersion {
        match Fleet::parse(text, Path::new("/srv/regions.toml")) {
            Ok(fleet) => fleet.policy_version(),
            Err(errors) => panic!("invalid test fleet:\n{errors}\n{text}"),
        }
    }

    fn edited(old: &str, new: &str) -> String {
        assert!(FLEET.contains(old), "{old:?} not in the fleet");
        FLEET.replacen(old, new, 1)
    }

    #[test]
    fn the_version_is_16_lowercase_hex_and_parses_back() {
        let version = version_of(FLEET);
        let text = version.to_string();
        assert_eq!(text.len(), 16);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(text.parse::<PolicyVersion>(), Ok(version));
        assert_eq!(
            serde_json::to_string(&version).unwrap(),
            format!("\"{text}\"")
        );
        for bad in [
            "",
            "0123",
            "0123456789ABCDEF",
            "0123456789abcdeg",
            "0123456789abcdef0",
        ] {
            assert!(bad.parse::<PolicyVersion>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn order_secrets_names_and_settings_do_not_change_the_version() {
        let base = version_of(FLEET);
        let reordered = r#"
[apps.globex]
deny_regions = ["uk"]
secret = "another"

[[links]]
rtt_ms = 12
between = ["uk-lon-1", "eu-fra-1"]

[nodes.uk-lon-1]
admin = "127.40.0.9:9191"
listen = "127.40.0.1:4433"
region = "uk"

[nodes.eu-fra-1]
listen = "127.10.0.1:4433"
region = "eu"
admin = "127.10.0.1:9090"

[regions.uk]
name = "Britain"
countries = ["GB"]

[regions.eu]
countries = ["NL", "FR", "DE"]

[apps.acme]
client_countries = { deny = ["RU"] }
allow_regions = ["eu"]
secret_file = "acme.key"
metadata_retention_days = 7

[metadata]
retention_days = 10
flush_interval_ms = 50

[limits]
max_sessions = 5
"#;
        assert_eq!(version_of(reordered), base);
    }

    #[test]
    fn every_policy_change_changes_the_version() {
        let base = version_of(FLEET);
        let changes = [
            edited(r#"countries = ["GB"]"#, r#"countries = ["GB", "IE"]"#),
            edited(
                r#"listen = "127.40.0.1:4433""#,
                r#"listen = "127.40.0.2:4433""#,
            ),
            edited(r#"region = "uk""#, r#"region = "eu""#),
            edited("rtt_ms = 12", "rtt_ms = 13"),
            edited(
                r#"allow_regions = ["eu"]"#,
                r#"allow_regions = ["eu", "uk"]"#,
            ),
            edited(r#"allow_regions = ["eu"]"#, r#"deny_regions = ["uk"]"#),
            edited(r#"{ deny = ["RU"] }"#, r#"{ allow = ["RU"] }"#),
            edited(r#"{ deny = ["RU"] }"#, r#"{ deny = ["RU", "BY"] }"#),
            edited(
                r#"deny_regions = ["uk"]"#,
                "deny_regions = [\"uk\"]\nunknown_client_country = \"deny\"",
            ),
            format!(
                "{FLEET}\n[nodes.eu-ams-1]\nregion = \"eu\"\nlisten = \"127.11.0.1:4433\"\nadmin = \"127.11.0.1:9090\"\n"
            ),
            format!(
                "{FLEET}\n[[links]]\nbetween = [\"eu-fra-1\", \"eu-fra-2\"]\nrtt_ms = 5\n[nodes.eu-fra-2]\nregion = \"eu\"\nlisten = \"127.10.0.2:4433\"\nadmin = \"127.10.0.2:9090\"\n"
            ),
            format!("{FLEET}\n[regions.us]\ncountries = [\"US\"]\n"),
            format!("{FLEET}\n[apps.initech]\nsecret = \"x\"\nallow_regions = [\"uk\"]\n"),
        ];
        let mut seen = BTreeSet::from([base]);
        for changed in &changes {
            let version = version_of(changed);
            assert!(
                seen.insert(version),
                "version {version} repeated for:\n{changed}"
            );
        }
    }

    #[test]
    fn the_canonical_policy_round_trips_and_judges_nodes() {
        let fleet = Fleet::parse(FLEET, Path::new("/srv/regions.toml")).unwrap();
        let policy = fleet.canonical_policy();
        let encoded = policy.encode();
        assert!(!encoded.contains("dev-secret"), "{encoded}");
        assert!(!encoded.contains("GLOBEX_SECRET"), "{encoded}");
        let back: CanonicalPolicy = serde_json::from_str(&encoded).unwrap();
        assert_eq!(back, policy);
        assert_eq!(back.version(), fleet.policy_version());
        assert_eq!(policy.node_allowed("acme", "eu-fra-1"), Some(true));
        assert_eq!(policy.node_allowed("acme", "uk-lon-1"), Some(false));
        assert_eq!(policy.node_allowed("globex", "eu-fra-1"), Some(true));
        assert_eq!(policy.node_allowed("globex", "uk-lon-1"), Some(false));
        assert_eq!(policy.node_allowed("nobody", "eu-fra-1"), None);
        assert_eq!(policy.node_allowed("acme", "mars-1"), None);
        assert_eq!(
            policy.allowed_regions("globex"),
            Some(BTreeSet::from(["eu".to_owned()]))
        );
    }
}
