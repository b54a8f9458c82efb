//! The fleet configuration (`regions.toml`): its typed model ([`Fleet`] and
//! the types it holds), loading with positions, and validation.
//!
//! Validation happens once, in [`Fleet::parse`]: it reports every problem in
//! the file at once ([`ConfigErrors`]), each with `file:line:column` and its
//! TOML path, and otherwise returns a [`Fleet`] whose references are all
//! resolved (every node's region exists, every link joins two known nodes,
//! every app's regions exist). Later code sees only valid values.
//!
//! The reference for every key is `docs/CONFIG.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::ids::{AppId, CountryCode, NodeId, RegionId};

mod countries;
mod diagnostic;
mod jwt_key;
mod parse;
mod policy_version;
mod pushed;
mod secret;
#[cfg(test)]
mod tests;

/// A fleet for unit tests across modules: eu-fra-1 (region eu) linked to
/// uk-lon-1 (uk); acme allowed in the EU only (clients from RU denied),
/// globex anywhere but the UK (its secret from an environment variable).
#[cfg(test)]
pub(crate) const TEST_FLEET: &str = r#"
[regions.eu]
name = "European Union"
countries = ["DE", "FR", "NL"]

[regions.uk]
countries = ["GB"]

[nodes.eu-fra-1]
region = "eu"
listen = "127.10.0.1:4433"
admin = "127.10.0.1:9090"

[nodes.uk-lon-1]
region = "uk"
listen = "127.40.0.1:4433"
admin = "127.40.0.1:9090"

[[links]]
between = ["eu-fra-1", "uk-lon-1"]
rtt_ms = 12

[apps.acme]
secret = "dev-secret"
allow_regions = ["eu"]
client_countries = { deny = ["RU"] }

[apps.globex]
secret_env = "GLOBEX_SECRET"
deny_regions = ["uk"]
"#;

pub use countries::is_assigned_country;
pub use diagnostic::{ConfigErrors, Diagnostic};
pub use jwt_key::{JwtKeyAlgorithm, JwtPublicKey};
pub use policy_version::{
    BadPolicyVersion, CanonicalApp, CanonicalNode, CanonicalPolicy, PolicyVersion, RuleKind,
};
pub use pushed::{
    MAX_PUSHED_CONFIG_BYTES, PushedConfigError, REQUEST_BODY_NAME, apply_pushed_config,
};
pub use secret::{AppSecretError, Secret, SecretError, SecretSource};

/// A validated fleet: regions, nodes, links, apps and runtime settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    /// The file this fleet was loaded from (for messages).
    pub path: PathBuf,
    /// IP geolocation: database and CIDR overrides.
    pub geoip: GeoipConfig,
    /// Regions by id.
    pub regions: BTreeMap<RegionId, Region>,
    /// Relay nodes by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Mesh links, in file order.
    pub links: Vec<Link>,
    /// Customer apps by id.
    pub apps: BTreeMap<AppId, App>,
    /// TLS material; all `None` means "generate a development CA in memory".
    pub tls: TlsConfig,
    /// Operational metadata settings.
    pub metadata: MetadataConfig,
    /// Resource limits.
    pub limits: Limits,
    /// Admin API authentication.
    pub admin: AdminConfig,
    /// Things that are valid but probably not intended (e.g. a region with
    /// no nodes). Printed by `georelay check`.
    pub warnings: Vec<String>,
}

/// `[geoip]`: where client addresses are geolocated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeoipConfig {
    /// A MaxMind DB file (MaxMind/DB-IP `country.iso_code` or ip-location-db
    /// `country_code` schema), resolved relative to the config file.
    pub database: Option<PathBuf>,
    /// `[geoip.overrides]`: CIDR → country, checked before the database
    /// (longest prefix wins). In file order; every network has its host bits
    /// clear.
    pub overrides: Vec<(ipnet::IpNet, CountryCode)>,
}

/// `[regions.<id>]`: a named set of countries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// The region's id (the table key).
    pub id: RegionId,
    /// A human name; defaults to the id.
    pub name: String,
    /// ISO 3166-1 alpha-2 codes; a country belongs to at most one region.
    pub countries: BTreeSet<CountryCode>,
}

/// `[nodes.<id>]`: one relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's id (the table key): a DNS label, as it goes into certificates.
    pub id: NodeId,
    /// The region the node is in (exists in [`Fleet::regions`]).
    pub region: RegionId,
    /// QUIC address for clients and peer nodes.
    pub listen: SocketAddr,
    /// HTTP admin address (`/metrics`, `/healthz`, `/readyz`, `/status`).
    pub admin: SocketAddr,
    /// TLS WebSocket fallback address for browsers (docs/PROTOCOL.md §12);
    /// none: no fallback on this node.
    pub websocket: Option<SocketAddr>,
    /// This node's certificate (PEM), overriding `[tls] dir`.
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM), overriding `[tls] dir`.
    pub key: Option<PathBuf>,
}

/// `[[links]]`: a mesh link between two distinct nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// One end (`between[0]`).
    pub a: NodeId,
    /// The other end (`between[1]`).
    pub b: NodeId,
    /// The link's cost for cheapest-path selection, at least 1.
    pub rtt_ms: u32,
}

/// `[apps.<id>]`: a customer app and its geofence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    /// The app's id (the table key).
    pub id: AppId,
    /// Where its token key comes from (resolved at `serve` time).
    pub secret: SecretSource,
    /// `jwt_public_key_file`: the key that verifies its `ES256`/`EdDSA` JWTs,
    /// read when the config loads (`None`: only `gr1` and `HS256` tokens).
    pub jwt_public_key: Option<JwtPublicKey>,
    /// Which regions its media and control metadata may touch.
    pub regions: RegionPolicy,
    /// Which client countries may connect.
    pub client_countries: ClientCountryRule,
    /// What to do with a client whose country is unknown.
    pub unknown_client_country: UnknownCountry,
    /// How long its operational metadata is kept: 1..=30 days.
    pub metadata_retention_days: u16,
}

impl App {
    /// Resolves the app's token key; the error names the app, the field and
    /// the variable or file.
    pub fn resolve_secret(&self) -> Result<Secret, AppSecretError> {
        self.secret.resolve().map_err(|source| AppSecretError {
            app: self.id.clone(),
            source,
        })
    }
}

/// An app's region policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionPolicy {
    /// `allow_regions`: only these regions (never empty).
    Allow(BTreeSet<RegionId>),
    /// `deny_regions`: every configured region except these (never all).
    Deny(BTreeSet<RegionId>),
}

impl RegionPolicy {
    /// Whether the policy lets media touch `region`.
    pub fn allows(&self, region: &RegionId) -> bool {
        match self {
            RegionPolicy::Allow(allowed) => allowed.contains(region),
            RegionPolicy::Deny(denied) => !denied.contains(region),
        }
    }
}

/// `client_countries`: which client countries may connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCountryRule {
    /// No rule (the key is absent).
    Any,
    /// `{ allow = [...] }`: only these countries (never empty).
    Allow(BTreeSet<CountryCode>),
    /// `{ deny = [...] }`: every country except these.
    Deny(BTreeSet<CountryCode>),
}

impl ClientCountryRule {
    /// Whether a client located in `country` may connect. Clients of unknown
    /// location are governed by [`UnknownCountry`] instead.
    pub fn allows(&self, country: CountryCode) -> bool {
        match self {
            ClientCountryRule::Any => true,
            ClientCountryRule::Allow(allowed) => allowed.contains(&country),
            ClientCountryRule::Deny(denied) => !denied.contains(&country),
        }
    }
}

/// `unknown_client_country`: what to do when a client cannot be located.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownCountry {
    /// Admit (the default).
    Allow,
    /// Refuse with `GEOFENCE_DENIED`.
    Deny,
}

/// `[tls]`: production TLS material. When every path is `None`, `serve`
/// generates a development CA in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA certificate (PEM) that signs every node certificate.
    pub ca: Option<PathBuf>,
    /// The CA private key (PEM), only needed to issue certificates.
    pub ca_key: Option<PathBuf>,
    /// Directory holding `<node>.pem` and `<node>.key` for each node.
    pub dir: Option<PathBuf>,
    /// Validity of the node certificates that `serve`'s dev CA and
    /// `georelay certs` issue: 1..=398 days (default 90).
    pub node_cert_days: u32,
    /// Validity of the CA certificate they make: 1..=3650 days (default 3650).
    pub ca_cert_days: u32,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca: None,
            ca_key: None,
            dir: None,
            node_cert_days: 90,
            ca_cert_days: MAX_CA_CERT_DAYS,
        }
    }
}

/// `[admin]`: authentication of the nodes' admin HTTP API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the bearer token comes from; `None`: no token (mutating
    /// endpoints are then served on loopback admin addresses only).
    pub token: Option<AdminTokenSource>,
    /// Whether `GET` endpoints need the token too (default false).
    pub protect_reads: bool,
}

/// Where the admin bearer token comes from: `token_env` or `token_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminTokenSource {
    /// `token_env = "VAR"`: the value of an environment variable.
    Env(String),
    /// `token_file = "path"`: a file's content (one trailing newline
    /// ignored), resolved relative to the config file.
    File(PathBuf),
}

/// `[metadata]`: operational metadata collection and retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataConfig {
    /// Whether metadata is recorded at all (default true).
    pub enabled: bool,
    /// Store directory (default `<config dir>/data/metadata`).
    pub dir: PathBuf,
    /// How often buffered events reach the store: 10..=60000 ms (default 1000).
    pub flush_interval_ms: u64,
    /// How often call-quality samples are taken, seconds (default 10).
    pub quality_interval_secs: u64,
    /// How often each node records its traffic per app and peer, seconds
    /// (default 60); 0 turns traffic records off.
    pub traffic_interval_secs: u64,
    /// How often expired metadata is deleted, seconds (default 3600).
    pub sweep_interval_secs: u64,
    /// Capacity of the bounded event channel (default 65536).
    pub channel_capacity: usize,
    /// How client IP addresses are minimised before storage (default truncate).
    pub ip_mode: IpMode,
    /// How long stored IP addresses are kept: 1..=30 days, at most 7 with
    /// `ip_mode = "full"` (default 7).
    pub ip_retention_days: u16,
    /// Fleet-wide metadata retention and the default for apps: 1..=30 (default 30).
    pub retention_days: u16,
    /// Optional PostgreSQL sink: the fleet store, and the settings every
    /// PostgreSQL store uses.
    pub postgres: Option<PostgresConfig>,
    /// `[metadata.regions.<id>]`: a PostgreSQL store per region. A node of
    /// such a region writes only there, never to the fleet store.
    pub regions: BTreeMap<RegionId, RegionStore>,
    /// Lock payload buffers in memory so media never reaches swap (default false).
    pub mlock: bool,
}

/// How client IP addresses are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpMode {
    /// IPv4 truncated to /24, IPv6 to /48 (the default).
    Truncate,
    /// The full address (requires `ip_retention_days <= 7`).
    Full,
    /// No address at all.
    Drop,
}

impl IpMode {
    /// The config spelling: `"truncate"`, `"full"` or `"drop"`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpMode::Truncate => "truncate",
            IpMode::Full => "full",
            IpMode::Drop => "drop",
        }
    }
}

/// `[metadata.postgres]`: ship metadata to PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Name of the environment variable holding the connection string.
    pub dsn_env: String,
    /// Events buffered while the database is unreachable (default 100000).
    pub buffer_events: usize,
    /// Keep the local SQLite store too (default true).
    pub local_store: bool,
}

/// `[metadata.regions.<id>]`: where one region's metadata is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionStore {
    /// Name of the environment variable holding the region's connection
    /// string.
    pub dsn_env: String,
}

impl MetadataConfig {
    /// The environment variable naming the PostgreSQL store of `region`'s
    /// nodes: the region's own store if configured, else the fleet store.
    pub fn store_env_for(&self, region: &RegionId) -> Option<&str> {
        match self.regions.get(region) {
            Some(store) => Some(&store.dsn_env),
            None => self.postgres.as_ref().map(|pg| pg.dsn_env.as_str()),
        }
    }

    /// Events buffered per PostgreSQL store while it is unreachable.
    pub fn postgres_buffer_events(&self) -> usize {
        self.postgres
            .as_ref()
            .map_or(DEFAULT_POSTGRES_BUFFER_EVENTS, |pg| pg.buffer_events)
    }

    /// Whether the local SQLite store is kept (`[metadata.postgres]
    /// local_store`, default true).
    pub fn local_store(&self) -> bool {
        self.postgres.as_ref().is_none_or(|pg| pg.local_store)
    }

    /// Whether any PostgreSQL store is configured.
    pub fn has_postgres(&self) -> bool {
        self.postgres.is_some() || !self.regions.is_empty()
    }
}

/// The default of `[metadata.postgres] buffer_events`.
pub const DEFAULT_POSTGRES_BUFFER_EVENTS: usize = 100_000;

/// `[limits]`: resource limits, all optional. Every resource a peer can make
/// a node hold is bounded by one of these (docs/CONFIG.md lists the reason
/// for each default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent client sessions per node (default 10000).
    pub max_sessions: usize,
    /// Tracks one session may publish (default 32).
    pub max_tracks_per_session: usize,
    /// Bytes of media datagrams waiting to be sent on one mesh link; when
    /// full the oldest is dropped and counted (default 4 MiB).
    pub mesh_datagram_send_buffer_bytes: usize,
    /// Largest control or data message, bytes (default 65536).
    pub max_message_bytes: usize,
    /// How long a draining node waits for sessions to move, ms (default 5000).
    pub drain_timeout_ms: u64,
    /// QUIC endpoints sharing the listen port with `SO_REUSEPORT`, each
    /// with its own UDP socket and driver (default 1: one endpoint, no
    /// `SO_REUSEPORT`).
    pub quic_endpoints: usize,

    // ---- QUIC transport of client connections ----
    /// Bytes a client may have unread on one stream (default 256 KiB).
    pub stream_receive_window_bytes: u32,
    /// Bytes a client may have unread on all its streams (default 1 MiB).
    pub connection_receive_window_bytes: u32,
    /// Bytes the node keeps unacknowledged towards one client (default 1 MiB).
    pub send_window_bytes: u32,
    /// Bidirectional streams a client may open (default 2: the control
    /// stream, plus the CONNECT stream of a WebTransport session).
    pub max_bidi_streams: u32,
    /// Unidirectional streams a client may have open (default 4: its message
    /// stream, plus HTTP/3's control and QPACK streams under WebTransport).
    pub max_uni_streams: u32,
    /// Received datagram bytes waiting to be read (default 256 KiB).
    pub datagram_receive_buffer_bytes: usize,
    /// Datagram bytes queued towards one client; the oldest is dropped when
    /// full (default 256 KiB).
    pub datagram_send_buffer_bytes: usize,
    /// A silent client connection is closed after this, ms (default 10000).
    pub idle_timeout_ms: u64,
    /// The node PINGs a client after this much silence, ms (default 1000).
    pub keep_alive_ms: u64,

    // ---- the accept loop ----
    /// Handshakes not yet accepted or refused that the endpoint holds
    /// (quinn `max_incoming`, default 1024).
    pub max_incoming: usize,
    /// Bytes buffered for one such handshake (quinn
    /// `incoming_buffer_size`, default 65536).
    pub incoming_buffer_size: u64,
    /// Bytes buffered for all of them (quinn `incoming_buffer_size_total`,
    /// default 8 MiB).
    pub incoming_buffer_size_total: u64,
    /// Connections past the handshake still waiting for `HELLO` (default 1024).
    pub max_pending_hello: usize,
    /// How long a client connection may take from its first packet being
    /// accepted to its `HELLO`, handshake included, ms (default 5000).
    pub hello_timeout_ms: u64,
    /// Connections (handshaking or open) from one source address: one IPv4
    /// address or one IPv6 /64 (default 32).
    pub max_connections_per_address: usize,
    /// Connections (handshaking or open) in total (default 12000).
    pub max_connections: usize,
    /// Above this many handshakes from unvalidated addresses in progress,
    /// new ones get a stateless Retry first (default 64).
    pub retry_threshold: usize,
    /// Always answer an unvalidated Initial with a Retry (default false).
    pub retry_always: bool,
    /// How long a Retry token is accepted, ms (default 5000).
    pub retry_token_lifetime_ms: u64,

    // ---- sessions and channels ----
    /// Subscribers one channel may have on one node (default 1000).
    pub max_subscribers_per_channel: usize,
    /// Channels one app may have open on one node (default 10000).
    pub max_channels_per_app: usize,
    /// Largest media payload per datagram the node advertises and accepts,
    /// bytes; the path's QUIC datagram size can lower it (default 1400).
    pub max_datagram_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            max_tracks_per_session: 32,
            mesh_datagram_send_buffer_bytes: 4 << 20,
            max_message_bytes: 65_536,
            drain_timeout_ms: 5000,
            quic_endpoints: 1,
            stream_receive_window_bytes: 256 << 10,
            connection_receive_window_bytes: 1 << 20,
            send_window_bytes: 1 << 20,
            max_bidi_streams: 2,
            max_uni_streams: 4,
            datagram_receive_buffer_bytes: 256 << 10,
            datagram_send_buffer_bytes: 256 << 10,
            idle_timeout_ms: 10_000,
            keep_alive_ms: 1000,
            max_incoming: 1024,
            incoming_buffer_size: 64 << 10,
            incoming_buffer_size_total: 8 << 20,
            max_pending_hello: 1024,
            hello_timeout_ms: 5000,
            max_connections_per_address: 32,
            max_connections: 12_000,
            retry_threshold: 64,
            retry_always: false,
            retry_token_lifetime_ms: 5000,
            max_subscribers_per_channel: 1000,
            max_channels_per_app: 10_000,
            max_datagram_payload_bytes: 1400,
        }
    }
}

impl MetadataConfig {
    /// The defaults, with the store under `<config_dir>/data/metadata`.
    pub fn default_for(config_dir: &Path) -> Self {
        Self {
            enabled: true,
            dir: config_dir.join("data").join("metadata"),
            flush_interval_ms: 1000,
            quality_interval_secs: 10,
            traffic_interval_secs: 60,
            sweep_interval_secs: 3600,
            channel_capacity: 65_536,
            ip_mode: IpMode::Truncate,
            ip_retention_days: 7,
            retention_days: 30,
            postgres: None,
            regions: BTreeMap::new(),
            mlock: false,
        }
    }
}

/// The longest validity of a node certificate, in days (the CA/Browser
/// Forum's limit for TLS server certificates).
pub const MAX_NODE_CERT_DAYS: u32 = 398;

/// The longest validity of the fleet CA certificate, in days (10 years).
pub const MAX_CA_CERT_DAYS: u32 = 3650;

/// The longest metadata retention the contract allows, in days.
pub const MAX_RETENTION_DAYS: u16 = 30;

/// The longest retention of full client IP addresses, in days.
pub const MAX_FULL_IP_RETENTION_DAYS: u16 = 7;

impl Fleet {
    /// Reads and validates a config file. A read error becomes a diagnostic
    /// at 1:1.
    pub fn load(path: &Path) -> Result<Fleet, ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => Fleet::parse(&text, path),
            Err(err) => Err(ConfigErrors(vec![Diagnostic {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                toml_path: String::new(),
                message: format!("cannot read config: {err}"),
            }])),
        }
    }

    /// Validates config text. `path` names the file in messages, and relative
    /// paths inside the file are resolved against its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Fleet, ConfigErrors> {
        parse::parse_fleet(text, path)
    }

    /// The directory relative paths are resolved against.
    pub fn config_dir(&self) -> &Path {
        config_dir_of(&self.path)
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// An app by id.
    pub fn app(&self, id: &str) -> Option<&App> {
        self.apps.get(id)
    }

    /// A region by id.
    pub fn region(&self, id: &str) -> Option<&Region> {
        self.regions.get(id)
    }

    /// The region a country belongs to, if any.
    pub fn region_of_country(&self, country: CountryCode) -> Option<&RegionId> {
        self.regions
            .values()
            .find(|region| region.countries.contains(&country))
            .map(|region| &region.id)
    }

    /// The nodes of a region, in id order.
    pub fn nodes_in_region(&self, region: &RegionId) -> impl Iterator<Item = &Node> {
        let region = region.clone();
        self.nodes
            .values()
            .filter(move |node| node.region == region)
    }

    /// The configured regions the app may use (a deny list resolved to its
    /// complement over the configured regions).
    pub fn allowed_regions(&self, app: &App) -> BTreeSet<RegionId> {
        self.regions
            .keys()
            .filter(|region| app.regions.allows(region))
            .cloned()
            .collect()
    }

    /// Whether `node` exists and is in a region the app allows.
    pub fn node_allowed_for(&self, app: &App, node: &NodeId) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|node| app.regions.allows(&node.region))
    }

    /// The certificate and key paths of a node: its own `cert`/`key`, or
    /// `<tls.dir>/<node>.pem` and `<tls.dir>/<node>.key`; `None` when neither
    /// is configured (development CA).
    pub fn node_cert_paths(&self, id: &NodeId) -> Option<(PathBuf, PathBuf)> {
        let node = self.nodes.get(id)?;
        match (&node.cert, &node.key, &self.tls.dir) {
            (Some(cert), Some(key), _) => Some((cert.clone(), key.clone())),
            (_, _, Some(dir)) => {
                Some((dir.join(format!("{id}.pem")), dir.join(format!("{id}.key"))))
            }
            _ => None,
        }
    }

    /// The human summary `georelay check` prints on success.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_summary(&mut out);
        out
    }

    fn write_summary(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "{}: ok", self.path.display())?;
        writeln!(out, "policy version: {}", self.policy_version())?;
        writeln!(out, "regions ({}):", self.regions.len())?;
        for region in self.regions.values() {
            let countries: Vec<&str> = region.countries.iter().map(CountryCode::as_str).collect();
            let nodes: Vec<&str> = self
                .nodes_in_region(&region.id)
                .map(|n| n.id.as_str())
                .collect();
            writeln!(
                out,
                "  {} ({}): countries [{}]; nodes [{}]",
                region.id,
                region.name,
                countries.join(", "),
                nodes.join(", ")
            )?;
        }
        writeln!(out, "nodes ({}):", self.nodes.len())?;
        for node in self.nodes.values() {
            writeln!(
                out,
                "  {} in {}: listen {}, admin {}",
                node.id, node.region, node.listen, node.admin
            )?;
        }
        writeln!(out, "links ({}):", self.links.len())?;
        for link in &self.links {
            writeln!(out, "  {} <-> {}: {} ms", link.a, link.b, link.rtt_ms)?;
        }
        writeln!(out, "apps ({}):", self.apps.len())?;
        for app in self.apps.values() {
            let allowed: Vec<String> = self
                .allowed_regions(app)
                .iter()
                .map(ToString::to_string)
                .collect();
            let policy = match &app.regions {
                RegionPolicy::Allow(_) => "allow_regions",
                RegionPolicy::Deny(_) => "deny_regions",
            };
            let clients = match &app.client_countries {
                ClientCountryRule::Any => "any country".to_owned(),
                ClientCountryRule::Allow(set) => format!("only {}", join_countries(set)),
                ClientCountryRule::Deny(set) => format!("all but {}", join_countries(set)),
            };
            let unknown = match app.unknown_client_country {
                UnknownCountry::Allow => "allowed",
                UnknownCountry::Deny => "denied",
            };
            writeln!(
                out,
                "  {}: regions [{}] (by {policy}); clients: {clients}, unknown country {unknown}; \
                 metadata kept {} days; secret: {}{}",
                app.id,
                allowed.join(", "),
                app.metadata_retention_days,
                describe_secret(&app.secret),
                app.jwt_public_key
                    .as_ref()
                    .map(|key| format!(
                        "; JWT key: {} ({})",
                        key.algorithm.jose_name(),
                        key.path.display()
                    ))
                    .unwrap_or_default()
            )?;
        }
        let geoip = match &self.geoip.database {
            Some(path) => path.display().to_string(),
            None => "no database".to_owned(),
        };
        writeln!(
            out,
            "geoip: {geoip}, {} overrides",
            self.geoip.overrides.len()
        )?;
        for (network, country) in &self.geoip.overrides {
            writeln!(out, "  {network} -> {country}")?;
        }
        let tls = if self.tls.ca.is_some() {
            "from files"
        } else {
            "development CA generated in memory"
        };
        writeln!(out, "tls: {tls}")?;
        let metadata = if self.metadata.enabled {
            format!(
                "{} (kept {} days; client IPs: {}, kept {} days)",
                self.metadata.dir.display(),
                self.metadata.retention_days,
                self.metadata.ip_mode.as_str(),
                self.metadata.ip_retention_days
            )
        } else {
            "disabled".to_owned()
        };
        writeln!(out, "metadata: {metadata}")?;
        for warning in &self.warnings {
            writeln!(out, "warning: {warning}")?;
        }
        Ok(())
    }
}

/// Where a secret comes from, without the secret.
fn describe_secret(secret: &SecretSource) -> String {
    match secret {
        SecretSource::Env(var) => format!("from environment variable {var}"),
        SecretSource::Inline(_) => "inline (development only)".to_owned(),
        SecretSource::File(path) => format!("from file {}", path.display()),
    }
}

fn join_countries(set: &BTreeSet<CountryCode>) -> String {
    let codes: Vec<&str> = set.iter().map(CountryCode::as_str).collect();
    codes.join(", ")
}

/// The directory of a config file (`.` for a bare file name).
fn config_dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}
