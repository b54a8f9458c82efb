//! A test fleet over real QUIC on loopback: the example topology (six nodes
//! in four regions) on addresses unique to each test, started in-process,
//! with helpers to mint tokens, connect SDK clients from a given country and
//! read each node's `/status` over HTTP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use georelay::admin::StatusReport;
use georelay::auth::{Claims, Role};
use georelay::client::{Client, ClientError, ClientOptions, Join, Target};
use georelay::clock::{Clock, SharedClock, SystemClock};
use georelay::ids::AppId;
use georelay::relay::policy::Policy;
use georelay::tls::FleetPki;

/// Node ids of the test topology, in the order of their address suffix.
pub const NODES: [&str; 6] = [
    "eu-fra-1", "eu-ams-1", "uk-lon-1", "us-iad-1", "us-sfo-1", "ap-sin-1",
];

/// Countries a client can appear to come from, in the order of their
/// address suffix (100, 101, ...).
pub const COUNTRIES: [&str; 6] = ["NL", "DE", "US", "SG", "GB", "RU"];

/// A `127.a.b` prefix whose node addresses are free right now, so that
/// fleets of tests running in parallel (threads or processes) do not
/// collide.
pub fn free_prefix() -> (u8, u8) {
    use ring::rand::SecureRandom;
    for _ in 0..64 {
        let mut bytes = [0u8; 2];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .expect("randomness");
        let prefix = (100 + bytes[0] % 140, bytes[1]);
        let free = (0..NODES.len()).all(|i| {
            let ip = Ipv4Addr::new(127, prefix.0, prefix.1, 10 + i as u8);
            std::net::UdpSocket::bind((ip, 4433)).is_ok()
                && std::net::TcpListener::bind((ip, 9090)).is_ok()
                && std::net::TcpListener::bind((ip, WEBSOCKET_PORT)).is_ok()
        });
        if free {
            return prefix;
        }
    }
    panic!("no free loopback prefix");
}

/// The configuration of the test fleet. `apps` is extra TOML appended
/// verbatim (app tables); `links` replaces the default links when given.
pub struct FleetSpec {
    /// Extra `[apps.*]` tables.
    pub apps: String,
    /// `[[links]]` tables; the example topology when `None`.
    pub links: Option<String>,
    /// Extra top-level tables (e.g. `[limits]`).
    pub extra: String,
    /// Whether the nodes record metadata (into `metadata/` beside the config).
    pub metadata: bool,
    /// Whether each node serves the WebSocket fallback (on its listen IP,
    /// TCP port [`WEBSOCKET_PORT`]).
    pub websocket: bool,
}

/// The TCP port of the nodes' WebSocket fallback when [`FleetSpec::websocket`].
pub const WEBSOCKET_PORT: u16 = 4443;

/// The example topology's links.
pub const EXAMPLE_LINKS: &str = r#"
[[links]]
between = ["eu-fra-1", "uk-lon-1"]
rtt_ms = 12
[[links]]
between = ["uk-lon-1", "eu-ams-1"]
rtt_ms = 8
[[links]]
between = ["eu-fra-1", "eu-ams-1"]
rtt_ms = 30
[[links]]
between = ["uk-lon-1", "us-iad-1"]
rtt_ms = 70
[[links]]
between = ["us-iad-1", "us-sfo-1"]
rtt_ms = 60
[[links]]
between = ["us-sfo-1", "ap-sin-1"]
rtt_ms = 170
[[links]]
between = ["eu-fra-1", "ap-sin-1"]
rtt_ms = 160
"#;

/// The example apps (same policies as the repo's regions.toml).
pub const EXAMPLE_APPS: &str = r#"
[apps.acme-health]
secret = "acme-test-secret"
allow_regions = ["eu"]
client_countries = { deny = ["RU"] }
unknown_client_country = "allow"

[apps.globex-media]
secret = "globex-test-secret"
deny_regions = ["apac"]

[apps.initech-chat]
secret = "initech-test-secret"
allow_regions = ["eu", "us"]
metadata_retention_days = 7

[apps.umbrella-video]
secret = "umbrella-test-secret"
allow_regions = ["eu", "uk", "us", "apac"]
"#;

impl Default for FleetSpec {
    fn default() -> Self {
        Self {
            apps: EXAMPLE_APPS.to_string(),
            links: None,
            extra: String::new(),
            metadata: false,
            websocket: false,
        }
    }
}

/// A running test fleet.
pub struct TestFleet {
    /// The nodes (in-process).
    pub fleet: georelay::relay::Fleet,
    /// The metadata store (disabled unless the spec enables it).
    pub metadata: georelay::metadata::MetadataHandle,
    /// The policy they started with.
    pub policy: Arc<Policy>,
    /// The fleet's certificates (dev CA in memory).
    pub pki: Arc<FleetPki>,
    /// The directory holding the config file.
    pub dir: tempfile::TempDir,
    /// `127.a.b` of this fleet.
    pub prefix: (u8, u8),
}

impl TestFleet {
    /// Starts every node of the example topology with `spec`.
    pub async fn start(spec: FleetSpec) -> TestFleet {
        Self::start_nodes(spec, &NODES).await
    }

    /// Starts only `nodes` of the topology (the others stay down).
    pub async fn start_nodes(spec: FleetSpec, nodes: &[&str]) -> TestFleet {
        Self::start_nodes_with_clock(spec, nodes, Arc::new(SystemClock)).await
    }

    /// [`TestFleet::start_nodes`] on the wall clock `clock` (e.g. a
    /// `ManualClock` the test steps).
    pub async fn start_nodes_with_clock(
        spec: FleetSpec,
        nodes: &[&str],
        clock: SharedClock,
    ) -> TestFleet {
        let prefix = free_prefix();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("regions.toml");
        std::fs::write(&path, config_text(prefix, &spec)).expect("write config");
        let policy =
            Arc::new(Policy::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}")));
        let pki = Arc::new(FleetPki::from_fleet(&policy.fleet).expect("dev pki"));
        let metrics = georelay::admin::install_metrics_recorder();
        let (recorder, metadata) = georelay::metadata::start(
            &policy.fleet.metadata,
            georelay::metadata::app_retention_days(&policy.fleet),
            clock.clone(),
        )
        .await
        .expect("metadata starts");
        let ids = nodes
            .iter()
            .map(|n| georelay::ids::NodeId::new(*n))
            .collect();
        let fleet = georelay::relay::Fleet::start(
            path,
            Arc::clone(&policy),
            Arc::clone(&pki),
            ids,
            clock.clone(),
            recorder,
            metrics,
        )
        .await
        .expect("fleet starts");
        let test = TestFleet {
            fleet,
            metadata,
            policy,
            pki,
            dir,
            prefix,
        };
        test.wait_mesh_ready(Duration::from_secs(10)).await;
        test
    }

    /// Starts a node of the topology again (after `take` + `kill`).
    pub async fn restart(&mut self, node: &str) {
        let options = georelay::relay::NodeOptions {
            id: georelay::ids::NodeId::new(node),
            policy: Arc::clone(&self.policy),
            pki: Arc::clone(&self.pki),
            clock: Arc::new(SystemClock),
            recorder: georelay::metadata::Recorder::disabled(),
            metrics: georelay::admin::install_metrics_recorder(),
            reloader: None,
        };
        // The killed node's sockets may take a moment to be released.
        for _ in 0..250 {
            match georelay::relay::RunningNode::start(options.clone()).await {
                Ok(running) => {
                    self.fleet.nodes.push(running);
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!("{node} could not be restarted within 5 s");
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("regions.toml")
    }

    /// Rewrites the config file with `spec` (same addresses), for reloads.
    pub fn rewrite_config(&self, spec: &FleetSpec) {
        std::fs::write(self.config_path(), config_text(self.prefix, spec)).expect("rewrite config");
    }

    /// Waits until every running node's configured links to other running
    /// nodes are up.
    pub async fn wait_mesh_ready(&self, limit: Duration) {
        let running: Vec<String> = self
            .fleet
            .nodes
            .iter()
            .map(|n| n.hub.me().to_string())
            .collect();
        let deadline = georelay::clock::timer_now() + limit;
        loop {
            let ready = self.fleet.nodes.iter().all(|n| {
                n.hub
                    .links_down()
                    .iter()
                    .all(|peer| !running.iter().any(|r| r == peer.as_str()))
            });
            if ready {
                return;
            }
            assert!(
                georelay::clock::timer_now() < deadline,
                "mesh did not come up in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The QUIC address of a node.
    pub fn node_addr(&self, node: &str) -> SocketAddr {
        let i = NODES.iter().position(|n| *n == node).expect("known node");
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(
                127,
                self.prefix.0,
                self.prefix.1,
                10 + i as u8,
            )),
            4433,
        )
    }

    /// The admin address of a node.
    pub fn admin_addr(&self, node: &str) -> SocketAddr {
        SocketAddr::new(self.node_addr(node).ip(), 9090)
    }

    /// The WebSocket fallback address of a node (with [`FleetSpec::websocket`]).
    pub fn websocket_addr(&self, node: &str) -> SocketAddr {
        SocketAddr::new(self.node_addr(node).ip(), WEBSOCKET_PORT)
    }

    /// A client source address that geolocates to `country` (one of
    /// [`COUNTRIES`]); `None` gives 127.0.0.1, whose country is unknown.
    pub fn client_ip(&self, country: Option<&str>) -> IpAddr {
        match country {
            Some(c) => {
                let i = COUNTRIES
                    .iter()
                    .position(|x| *x == c)
                    .expect("known test country");
                IpAddr::V4(Ipv4Addr::new(
                    127,
                    self.prefix.0,
                    self.prefix.1,
                    100 + i as u8,
                ))
            }
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// Mints a token valid for `ttl_secs` (may be negative for expired).
    pub fn token(&self, app: &str, channel: &str, user: &str, role: Role, ttl_secs: i64) -> String {
        let now = SystemClock.now_unix_secs() as i64;
        let claims = Claims {
            app: AppId::new(app),
            channel: channel.to_string(),
            user: user.to_string(),
            role,
            expires_at: (now + ttl_secs).max(0) as u64,
        };
        self.policy.keyring.mint(&claims).expect("app in keyring")
    }

    /// Client options trusting this fleet's dev CA, bound to `country`.
    pub fn options(&self, country: Option<&str>) -> ClientOptions {
        let mut options = ClientOptions::new(Arc::clone(&self.pki.roots));
        options.bind = self.client_ip(country);
        options
    }

    /// The target for a node.
    pub fn target(&self, node: &str) -> Target {
        Target {
            node: node.to_string(),
            addr: self.node_addr(node),
        }
    }

    /// Connects a client with a fresh token.
    pub async fn connect(
        &self,
        node: &str,
        app: &str,
        channel: &str,
        user: &str,
        role: Role,
        country: Option<&str>,
    ) -> Result<Client, ClientError> {
        let join = Join {
            app: app.to_string(),
            channel: channel.to_string(),
            token: self.token(app, channel, user, role, 600),
        };
        Client::connect(&self.options(country), &[self.target(node)], &join).await
    }

    /// `GET /status` of a node, over HTTP.
    pub async fn status(&self, node: &str) -> StatusReport {
        let body = http_get(self.admin_addr(node), "/status").await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad /status JSON ({e}): {body}"))
    }
}

/// A minimal HTTP/1.1 GET; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    http_request(addr, "GET", path).await.1
}

/// A minimal HTTP/1.1 request; returns (status code, body).
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    (status, body)
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

/// The TOML text of the test fleet on `127.a.b.*`.
pub fn config_text(prefix: (u8, u8), spec: &FleetSpec) -> String {
    let (a, b) = prefix;
    let mut text = String::from("[geoip.overrides]\n");
    for (i, country) in COUNTRIES.iter().enumerate() {
        text.push_str(&format!("\"127.{a}.{b}.{}/32\" = \"{country}\"\n", 100 + i));
    }
    text.push_str(
        r#"
[regions.eu]
countries = ["DE", "FR", "NL", "AT", "BE"]
[regions.uk]
countries = ["GB"]
[regions.us]
countries = ["US"]
[regions.apac]
countries = ["SG", "JP"]
"#,
    );
    let regions = ["eu", "eu", "uk", "us", "us", "apac"];
    for (i, node) in NODES.iter().enumerate() {
        text.push_str(&format!(
            "[nodes.{node}]\nregion = \"{}\"\nlisten = \"127.{a}.{b}.{}:4433\"\nadmin = \"127.{a}.{b}.{}:9090\"\n",
            regions[i],
            10 + i,
            10 + i
        ));
        if spec.websocket {
            text.push_str(&format!(
                "websocket = \"127.{a}.{b}.{}:{WEBSOCKET_PORT}\"\n",
                10 + i
            ));
        }
    }
    text.push_str(spec.links.as_deref().unwrap_or(EXAMPLE_LINKS));
    text.push_str(&spec.apps);
    text.push_str(&format!(
        "\n[metadata]\nenabled = {}\ndir = \"metadata\"\nflush_interval_ms = 100\nquality_interval_secs = 1\n",
        spec.metadata
    ));
    text.push_str(&spec.extra);
    text
}
