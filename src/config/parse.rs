//! Parsing `regions.toml` with positions and validating it into a [`Fleet`].
//!
//! The text is parsed into toml's spanned document tree (`DeTable`), then
//! walked section by section. Every problem is collected as a [`Diagnostic`]
//! at the offending key or value, so one run reports all of them; serde's
//! `deny_unknown_fields` would stop at the first. A TOML syntax error is the
//! only early stop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{
    AdminConfig, AdminTokenSource, App, ClientCountryRule, ConfigErrors,
    DEFAULT_POSTGRES_BUFFER_EVENTS, Diagnostic, Fleet, GeoipConfig, IpMode, JwtPublicKey, Limits,
    Link, MAX_FULL_IP_RETENTION_DAYS, MAX_RETENTION_DAYS, MetadataConfig, Node, PostgresConfig,
    Region, RegionPolicy, RegionStore, SecretSource, TlsConfig, UnknownCountry, config_dir_of,
    is_assigned_country,
};
use crate::ids::{AppId, CountryCode, NodeId, RegionId};

type Value<'i> = Spanned<DeValue<'i>>;

const ROOT_KEYS: &[&str] = &[
    "geoip", "regions", "nodes", "links", "apps", "tls", "metadata", "limits", "admin",
];
const ADMIN_KEYS: &[&str] = &["token_env", "token_file", "protect_reads"];
const GEOIP_KEYS: &[&str] = &["database", "overrides"];
const REGION_KEYS: &[&str] = &["name", "countries"];
const NODE_KEYS: &[&str] = &["region", "listen", "admin", "websocket", "cert", "key"];
const LINK_KEYS: &[&str] = &["between", "rtt_ms"];
const SECRET_KEYS: [&str; 3] = ["secret_env", "secret", "secret_file"];
const APP_KEYS: &[&str] = &[
    "secret_env",
    "secret",
    "secret_file",
    "jwt_public_key_file",
    "allow_regions",
    "deny_regions",
    "client_countries",
    "unknown_client_country",
    "metadata_retention_days",
];
const CLIENT_COUNTRY_KEYS: &[&str] = &["allow", "deny"];
const TLS_KEYS: &[&str] = &["ca", "ca_key", "dir", "node_cert_days", "ca_cert_days"];
const METADATA_KEYS: &[&str] = &[
    "enabled",
    "dir",
    "flush_interval_ms",
    "quality_interval_secs",
    "traffic_interval_secs",
    "sweep_interval_secs",
    "channel_capacity",
    "ip_mode",
    "ip_retention_days",
    "retention_days",
    "postgres",
    "regions",
    "mlock",
];
const REGION_STORE_KEYS: &[&str] = &["dsn_env"];
const POSTGRES_KEYS: &[&str] = &["dsn_env", "buffer_events", "local_store"];
const LIMIT_KEYS: &[&str] = &[
    "max_sessions",
    "max_tracks_per_session",
    "mesh_datagram_send_buffer_bytes",
    "max_message_bytes",
    "drain_timeout_ms",
    "quic_endpoints",
    "stream_receive_window_bytes",
    "connection_receive_window_bytes",
    "send_window_bytes",
    "max_bidi_streams",
    "max_uni_streams",
    "datagram_receive_buffer_bytes",
    "datagram_send_buffer_bytes",
    "idle_timeout_ms",
    "keep_alive_ms",
    "max_incoming",
    "incoming_buffer_size",
    "incoming_buffer_size_total",
    "max_pending_hello",
    "hello_timeout_ms",
    "max_connections_per_address",
    "max_connections",
    "retry_threshold",
    "retry_always",
    "retry_token_lifetime_ms",
    "max_subscribers_per_channel",
    "max_channels_per_app",
    "max_datagram_payload_bytes",
];
/// Keys that were once accepted and are no longer, by their full path, and
/// what took their place: a config that still sets one is refused with this
/// explanation instead of a bare "unknown key".
const REMOVED_KEYS: &[(&str, &str)] = &[
    (
        "limits.subscriber_queue_packets",
        "no longer exists: media goes straight into each subscriber connection's \
         QUIC datagram send buffer, so the per-subscriber bound is now \
         `datagram_send_buffer_bytes` (bytes, default 262144); remove this key",
    ),
    (
        "limits.mesh_queue_packets",
        "no longer exists: media goes straight into each mesh link's QUIC \
         datagram send buffer, so the per-link bound is now \
         `mesh_datagram_send_buffer_bytes` (bytes, default 4194304); remove this key",
    ),
];

/// Parses and validates config text.
pub(super) fn parse_fleet(text: &str, path: &Path) -> Result<Fleet, ConfigErrors> {
    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(err) => {
            let offset = err.span().map_or(0, |span| span.start);
            let message = format!("TOML syntax error: {}", err.message().trim());
            return Err(ConfigErrors(vec![Diagnostic::at_offset(
                path, text, offset, "", message,
            )]));
        }
    };
    let mut checker = Checker {
        text,
        file: path,
        dir: config_dir_of(path).to_path_buf(),
        diagnostics: Vec::new(),
        warnings: Vec::new(),
        declared_regions: Some(BTreeSet::new()),
        declared_nodes: Some(BTreeSet::new()),
    };
    let root = TableView::new(document.get_ref(), String::new(), 0..0);
    checker.unknown_keys(&root, ROOT_KEYS);
    let fleet = checker.fleet(&root);
    if checker.diagnostics.is_empty() {
        Ok(Fleet {
            path: path.to_path_buf(),
            warnings: checker.warnings,
            ..fleet
        })
    } else {
        let mut diagnostics = checker.diagnostics;
        diagnostics.sort_by_key(|d| (d.line, d.column));
        Err(ConfigErrors(diagnostics))
    }
}

/// A table's entries in file order, with the table's TOML path and the span
/// to blame for a missing key.
struct TableView<'a, 'i> {
    path: String,
    anchor: Range<usize>,
    entries: Vec<(&'a str, Range<usize>, &'a Value<'i>)>,
}

impl<'a, 'i> TableView<'a, 'i> {
    fn new(table: &'a DeTable<'i>, path: String, anchor: Range<usize>) -> Self {
        let mut entries: Vec<_> = table
            .iter()
            .map(|(key, value)| (key.get_ref().as_ref(), key.span(), value))
            .collect();
        entries.sort_by_key(|(_, span, _)| span.start);
        Self {
            path,
            anchor,
            entries,
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.entries
            .iter()
            .find(|(name, _, _)| *name == key)
            .map(|(_, _, value)| *value)
    }

    fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.entries
            .iter()
            .find(|(name, _, _)| *name == key)
            .map(|(_, span, _)| span.clone())
    }

    fn child(&self, key: &str) -> String {
        child_path(&self.path, key)
    }
}

/// Joins a TOML path and a key, quoting keys that are not bare.
fn child_path(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let key = if bare {
        key.to_owned()
    } else {
        format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// A validated scalar with where it came from.
struct At<T> {
    value: T,
    span: Range<usize>,
    path: String,
}

/// Walks the document and collects diagnostics.
struct Checker<'t> {
    text: &'t str,
    file: &'t Path,
    dir: PathBuf,
    diagnostics: Vec<Diagnostic>,
    warnings: Vec<String>,
    /// Every `[regions.*]` key, valid or not, so that a reference to a region
    /// with its own errors is not also reported as unknown; `None` when the
    /// `regions` section itself is broken (then references are not judged).
    declared_regions: Option<BTreeSet<String>>,
    /// Every `[nodes.*]` key, valid or not; `None` when `nodes` is broken.
    declared_nodes: Option<BTreeSet<String>>,
}

/// What a name in the file refers to.
#[derive(Clone, Copy)]
enum Reference {
    Region,
    Node,
}

impl Checker<'_> {
    /// Checks a reference to a region or node. Reports undeclared names (with
    /// a suggestion); returns whether the name is declared and valid.
    fn reference(&mut self, item: &At<&str>, kind: Reference, valid: bool) -> bool {
        let (declared, noun) = match kind {
            Reference::Region => (&self.declared_regions, "region"),
            Reference::Node => (&self.declared_nodes, "node"),
        };
        let Some(declared) = declared else {
            return false;
        };
        if declared.contains(item.value) {
            return valid;
        }
        let hint = suggestion(item.value, declared.iter().map(String::as_str));
        let message = format!("unknown {noun} \"{}\"{hint}", item.value);
        self.report(&item.span, &item.path, message);
        false
    }

    fn report(&mut self, span: &Range<usize>, path: &str, message: impl Into<String>) {
        let diagnostic = Diagnostic::at_offset(self.file, self.text, span.start, path, message);
        self.diagnostics.push(diagnostic);
    }

    fn resolve_path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    fn fleet(&mut self, root: &TableView<'_, '_>) -> Fleet {
        let mut metadata = self.metadata(root);
        let regions = self.regions(root);
        let nodes = self.nodes(root, &regions);
        metadata.regions = self.metadata_regions(root, &regions, &nodes, &metadata);
        let links = self.links(root, &nodes);
        let apps = self.apps(root, &regions, metadata.retention_days);
        let geoip = self.geoip(root);
        let tls = self.tls(root, &nodes);
        let limits = self.limits(root);
        let admin = self.admin(root);
        self.warn_about_unused(&regions, &nodes, &apps);
        Fleet {
            path: self.file.to_path_buf(),
            geoip,
            regions,
            nodes,
            links,
            apps,
            tls,
            metadata,
            limits,
            admin,
            warnings: Vec::new(),
        }
    }

    // ---- generic accessors -------------------------------------------------

    /// Reports every key of `table` not in `allowed`, suggesting the closest.
    fn unknown_keys(&mut self, table: &TableView<'_, '_>, allowed: &[&str]) {
        for (key, span, _) in &table.entries {
            if !allowed.contains(key) {
                let path = table.child(key);
                if let Some((_, replaced)) = REMOVED_KEYS.iter().find(|(p, _)| *p == path) {
                    self.report(span, &path, format!("key \"{key}\" {replaced}"));
                    continue;
                }
                let message = match closest(key, allowed.iter().copied()) {
                    Some(suggestion) => {
                        format!("unknown key \"{key}\" (did you mean \"{suggestion}\"?)")
                    }
                    None => format!(
                        "unknown key \"{key}\"; expected one of: {}",
                        allowed.join(", ")
                    ),
                };
                self.report(span, &table.child(key), message);
            }
        }
    }

    /// The sub-table at `key`, if present and a table (reporting otherwise).
    fn sub_table<'a, 'i>(
        &mut self,
        parent: &TableView<'a, 'i>,
        key: &str,
        allowed: Option<&[&str]>,
    ) -> Option<TableView<'a, 'i>> {
        let value = parent.get(key)?;
        let anchor = parent.key_span(key).unwrap_or_else(|| value.span());
        self.as_table(value, parent.child(key), anchor, allowed)
    }

    fn as_table<'a, 'i>(
        &mut self,
        value: &'a Value<'i>,
        path: String,
        anchor: Range<usize>,
        allowed: Option<&[&str]>,
    ) -> Option<TableView<'a, 'i>> {
        match value.get_ref() {
            DeValue::Table(table) => {
                let view = TableView::new(table, path, anchor);
                if let Some(allowed) = allowed {
                    self.unknown_keys(&view, allowed);
                }
                Some(view)
            }
            other => {
                let message = format!("expected a table, found {}", other.type_str());
                self.report(&value.span(), &path, message);
                None
            }
        }
    }

    fn string<'a>(&mut self, table: &TableView<'a, '_>, key: &str) -> Option<At<&'a str>> {
        let value = table.get(key)?;
        let path = table.child(key);
        match value.get_ref() {
            DeValue::String(text) => Some(At {
                value: text.as_ref(),
                span: value.span(),
                path,
            }),
            other => {
                let message = format!("expected a string, found {}", other.type_str());
                self.report(&value.span(), &path, message);
                None
            }
        }
    }

    fn required_string<'a>(&mut self, table: &TableView<'a, '_>, key: &str) -> Option<At<&'a str>> {
        if table.get(key).is_none() {
            self.report(
                &table.anchor,
                &table.path,
                format!("missing required key \"{key}\""),
            );
            return None;
        }
        self.string(table, key)
    }

    fn boolean(&mut self, table: &TableView<'_, '_>, key: &str) -> Option<bool> {
        let value = table.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(flag) => Some(*flag),
            other => {
                let message = format!("expected true or false, found {}", other.type_str());
                self.report(&value.span(), &table.child(key), message);
                None
            }
        }
    }

    /// An integer within `min..=max`.
    fn integer(
        &mut self,
        table: &TableView<'_, '_>,
        key: &str,
        min: u64,
        max: u64,
    ) -> Option<At<u64>> {
        let value = table.get(key)?;
        let path = table.child(key);
        let span = value.span();
        let DeValue::Integer(integer) = value.get_ref() else {
            let message = format!("expected an integer, found {}", value.get_ref().type_str());
            self.report(&span, &path, message);
            return None;
        };
        let parsed = i128::from_str_radix(integer.as_str(), integer.radix()).ok();
        match parsed.and_then(|n| u64::try_from(n).ok()) {
            Some(n) if (min..=max).contains(&n) => Some(At {
                value: n,
                span,
                path,
            }),
            _ => {
                let message = format!("must be between {min} and {max}, found {integer}");
                self.report(&span, &path, message);
                None
            }
        }
    }

    /// An array of strings (each with its span and path).
    fn string_array<'a>(
        &mut self,
        table: &TableView<'a, '_>,
        key: &str,
    ) -> Option<Vec<At<&'a str>>> {
        let value = table.get(key)?;
        let path = table.child(key);
        let DeValue::Array(items) = value.get_ref() else {
            let message = format!(
                "expected an array of strings, found {}",
                value.get_ref().type_str()
            );
            self.report(&value.span(), &path, message);
            return None;
        };
        let mut strings = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{index}]");
            match item.get_ref() {
                DeValue::String(text) => strings.push(At {
                    value: text.as_ref(),
                    span: item.span(),
                    path: item_path,
                }),
                other => {
                    let message = format!("expected a string, found {}", other.type_str());
                    self.report(&item.span(), &item_path, message);
                }
            }
        }
        Some(strings)
    }

    /// An assigned ISO 3166-1 alpha-2 code.
    fn country(&mut self, text: &At<&str>) -> Option<CountryCode> {
        let code = CountryCode::parse(text.value).filter(|_| text.value.len() == 2);
        match code {
            Some(code) if text.value == code.as_str() && is_assigned_country(code) => Some(code),
            Some(code) if text.value == code.as_str() => {
                let hint = if text.value == "UK" {
                    " (the United Kingdom is \"GB\")"
                } else {
                    ""
                };
                let message = format!(
                    "\"{}\" is not an assigned ISO 3166-1 alpha-2 country code{hint}",
                    text.value
                );
                self.report(&text.span, &text.path, message);
                None
            }
            Some(code) => {
                let message = format!(
                    "country codes are uppercase: write \"{code}\", not \"{}\"",
                    text.value
                );
                self.report(&text.span, &text.path, message);
                None
            }
            None => {
                let message = format!(
                    "\"{}\" is not a country code: expected two ASCII letters (ISO 3166-1 alpha-2, e.g. \"DE\")",
                    text.value
                );
                self.report(&text.span, &text.path, message);
                None
            }
        }
    }

    /// A list of distinct countries.
    fn country_set(&mut self, items: &[At<&str>]) -> BTreeSet<CountryCode> {
        let mut set = BTreeSet::new();
        for item in items {
            if let Some(code) = self.country(item)
                && !set.insert(code)
            {
                self.report(
                    &item.span,
                    &item.path,
                    format!("country \"{code}\" is listed twice"),
                );
            }
        }
        set
    }

    /// A socket address with a non-zero port.
    fn socket_addr(&mut self, text: &At<&str>) -> Option<SocketAddr> {
        match text.value.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                self.report(
                    &text.span,
                    &text.path,
                    "port 0 is not allowed: peers and clients need a fixed port",
                );
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                let message = format!(
                    "\"{}\" is not an IP:port address (e.g. \"127.10.0.1:4433\" or \"[::1]:4433\")",
                    text.value
                );
                self.report(&text.span, &text.path, message);
                None
            }
        }
    }

    // ---- [regions] ---------------------------------------------------------

    fn regions(&mut self, root: &TableView<'_, '_>) -> BTreeMap<RegionId, Region> {
        let mut regions = BTreeMap::new();
        let Some(table) = self.sub_table(root, "regions", None) else {
            if root.get("regions").is_none() {
                self.report(
                    &(0..0),
                    "regions",
                    "no regions: add at least one [regions.<id>] table",
                );
            } else {
                self.declared_regions = None;
            }
            return regions;
        };
        self.declared_regions = Some(
            table
                .entries
                .iter()
                .map(|(key, _, _)| (*key).to_owned())
                .collect(),
        );
        let mut owner_of_country: HashMap<CountryCode, RegionId> = HashMap::new();
        for (key, key_span, value) in &table.entries {
            let path = table.child(key);
            let id_ok = self.check_id(key, key_span, &path, IdKind::Region);
            let Some(region) = self.as_table(value, path, key_span.clone(), Some(REGION_KEYS))
            else {
                continue;
            };
            let name = self
                .string(&region, "name")
                .map(|name| name.value.to_owned());
            let items = self.string_array(&region, "countries").unwrap_or_default();
            let countries = self.country_set(&items);
            let id = RegionId::new(*key);
            for item in &items {
                let Some(code) = CountryCode::parse(item.value) else {
                    continue;
                };
                if !countries.contains(&code) {
                    continue;
                }
                match owner_of_country.get(&code) {
                    Some(owner) if owner != &id => {
                        let message = format!(
                            "country \"{code}\" is already in region \"{owner}\"; a country belongs to at most one region"
                        );
                        self.report(&item.span, &item.path, message);
                    }
                    _ => {
                        owner_of_country.insert(code, id.clone());
                    }
                }
            }
            if id_ok {
                let name = name.unwrap_or_else(|| id.to_string());
                regions.insert(
                    id.clone(),
                    Region {
                        id,
                        name,
                        countries,
                    },
                );
            }
        }
        if table.entries.is_empty() {
            self.report(
                &table.anchor,
                "regions",
                "no regions: add at least one [regions.<id>] table",
            );
        }
        regions
    }

    fn check_id(&mut self, id: &str, span: &Range<usize>, path: &str, kind: IdKind) -> bool {
        let problem = match kind {
            IdKind::Node => node_id_problem(id),
            IdKind::Region | IdKind::App => name_id_problem(id),
        };
        match problem {
            Some(problem) => {
                let message = format!("invalid {} id \"{id}\": {problem}", kind.noun());
                self.report(span, path, message);
                false
            }
            None => true,
        }
    }

    // ---- [nodes] -----------------------------------------------------------

    fn nodes(
        &mut self,
        root: &TableView<'_, '_>,
        regions: &BTreeMap<RegionId, Region>,
    ) -> BTreeMap<NodeId, Node> {
        let mut nodes = BTreeMap::new();
        let Some(table) = self.sub_table(root, "nodes", None) else {
            if root.get("nodes").is_none() {
                self.report(
                    &(0..0),
                    "nodes",
                    "no nodes: add at least one [nodes.<id>] table",
                );
            } else {
                self.declared_nodes = None;
            }
            return nodes;
        };
        if table.entries.is_empty() {
            self.report(
                &table.anchor,
                "nodes",
                "no nodes: add at least one [nodes.<id>] table",
            );
        }
        self.declared_nodes = Some(
            table
                .entries
                .iter()
                .map(|(key, _, _)| (*key).to_owned())
                .collect(),
        );
        // Every bound address, with the TOML path that binds it first.
        let mut bound: HashMap<SocketAddr, String> = HashMap::new();
        for (key, key_span, value) in &table.entries {
            let path = table.child(key);
            let id_ok = self.check_id(key, key_span, &path, IdKind::Node);
            let Some(node) = self.as_table(value, path, key_span.clone(), Some(NODE_KEYS)) else {
                continue;
            };
            let region = self.required_string(&node, "region").and_then(|region| {
                let valid = regions.contains_key(region.value);
                self.reference(&region, Reference::Region, valid)
                    .then(|| RegionId::new(region.value))
            });
            let mut addresses = [None, None];
            for (slot, field) in addresses.iter_mut().zip(["listen", "admin"]) {
                let Some(text) = self.required_string(&node, field) else {
                    continue;
                };
                let Some(addr) = self.socket_addr(&text) else {
                    continue;
                };
                match bound.get(&addr) {
                    Some(first) => {
                        let message = format!("address {addr} is already used by {first}");
                        self.report(&text.span, &text.path, message);
                    }
                    None => {
                        bound.insert(addr, text.path.clone());
                    }
                }
                *slot = Some(addr);
            }
            let websocket = self.string(&node, "websocket").and_then(|text| {
                let addr = self.socket_addr(&text)?;
                if let Some(first) = bound.get(&addr) {
                    let message = format!("address {addr} is already used by {first}");
                    self.report(&text.span, &text.path, message);
                } else {
                    bound.insert(addr, text.path.clone());
                }
                Some(addr)
            });
            let cert = self.string(&node, "cert");
            let key_file = self.string(&node, "key");
            match (&cert, &key_file) {
                (Some(cert), None) => {
                    self.report(&cert.span, &cert.path, "\"cert\" needs \"key\" too")
                }
                (None, Some(key_file)) => {
                    self.report(&key_file.span, &key_file.path, "\"key\" needs \"cert\" too")
                }
                _ => {}
            }
            if let (true, Some(region), [Some(listen), Some(admin)]) = (id_ok, region, addresses) {
                let id = NodeId::new(*key);
                let node = Node {
                    id: id.clone(),
                    region,
                    listen,
                    admin,
                    websocket,
                    cert: cert.map(|cert| self.resolve_path(cert.value)),
                    key: key_file.map(|key_file| self.resolve_path(key_file.value)),
                };
                nodes.insert(id, node);
            }
        }
        nodes
    }

    // ---- [[links]] ---------------------------------------------------------

    fn links(&mut self, root: &TableView<'_, '_>, nodes: &BTreeMap<NodeId, Node>) -> Vec<Link> {
        let mut links = Vec::new();
        let Some(value) = root.get("links") else {
            return links;
        };
        let DeValue::Array(items) = value.get_ref() else {
            let message = format!(
                "expected an array of tables ([[links]]), found {}",
                value.get_ref().type_str()
            );
            self.report(&value.span(), "links", message);
            return links;
        };
        let links_anchor = root.key_span("links").unwrap_or_else(|| value.span());
        let mut seen: HashMap<(NodeId, NodeId), String> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            let path = format!("links[{index}]");
            let anchor = if item.span().is_empty() {
                links_anchor.clone()
            } else {
                item.span()
            };
            let Some(link) = self.as_table(item, path.clone(), anchor, Some(LINK_KEYS)) else {
                continue;
            };
            let ends = self.link_ends(&link, nodes);
            let rtt = match link.get("rtt_ms") {
                None => {
                    self.report(&link.anchor, &path, "missing required key \"rtt_ms\"");
                    None
                }
                Some(_) => self.integer(&link, "rtt_ms", 1, u64::from(u32::MAX)),
            };
            let Some((a, b, between)) = ends else {
                continue;
            };
            let pair = if a <= b {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            if let Some(first) = seen.get(&pair) {
                let message =
                    format!("duplicate link between \"{a}\" and \"{b}\" (first in {first})");
                self.report(&between, &link.child("between"), message);
                continue;
            }
            seen.insert(pair, path);
            if let Some(rtt) = rtt.and_then(|rtt| u32::try_from(rtt.value).ok()) {
                links.push(Link { a, b, rtt_ms: rtt });
            }
        }
        links
    }

    /// `between = ["a", "b"]`: two distinct known nodes, and the span of the list.
    fn link_ends(
        &mut self,
        link: &TableView<'_, '_>,
        nodes: &BTreeMap<NodeId, Node>,
    ) -> Option<(NodeId, NodeId, Range<usize>)> {
        let Some(value) = link.get("between") else {
            self.report(&link.anchor, &link.path, "missing required key \"between\"");
            return None;
        };
        let ends = self.string_array(link, "between")?;
        let [a, b] = ends.as_slice() else {
            let message = format!("a link joins exactly two nodes, found {}", ends.len());
            self.report(&value.span(), &link.child("between"), message);
            return None;
        };
        let mut known = true;
        for end in [a, b] {
            let valid = nodes.contains_key(end.value);
            known &= self.reference(end, Reference::Node, valid);
        }
        if a.value == b.value {
            self.report(
                &b.span,
                &b.path,
                format!("a link from \"{}\" to itself", a.value),
            );
            return None;
        }
        known.then(|| (NodeId::new(a.value), NodeId::new(b.value), value.span()))
    }

    // ---- [apps] ------------------------------------------------------------

    fn apps(
        &mut self,
        root: &TableView<'_, '_>,
        regions: &BTreeMap<RegionId, Region>,
        default_retention: u16,
    ) -> BTreeMap<AppId, App> {
        let mut apps = BTreeMap::new();
        let Some(table) = self.sub_table(root, "apps", None) else {
            return apps;
        };
        for (key, key_span, value) in &table.entries {
            let path = table.child(key);
            let id_ok = self.check_id(key, key_span, &path, IdKind::App);
            let Some(app) = self.as_table(value, path, key_span.clone(), Some(APP_KEYS)) else {
                continue;
            };
            let secret = self.secret_source(&app);
            let jwt_public_key = self.jwt_public_key(&app);
            let policy = self.region_policy(&app, regions);
            let client_countries = self.client_countries(&app);
            let unknown_client_country = match self.string(&app, "unknown_client_country") {
                None => Some(UnknownCountry::Allow),
                Some(At { value: "allow", .. }) => Some(UnknownCountry::Allow),
                Some(At { value: "deny", .. }) => Some(UnknownCountry::Deny),
                Some(other) => {
                    let message =
                        format!("expected \"allow\" or \"deny\", found \"{}\"", other.value);
                    self.report(&other.span, &other.path, message);
                    None
                }
            };
            let retention = self
                .integer(
                    &app,
                    "metadata_retention_days",
                    1,
                    u64::from(MAX_RETENTION_DAYS),
                )
                .and_then(|days| u16::try_from(days.value).ok())
                .unwrap_or(default_retention);
            if let (
                true,
                Some(secret),
                Some(jwt_public_key),
                Some(regions),
                Some(client_countries),
                Some(unknown),
            ) = (
                id_ok,
                secret,
                jwt_public_key,
                policy,
                client_countries,
                unknown_client_country,
            ) {
                let id = AppId::new(*key);
                let app = App {
                    id: id.clone(),
                    secret,
                    jwt_public_key,
                    regions,
                    client_countries,
                    unknown_client_country: unknown,
                    metadata_retention_days: retention,
                };
                apps.insert(id, app);
            }
        }
        apps
    }

    /// `jwt_public_key_file`: `Some(None)` when absent, `None` when bad
    /// (reported at the value).
    fn jwt_public_key(&mut self, app: &TableView<'_, '_>) -> Option<Option<JwtPublicKey>> {
        if app.get("jwt_public_key_file").is_none() {
            return Some(None);
        }
        let file = self.string(app, "jwt_public_key_file")?;
        match JwtPublicKey::load(&self.resolve_path(file.value)) {
            Ok(key) => Some(Some(key)),
            Err(message) => {
                self.report(&file.span, &file.path, message);
                None
            }
        }
    }

    fn secret_source(&mut self, app: &TableView<'_, '_>) -> Option<SecretSource> {
        let present: Vec<&str> = SECRET_KEYS
            .into_iter()
            .filter(|key| app.get(key).is_some())
            .collect();
        match present.as_slice() {
            [] => {
                let message = "no secret: set one of secret_env (production), secret_file, or secret (development)";
                self.report(&app.anchor, &app.path, message);
                None
            }
            [key] => {
                let text = self.string(app, key)?;
                match *key {
                    "secret_env" if !is_env_var_name(text.value) => {
                        let message =
                            format!("\"{}\" is not an environment variable name", text.value);
                        self.report(&text.span, &text.path, message);
                        None
                    }
                    "secret_env" => Some(SecretSource::Env(text.value.to_owned())),
                    _ if text.value.is_empty() => {
                        self.report(&text.span, &text.path, "must not be empty");
                        None
                    }
                    "secret" => Some(SecretSource::Inline(text.value.to_owned())),
                    _ => Some(SecretSource::File(self.resolve_path(text.value))),
                }
            }
            [_, extra @ ..] => {
                for key in extra {
                    let span = app.key_span(key).unwrap_or_else(|| app.anchor.clone());
                    let message = format!(
                        "only one of secret_env, secret, secret_file may be set, found {}",
                        present.join(" and ")
                    );
                    self.report(&span, &app.child(key), message);
                }
                None
            }
        }
    }

    fn region_policy(
        &mut self,
        app: &TableView<'_, '_>,
        regions: &BTreeMap<RegionId, Region>,
    ) -> Option<RegionPolicy> {
        let allow = self.string_array(app, "allow_regions");
        let deny = self.string_array(app, "deny_regions");
        match (allow, deny) {
            (Some(allow), Some(deny)) => {
                self.region_set(&allow, regions);
                self.region_set(&deny, regions);
                let span = app
                    .key_span("deny_regions")
                    .unwrap_or_else(|| app.anchor.clone());
                self.report(
                    &span,
                    &app.child("deny_regions"),
                    "set allow_regions or deny_regions, not both",
                );
                None
            }
            (None, None) => {
                let message = "no region policy: set allow_regions = [...] or deny_regions = [...]";
                self.report(&app.anchor, &app.path, message);
                None
            }
            (Some(allow), None) => {
                let set = self.region_set(&allow, regions)?;
                if set.is_empty() {
                    let span = app
                        .key_span("allow_regions")
                        .unwrap_or_else(|| app.anchor.clone());
                    self.report(
                        &span,
                        &app.child("allow_regions"),
                        "an empty allow list allows nothing; list at least one region",
                    );
                    return None;
                }
                Some(RegionPolicy::Allow(set))
            }
            (None, Some(deny)) => {
                let set = self.region_set(&deny, regions)?;
                if !regions.is_empty() && regions.keys().all(|region| set.contains(region)) {
                    let span = app
                        .key_span("deny_regions")
                        .unwrap_or_else(|| app.anchor.clone());
                    self.report(
                        &span,
                        &app.child("deny_regions"),
                        "denies every configured region; the app could not run anywhere",
                    );
                    return None;
                }
                Some(RegionPolicy::Deny(set))
            }
        }
    }

    /// Known, distinct region ids; `None` if any entry is wrong.
    fn region_set(
        &mut self,
        items: &[At<&str>],
        regions: &BTreeMap<RegionId, Region>,
    ) -> Option<BTreeSet<RegionId>> {
        let mut set = BTreeSet::new();
        let mut ok = true;
        for item in items {
            let valid = regions.contains_key(item.value);
            if !self.reference(item, Reference::Region, valid) {
                ok = false;
            } else if !set.insert(RegionId::new(item.value)) {
                self.report(
                    &item.span,
                    &item.path,
                    format!("region \"{}\" is listed twice", item.value),
                );
                ok = false;
            }
        }
        ok.then_some(set)
    }

    fn client_countries(&mut self, app: &TableView<'_, '_>) -> Option<ClientCountryRule> {
        let Some(rule) = self.sub_table(app, "client_countries", Some(CLIENT_COUNTRY_KEYS)) else {
            return app
                .get("client_countries")
                .is_none()
                .then_some(ClientCountryRule::Any);
        };
        let allow = self.string_array(&rule, "allow");
        let deny = self.string_array(&rule, "deny");
        match (allow, deny) {
            (Some(_), Some(_)) => {
                let span = rule.key_span("deny").unwrap_or_else(|| rule.anchor.clone());
                self.report(&span, &rule.child("deny"), "set allow or deny, not both");
                None
            }
            (None, None) => {
                self.report(
                    &rule.anchor,
                    &rule.path,
                    "expected { allow = [...] } or { deny = [...] }",
                );
                None
            }
            (Some(allow), None) => {
                let errors_before = self.diagnostics.len();
                let set = self.country_set(&allow);
                if allow.is_empty() {
                    let span = rule
                        .key_span("allow")
                        .unwrap_or_else(|| rule.anchor.clone());
                    self.report(
                        &span,
                        &rule.child("allow"),
                        "an empty allow list refuses every client; list at least one country",
                    );
                }
                (self.diagnostics.len() == errors_before).then_some(ClientCountryRule::Allow(set))
            }
            (None, Some(deny)) => {
                let errors_before = self.diagnostics.len();
                let set = self.country_set(&deny);
                (self.diagnostics.len() == errors_before).then_some(ClientCountryRule::Deny(set))
            }
        }
    }

    // ---- [geoip] -----------------------------------------------------------

    fn geoip(&mut self, root: &TableView<'_, '_>) -> GeoipConfig {
        let mut geoip = GeoipConfig::default();
        let Some(table) = self.sub_table(root, "geoip", Some(GEOIP_KEYS)) else {
            return geoip;
        };
        if let Some(database) = self.string(&table, "database") {
            let path = self.resolve_path(database.value);
            match maxminddb::Reader::open_readfile(&path) {
                Ok(_) => geoip.database = Some(path),
                Err(err) => {
                    let message = format!("cannot open GeoIP database {}: {err}", path.display());
                    self.report(&database.span, &database.path, message);
                }
            }
        }
        let Some(overrides) = self.sub_table(&table, "overrides", None) else {
            return geoip;
        };
        let mut seen: HashMap<ipnet::IpNet, String> = HashMap::new();
        for (key, key_span, value) in &overrides.entries {
            let path = overrides.child(key);
            let network = self.cidr(key, key_span, &path);
            let country = match value.get_ref() {
                DeValue::String(text) => self.country(&At {
                    value: text.as_ref(),
                    span: value.span(),
                    path: path.clone(),
                }),
                other => {
                    let message =
                        format!("expected a country code string, found {}", other.type_str());
                    self.report(&value.span(), &path, message);
                    None
                }
            };
            let Some(network) = network else { continue };
            if let Some(first) = seen.get(&network) {
                let message = format!("network {network} is already mapped by {first}");
                self.report(key_span, &path, message);
                continue;
            }
            seen.insert(network, path);
            if let Some(country) = country {
                geoip.overrides.push((network, country));
            }
        }
        geoip
    }

    fn cidr(&mut self, text: &str, span: &Range<usize>, path: &str) -> Option<ipnet::IpNet> {
        match text.parse::<ipnet::IpNet>() {
            Ok(network) if network != network.trunc() => {
                let message = format!(
                    "CIDR \"{text}\" has host bits set: did you mean \"{}\"?",
                    network.trunc()
                );
                self.report(span, path, message);
                None
            }
            Ok(network) => Some(network),
            Err(_) if text.parse::<std::net::IpAddr>().is_ok() => {
                let bits = if text.contains(':') { 128 } else { 32 };
                let message = format!(
                    "\"{text}\" has no prefix length: write \"{text}/{bits}\" for one address"
                );
                self.report(span, path, message);
                None
            }
            Err(_) => {
                let message = format!(
                    "\"{text}\" is not a CIDR network (e.g. \"10.20.0.0/16\" or \"2001:db8::/32\")"
                );
                self.report(span, path, message);
                None
            }
        }
    }

    // ---- [tls] -------------------------------------------------------------

    fn tls(&mut self, root: &TableView<'_, '_>, nodes: &BTreeMap<NodeId, Node>) -> TlsConfig {
        let mut tls = TlsConfig::default();
        let table = self.sub_table(root, "tls", Some(TLS_KEYS));
        if let Some(table) = &table {
            let ca = self.string(table, "ca");
            if let Some(ca) = &ca {
                let path = self.resolve_path(ca.value);
                if !path.is_file() {
                    let message = format!(
                        "CA certificate {} does not exist (create it with `georelay certs --out DIR`)",
                        path.display()
                    );
                    self.report(&ca.span, &ca.path, message);
                }
                tls.ca = Some(path);
            }
            tls.ca_key = self
                .string(table, "ca_key")
                .map(|key| self.resolve_path(key.value));
            tls.dir = self
                .string(table, "dir")
                .map(|dir| self.resolve_path(dir.value));
            let max_node = u64::from(super::MAX_NODE_CERT_DAYS);
            if let Some(days) = self.integer(table, "node_cert_days", 1, max_node) {
                tls.node_cert_days = u32::try_from(days.value).unwrap_or(u32::MAX);
            }
            let max_ca = u64::from(super::MAX_CA_CERT_DAYS);
            if let Some(days) = self.integer(table, "ca_cert_days", 1, max_ca) {
                tls.ca_cert_days = u32::try_from(days.value).unwrap_or(u32::MAX);
            }
        }
        let nodes_with_files: Vec<&Node> =
            nodes.values().filter(|node| node.cert.is_some()).collect();
        if tls.ca.is_none() && (tls.dir.is_some() || !nodes_with_files.is_empty()) {
            let (span, path) = match &table {
                Some(table) => (table.anchor.clone(), "tls".to_owned()),
                None => (0..0, "tls".to_owned()),
            };
            self.report(&span, &path, "node certificates are configured but [tls] ca is not: set ca to the CA that signed them");
        }
        if tls.ca.is_some() && tls.dir.is_none() {
            for node in nodes.values().filter(|node| node.cert.is_none()) {
                let span = table.as_ref().map_or(0..0, |table| table.anchor.clone());
                let message = format!(
                    "node \"{}\" has no certificate: set [tls] dir, or cert and key on the node",
                    node.id
                );
                self.report(&span, "tls", message);
            }
        }
        tls
    }

    // ---- [metadata] --------------------------------------------------------

    fn metadata(&mut self, root: &TableView<'_, '_>) -> MetadataConfig {
        let mut metadata = MetadataConfig::default_for(&self.dir);
        let Some(table) = self.sub_table(root, "metadata", Some(METADATA_KEYS)) else {
            return metadata;
        };
        if let Some(enabled) = self.boolean(&table, "enabled") {
            metadata.enabled = enabled;
        }
        if let Some(dir) = self.string(&table, "dir") {
            metadata.dir = self.resolve_path(dir.value);
        }
        if let Some(ms) = self.integer(&table, "flush_interval_ms", 10, 60_000) {
            metadata.flush_interval_ms = ms.value;
        }
        if let Some(secs) = self.integer(&table, "quality_interval_secs", 1, 3600) {
            metadata.quality_interval_secs = secs.value;
        }
        if let Some(secs) = self.integer(&table, "traffic_interval_secs", 0, 3600) {
            metadata.traffic_interval_secs = secs.value;
        }
        if let Some(secs) = self.integer(&table, "sweep_interval_secs", 1, 86_400) {
            metadata.sweep_interval_secs = secs.value;
        }
        if let Some(capacity) = self.integer(&table, "channel_capacity", 1, 1 << 24) {
            metadata.channel_capacity = usize::try_from(capacity.value).unwrap_or(usize::MAX);
        }
        match self.string(&table, "ip_mode") {
            None => {}
            Some(At {
                value: "truncate", ..
            }) => metadata.ip_mode = IpMode::Truncate,
            Some(At { value: "full", .. }) => metadata.ip_mode = IpMode::Full,
            Some(At { value: "drop", .. }) => metadata.ip_mode = IpMode::Drop,
            Some(other) => {
                let message = format!(
                    "expected \"truncate\", \"full\" or \"drop\", found \"{}\"",
                    other.value
                );
                self.report(&other.span, &other.path, message);
            }
        }
        let max = u64::from(MAX_RETENTION_DAYS);
        if let Some(days) = self.integer(&table, "retention_days", 1, max) {
            metadata.retention_days = u16::try_from(days.value).unwrap_or(MAX_RETENTION_DAYS);
        }
        if let Some(days) = self.integer(&table, "ip_retention_days", 1, max) {
            metadata.ip_retention_days = u16::try_from(days.value).unwrap_or(MAX_RETENTION_DAYS);
            if metadata.ip_mode == IpMode::Full
                && metadata.ip_retention_days > MAX_FULL_IP_RETENTION_DAYS
            {
                let message = format!(
                    "ip_mode = \"full\" keeps IP addresses at most {MAX_FULL_IP_RETENTION_DAYS} days, found {}",
                    days.value
                );
                self.report(&days.span, &days.path, message);
            }
        }
        if let Some(flag) = self.boolean(&table, "mlock") {
            metadata.mlock = flag;
        }
        if let Some(postgres) = self.sub_table(&table, "postgres", Some(POSTGRES_KEYS)) {
            metadata.postgres = self.postgres(&postgres);
        }
        metadata
    }

    /// `[metadata.regions.<id>]`, read after the regions so that its keys
    /// can be checked against them.
    fn metadata_regions(
        &mut self,
        root: &TableView<'_, '_>,
        regions: &BTreeMap<RegionId, Region>,
        nodes: &BTreeMap<NodeId, Node>,
        metadata: &MetadataConfig,
    ) -> BTreeMap<RegionId, RegionStore> {
        let mut stores = BTreeMap::new();
        let Some(parent) = root
            .get("metadata")
            .and_then(|value| match value.get_ref() {
                DeValue::Table(table) => Some(TableView::new(table, "metadata".into(), 0..0)),
                _ => None,
            })
        else {
            return stores;
        };
        let Some(table) = self.sub_table(&parent, "regions", None) else {
            return stores;
        };
        for (key, key_span, value) in &table.entries {
            let path = table.child(key);
            let reference = At {
                value: *key,
                span: key_span.clone(),
                path: path.clone(),
            };
            let known = self.reference(&reference, Reference::Region, regions.contains_key(*key));
            let Some(store) = self.as_table(value, path, key_span.clone(), Some(REGION_STORE_KEYS))
            else {
                continue;
            };
            let Some(dsn_env) = self.required_string(&store, "dsn_env") else {
                continue;
            };
            if !is_env_var_name(dsn_env.value) {
                let message = format!("\"{}\" is not an environment variable name", dsn_env.value);
                self.report(&dsn_env.span, &dsn_env.path, message);
                continue;
            }
            if known {
                stores.insert(
                    RegionId::new(*key),
                    RegionStore {
                        dsn_env: dsn_env.value.to_owned(),
                    },
                );
            }
        }
        if !stores.is_empty() && metadata.postgres.is_none() {
            let regions_with_nodes: BTreeSet<&RegionId> =
                nodes.values().map(|node| &node.region).collect();
            for region in regions_with_nodes {
                if !stores.contains_key(region) {
                    self.warnings.push(format!(
                        "region \"{region}\" has nodes but no metadata store: its metadata stays on each node (add [metadata.regions.{region}] or [metadata.postgres])"
                    ));
                }
            }
        }
        stores
    }

    fn postgres(&mut self, table: &TableView<'_, '_>) -> Option<PostgresConfig> {
        let dsn_env = self.required_string(table, "dsn_env");
        if let Some(dsn_env) = &dsn_env
            && !is_env_var_name(dsn_env.value)
        {
            let message = format!("\"{}\" is not an environment variable name", dsn_env.value);
            self.report(&dsn_env.span, &dsn_env.path, message);
        }
        let buffer_events = self
            .integer(table, "buffer_events", 1, 10_000_000)
            .map_or(DEFAULT_POSTGRES_BUFFER_EVENTS as u64, |n| n.value);
        let local_store = self.boolean(table, "local_store").unwrap_or(true);
        Some(PostgresConfig {
            dsn_env: dsn_env?.value.to_owned(),
            buffer_events: usize::try_from(buffer_events).unwrap_or(usize::MAX),
            local_store,
        })
    }

    // ---- [admin] -----------------------------------------------------------

    fn admin(&mut self, root: &TableView<'_, '_>) -> AdminConfig {
        let mut admin = AdminConfig::default();
        let Some(table) = self.sub_table(root, "admin", Some(ADMIN_KEYS)) else {
            return admin;
        };
        let env = self.string(&table, "token_env");
        let file = self.string(&table, "token_file");
        admin.token = match (env, file) {
            (Some(_), Some(file)) => {
                let message = "set token_env or token_file, not both";
                self.report(&file.span, &file.path, message);
                None
            }
            (Some(env), None) if !is_env_var_name(env.value) => {
                let message = format!("\"{}\" is not an environment variable name", env.value);
                self.report(&env.span, &env.path, message);
                None
            }
            (Some(env), None) => Some(AdminTokenSource::Env(env.value.to_owned())),
            (None, Some(file)) => Some(AdminTokenSource::File(self.resolve_path(file.value))),
            (None, None) => None,
        };
        if let Some(flag) = self.boolean(&table, "protect_reads") {
            admin.protect_reads = flag;
            if flag && table.get("token_env").is_none() && table.get("token_file").is_none() {
                let span = table
                    .key_span("protect_reads")
                    .unwrap_or(table.anchor.clone());
                let message = "protect_reads = true needs a token: set token_env or token_file";
                self.report(&span, &table.child("protect_reads"), message);
            }
        }
        admin
    }

    // ---- [limits] ----------------------------------------------------------

    fn limits(&mut self, root: &TableView<'_, '_>) -> Limits {
        let mut limits = Limits::default();
        let Some(table) = self.sub_table(root, "limits", Some(LIMIT_KEYS)) else {
            return limits;
        };
        self.limit(
            &table,
            "max_sessions",
            1,
            10_000_000,
            &mut limits.max_sessions,
        );
        self.limit(
            &table,
            "max_tracks_per_session",
            1,
            1024,
            &mut limits.max_tracks_per_session,
        );
        self.limit(
            &table,
            "mesh_datagram_send_buffer_bytes",
            64 << 10,
            64 << 20,
            &mut limits.mesh_datagram_send_buffer_bytes,
        );
        self.limit(
            &table,
            "max_message_bytes",
            1,
            16 << 20,
            &mut limits.max_message_bytes,
        );
        self.limit(
            &table,
            "drain_timeout_ms",
            0,
            600_000,
            &mut limits.drain_timeout_ms,
        );
        self.limit(&table, "quic_endpoints", 1, 16, &mut limits.quic_endpoints);
        self.limit(
            &table,
            "stream_receive_window_bytes",
            16 << 10,
            16 << 20,
            &mut limits.stream_receive_window_bytes,
        );
        self.limit(
            &table,
            "connection_receive_window_bytes",
            16 << 10,
            64 << 20,
            &mut limits.connection_receive_window_bytes,
        );
        self.limit(
            &table,
            "send_window_bytes",
            16 << 10,
            64 << 20,
            &mut limits.send_window_bytes,
        );
        self.limit(
            &table,
            "max_bidi_streams",
            1,
            16,
            &mut limits.max_bidi_streams,
        );
        self.limit(
            &table,
            "max_uni_streams",
            1,
            64,
            &mut limits.max_uni_streams,
        );
        self.limit(
            &table,
            "datagram_receive_buffer_bytes",
            1500,
            16 << 20,
            &mut limits.datagram_receive_buffer_bytes,
        );
        self.limit(
            &table,
            "datagram_send_buffer_bytes",
            1500,
            16 << 20,
            &mut limits.datagram_send_buffer_bytes,
        );
        self.limit(
            &table,
            "idle_timeout_ms",
            1000,
            600_000,
            &mut limits.idle_timeout_ms,
        );
        self.limit(
            &table,
            "keep_alive_ms",
            100,
            300_000,
            &mut limits.keep_alive_ms,
        );
        self.limit(&table, "max_incoming", 1, 1 << 16, &mut limits.max_incoming);
        self.limit(
            &table,
            "incoming_buffer_size",
            1500,
            10 << 20,
            &mut limits.incoming_buffer_size,
        );
        self.limit(
            &table,
            "incoming_buffer_size_total",
            1500,
            1 << 30,
            &mut limits.incoming_buffer_size_total,
        );
        self.limit(
            &table,
            "max_pending_hello",
            1,
            1 << 20,
            &mut limits.max_pending_hello,
        );
        self.limit(
            &table,
            "hello_timeout_ms",
            100,
            60_000,
            &mut limits.hello_timeout_ms,
        );
        self.limit(
            &table,
            "max_connections_per_address",
            1,
            1 << 20,
            &mut limits.max_connections_per_address,
        );
        self.limit(
            &table,
            "max_connections",
            1,
            10_000_000,
            &mut limits.max_connections,
        );
        self.limit(
            &table,
            "retry_threshold",
            0,
            1 << 20,
            &mut limits.retry_threshold,
        );
        self.limit(
            &table,
            "retry_token_lifetime_ms",
            1000,
            60_000,
            &mut limits.retry_token_lifetime_ms,
        );
        self.limit(
            &table,
            "max_subscribers_per_channel",
            1,
            1_000_000,
            &mut limits.max_subscribers_per_channel,
        );
        self.limit(
            &table,
            "max_channels_per_app",
            1,
            10_000_000,
            &mut limits.max_channels_per_app,
        );
        self.limit(
            &table,
            "max_datagram_payload_bytes",
            64,
            65_535,
            &mut limits.max_datagram_payload_bytes,
        );
        if let Some(flag) = self.boolean(&table, "retry_always") {
            limits.retry_always = flag;
        }
        self.limit_relations(&table, &limits);
        limits
    }

    /// Sets `slot` from the integer at `key` when it is within `min..=max`.
    fn limit<T: TryFrom<u64>>(
        &mut self,
        table: &TableView<'_, '_>,
        key: &str,
        min: u64,
        max: u64,
        slot: &mut T,
    ) {
        if let Some(n) = self.integer(table, key, min, max)
            && let Ok(value) = T::try_from(n.value)
        {
            *slot = value;
        }
    }

    /// Limits that only make sense against each other.
    fn limit_relations(&mut self, table: &TableView<'_, '_>, limits: &Limits) {
        let blame = |checker: &mut Self, key: &str, message: String| {
            let span = table.key_span(key).unwrap_or(table.anchor.clone());
            checker.report(&span, &table.child(key), message);
        };
        if limits.connection_receive_window_bytes < limits.stream_receive_window_bytes {
            let message = format!(
                "must be at least stream_receive_window_bytes ({})",
                limits.stream_receive_window_bytes
            );
            blame(self, "connection_receive_window_bytes", message);
        }
        if limits.keep_alive_ms * 2 > limits.idle_timeout_ms {
            let message = format!(
                "must be at most half of idle_timeout_ms ({}), or the connection idles out between keep-alives",
                limits.idle_timeout_ms
            );
            blame(self, "keep_alive_ms", message);
        }
        if limits.incoming_buffer_size_total < limits.incoming_buffer_size {
            let message = format!(
                "must be at least incoming_buffer_size ({})",
                limits.incoming_buffer_size
            );
            blame(self, "incoming_buffer_size_total", message);
        }
        if limits.max_connections_per_address > limits.max_connections {
            let message = format!(
                "must be at most max_connections ({})",
                limits.max_connections
            );
            blame(self, "max_connections_per_address", message);
        }
    }

    // ---- warnings ----------------------------------------------------------

    fn warn_about_unused(
        &mut self,
        regions: &BTreeMap<RegionId, Region>,
        nodes: &BTreeMap<NodeId, Node>,
        apps: &BTreeMap<AppId, App>,
    ) {
        let regions_with_nodes: BTreeSet<&RegionId> =
            nodes.values().map(|node| &node.region).collect();
        for region in regions
            .keys()
            .filter(|region| !regions_with_nodes.contains(region))
        {
            self.warnings
                .push(format!("region \"{region}\" has no nodes"));
        }
        for app in apps.values() {
            let served = regions_with_nodes
                .iter()
                .any(|region| app.regions.allows(region));
            if !served {
                self.warnings.push(format!(
                    "app \"{}\" allows no region that has nodes",
                    app.id
                ));
            }
        }
    }
}

#[derive(Clone, Copy)]
enum IdKind {
    Node,
    Region,
    App,
}

impl IdKind {
    fn noun(self) -> &'static str {
        match self {
            IdKind::Node => "node",
            IdKind::Region => "region",
            IdKind::App => "app",
        }
    }
}

/// Why `id` is not a DNS label (node ids go into TLS certificates).
fn node_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() || id.len() > 63 {
        return Some("must be 1 to 63 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some(
            "use only lowercase letters a-z, digits and '-' (it is a DNS label in certificates)",
        );
    }
    if id.starts_with('-') || id.ends_with('-') {
        return Some("must not start or end with '-'");
    }
    None
}

/// Why `id` is not a valid region or app id.
fn name_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() || id.len() > 63 {
        return Some("must be 1 to 63 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Some("use only lowercase letters a-z, digits, '-' and '_'");
    }
    None
}

/// A portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `" (did you mean \"x\"?)"` when a candidate is close, else `""`.
fn suggestion<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> String {
    closest(word, candidates).map_or_else(String::new, |c| format!(" (did you mean \"{c}\"?)"))
}

/// The closest candidate within a small edit distance of `word`, or one that
/// `word` is a prefix of (`rtt` for `rtt_ms`), if any.
fn closest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .filter_map(|candidate| {
            let distance = edit_distance(word, candidate);
            let extends = word.len() >= 3 && candidate.starts_with(word);
            (distance <= limit || extends).then_some((distance, candidate))
        })
        .min()
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
