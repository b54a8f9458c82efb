//! A test fleet of real `georelay serve` child processes (`--all`, or one
//! `--node` per process) in a temporary working directory, on a loopback
//! prefix no other running test uses. Children are killed when dropped, also
//! when a test panics.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use georelay::auth::{Claims, Role};
use georelay::client::{Client, ClientOptions, Join, Target};
use georelay::relay::policy::Policy;
use georelay::wire::TrackKind;

use super::fleet::{COUNTRIES, FleetSpec, NODES, config_text, free_prefix};

/// The `georelay` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_georelay");

/// libfaketime from Debian's `faketime` package (`.ci/run` installs it).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A configured fleet directory and its serving processes.
pub struct ServedFleet {
    /// The working directory (config, logs, metadata, certs).
    pub dir: tempfile::TempDir,
    /// `127.a.b` of this fleet.
    pub prefix: (u8, u8),
    children: Vec<(String, Child)>,
    /// How each process was started (arguments, log level, environment), so
    /// that [`ServedFleet::restart`] starts it again the same way.
    recipes: Vec<(String, Recipe)>,
}

#[derive(Clone)]
struct Recipe {
    args: Vec<String>,
    log_level: String,
    env: Vec<(String, std::ffi::OsString)>,
}

impl Drop for ServedFleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl ServedFleet {
    /// Writes the test topology with `spec` into a fresh directory.
    pub fn configure(spec: &FleetSpec) -> ServedFleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = free_prefix();
        std::fs::write(dir.path().join("regions.toml"), config_text(prefix, spec)).expect("config");
        ServedFleet {
            dir,
            prefix,
            children: Vec::new(),
            recipes: Vec::new(),
        }
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("regions.toml")
    }

    /// Rewrites the config with `spec`, same addresses.
    pub fn rewrite(&self, spec: &FleetSpec) {
        std::fs::write(self.config(), config_text(self.prefix, spec)).expect("config");
    }

    /// Runs `georelay certs` into `certs/` and switches the config to them
    /// (the documented flow: certificates first, then `[tls]`).
    pub fn use_certs(&self, spec: &FleetSpec) {
        let out = Command::new(BIN)
            .args(["certs", "--config"])
            .arg(self.config())
            .arg("--out")
            .arg(self.dir.path().join("certs"))
            .output()
            .expect("certs runs");
        assert!(
            out.status.success(),
            "georelay certs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let spec = FleetSpec {
            extra: format!(
                "{}\n[tls]\nca = \"certs/ca.pem\"\ndir = \"certs\"\n",
                spec.extra
            ),
            apps: spec.apps.clone(),
            links: spec.links.clone(),
            metadata: spec.metadata,
            websocket: spec.websocket,
        };
        self.rewrite(&spec);
    }

    fn spawn(&mut self, name: &str, args: &[&str], log_level: &str) {
        self.spawn_with_env(name, args, log_level, &[]);
    }

    fn spawn_with_env(
        &mut self,
        name: &str,
        args: &[&str],
        log_level: &str,
        env: &[(&str, std::ffi::OsString)],
    ) {
        let recipe = Recipe {
            args: args.iter().map(|a| a.to_string()).collect(),
            log_level: log_level.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log");
        self.launch(name, &recipe, log);
        // A name refers to its latest start (a node started again after a
        // stop, perhaps with other arguments).
        self.recipes.retain(|(n, _)| n != name);
        self.recipes.push((name.to_string(), recipe));
    }

    fn launch(&mut self, name: &str, recipe: &Recipe, log: std::fs::File) {
        // GEORELAY_TEST_BIN runs the served tests against another build
        // (e.g. an older commit, to show that a test catches a regression).
        let bin = std::env::var_os("GEORELAY_TEST_BIN").unwrap_or_else(|| BIN.into());
        let child = Command::new(bin)
            .envs(recipe.env.iter().map(|(k, v)| (k, v)))
            .args(&recipe.args)
            .args(["--config", "regions.toml"])
            .current_dir(self.dir.path())
            .env("RUST_LOG", &recipe.log_level)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("serve starts");
        self.children.retain(|(n, _)| n != name);
        self.children.push((name.to_string(), child));
    }

    /// Starts a serving process again, the way it was first started, once
    /// it has exited (after a signal); its log is appended to.
    pub fn restart(&mut self, name: &str) {
        let exited = self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, child)| child.try_wait().expect("wait").is_some());
        assert!(exited, "{name} is still running: signal it first");
        let recipe = self
            .recipes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .expect("a process started before");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .expect("log");
        self.launch(name, &recipe, log);
    }

    /// Whether a serving process is running (has not exited).
    pub fn is_running(&mut self, name: &str) -> bool {
        self.children
            .iter_mut()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, child)| child.try_wait().expect("wait").is_none())
    }

    /// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`), while the
    /// process runs.
    pub fn memory_kib(&self, name: &str, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid(name))).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Starts `serve --all` (log in `serve.log`).
    pub fn serve_all(&mut self, log_level: &str) {
        self.spawn("serve", &["serve", "--all"], log_level);
    }

    /// Starts one `serve --node` process per node (logs in `<node>.log`).
    pub fn serve_nodes(&mut self, nodes: &[&str], log_level: &str) {
        for node in nodes {
            self.spawn(node, &["serve", "--node", node], log_level);
        }
    }

    /// Starts one `serve --node` process whose wall clock is libfaketime's
    /// offset in `offset_file` (re-read on every clock read, so the test
    /// steps the clock by rewriting the file); its monotonic clock is real.
    pub fn serve_node_with_faked_wall_clock(&mut self, node: &str, offset_file: &Path) {
        self.serve_node_with_faked_wall_clock_logging(node, offset_file, "info");
    }

    /// [`ServedFleet::serve_node_with_faked_wall_clock`] at `log_level`.
    pub fn serve_node_with_faked_wall_clock_logging(
        &mut self,
        node: &str,
        offset_file: &Path,
        log_level: &str,
    ) {
        let env = [
            ("LD_PRELOAD", FAKETIME_LIB.into()),
            ("FAKETIME_TIMESTAMP_FILE", offset_file.into()),
            ("FAKETIME_NO_CACHE", "1".into()),
            ("DONT_FAKE_MONOTONIC", "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
        ];
        self.spawn_with_env(node, &["serve", "--node", node], log_level, &env);
    }

    /// The pid of a serving process (`serve`, or a node id).
    pub fn pid(&self, name: &str) -> u32 {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
            .expect("running process")
    }

    /// Sends a signal (`-TERM`, `-KILL`, `-HUP`) to a serving process.
    pub fn signal(&self, name: &str, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid(name).to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    }

    /// Waits up to `limit` for a serving process to exit; its exit status.
    pub async fn wait_exit(&mut self, name: &str, limit: Duration) -> std::process::ExitStatus {
        let child = &mut self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("running process")
            .1;
        let deadline = georelay::clock::timer_now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                georelay::clock::timer_now() < deadline,
                "{name} did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log of a serving process.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// A node's address on `port` (4433 QUIC, 9090 admin).
    pub fn addr(&self, node: &str, port: u16) -> SocketAddr {
        let i = NODES.iter().position(|n| *n == node).expect("known node");
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(
                127,
                self.prefix.0,
                self.prefix.1,
                10 + i as u8,
            )),
            port,
        )
    }

    /// A client source address that geolocates to `country`.
    pub fn client_ip(&self, country: &str) -> IpAddr {
        let i = COUNTRIES
            .iter()
            .position(|c| *c == country)
            .expect("known country");
        IpAddr::V4(Ipv4Addr::new(
            127,
            self.prefix.0,
            self.prefix.1,
            100 + i as u8,
        ))
    }

    /// The SDK target for a node.
    pub fn target(&self, node: &str) -> Target {
        Target {
            node: node.to_string(),
            addr: self.addr(node, 4433),
        }
    }

    /// `GET /status` of a node, parsed.
    pub async fn status(&self, node: &str) -> georelay::admin::StatusReport {
        let body = super::fleet::http_get(self.addr(node, 9090), "/status").await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad /status ({e}): {body}"))
    }

    /// Waits until `node` answers on its admin address and `ready(status)`.
    pub async fn wait_until(
        &self,
        node: &str,
        ready: impl Fn(&georelay::admin::StatusReport) -> bool,
    ) {
        for _ in 0..300 {
            let admin = tokio::net::TcpStream::connect(self.addr(node, 9090));
            if let Ok(Ok(_listening)) =
                tokio::time::timeout(Duration::from_millis(200), admin).await
            {
                let body = super::fleet::http_get(self.addr(node, 9090), "/status").await;
                if serde_json::from_str(&body).is_ok_and(|status| ready(&status)) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{node} did not become ready");
    }

    /// Waits until `node` answers `/readyz` with 200 (config loaded, every
    /// configured link up).
    pub async fn wait_ready(&self, node: &str) {
        for _ in 0..300 {
            let admin = tokio::net::TcpStream::connect(self.addr(node, 9090));
            if let Ok(Ok(_listening)) =
                tokio::time::timeout(Duration::from_millis(200), admin).await
            {
                if super::fleet::http_request(self.addr(node, 9090), "GET", "/readyz")
                    .await
                    .0
                    == 200
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{node} not ready; serve log:\n{}", self.log("serve"));
    }

    /// Runs `georelay loadgen --json --app APP` with `args` against this
    /// fleet (at most 60 s) and parses its one JSON line.
    pub async fn loadgen(&self, app: &str, args: &[String]) -> serde_json::Value {
        let mut command = Command::new(BIN);
        command
            .args(["loadgen", "--json", "--app", app, "--config"])
            .arg(self.config())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = tokio::task::spawn_blocking(move || {
            let child = command.spawn().expect("spawn georelay loadgen");
            let pid = child.id();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(child.wait_with_output());
            });
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(output) => output.expect("loadgen output"),
                Err(_) => {
                    let _ = Command::new("kill").arg(pid.to_string()).status();
                    panic!("loadgen did not finish within 60 s");
                }
            }
        })
        .await
        .expect("loadgen task");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "loadgen failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "--json prints one object: {stdout}");
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
    }

    /// Waits until `node` reports its links to `peers` up.
    pub async fn wait_links(&self, node: &str, peers: &[&str]) {
        self.wait_until(node, |status| {
            peers
                .iter()
                .all(|p| status.links.get(*p).is_some_and(|l| l.up))
        })
        .await;
    }

    /// Client options trusting the fleet's CA: the `[tls] ca` written by
    /// `certs`, else the dev CA certificate `serve` writes.
    pub fn client_options(&self) -> ClientOptions {
        let certs = self.dir.path().join("certs/ca.pem");
        let ca = if certs.exists() {
            certs
        } else {
            self.dir.path().join("data/dev-ca.pem")
        };
        let roots = georelay::tls::FleetPki::load_roots(&ca).expect("CA certificate");
        ClientOptions::new(Arc::new(roots))
    }

    /// A join request with a token minted from the config's app secret.
    pub fn join(&self, app: &str, channel: &str, user: &str, role: Role) -> Join {
        let policy = Policy::load(&self.config()).expect("policy");
        let claims = Claims {
            app: georelay::ids::AppId::new(app),
            channel: channel.into(),
            user: user.into(),
            role,
            expires_at: 4_000_000_000,
        };
        Join {
            app: app.into(),
            channel: channel.into(),
            token: policy.keyring.mint(&claims).expect("app"),
        }
    }

    /// A subscriber on `to` and a publisher on `from` of `app`/`channel`,
    /// once the subscriber has seen the publisher's track and its
    /// subscription is `active` (the path is established). Returns
    /// (publisher, track, subscriber).
    pub async fn pub_sub(
        &self,
        app: &str,
        channel: &str,
        from: &str,
        to: &str,
    ) -> (Client, u64, Client) {
        let options = self.client_options();
        let mut subscriber = Client::connect(
            &options,
            &[self.target(to)],
            &self.join(app, channel, "viewer", Role::Subscribe),
        )
        .await
        .expect("subscriber");
        subscriber.subscribe().await.expect("subscribe");
        let publisher = Client::connect(
            &options,
            &[self.target(from)],
            &self.join(app, channel, "studio", Role::Publish),
        )
        .await
        .expect("publisher");
        let track = publisher
            .announce(TrackKind::Video, false, "cam")
            .await
            .expect("announce");
        super::events::track_ready(&mut subscriber).await;
        (publisher, track, subscriber)
    }

    /// The metadata directory.
    pub fn metadata_dir(&self) -> PathBuf {
        self.dir.path().join("metadata")
    }

    /// The working directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
