//! A fleet of separate `georelay serve --node` processes with certificates
//! from `georelay certs`: mutual TLS between processes, failover when a
//! transit process is SIGKILLed (no QUIC close reaches its peers), draining
//! on SIGTERM, and core dumps disabled in every serving process.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use georelay::auth::Role;
use georelay::client::{Client, ClientOptions, Event, Join};
use georelay::wire::TrackKind;
use support::fleet::FleetSpec;

const BIN: &str = env!("CARGO_BIN_EXE_georelay");

/// Serving processes, killed when dropped.
struct Processes(Vec<(String, Child)>);

impl Processes {
    fn pid(&self, node: &str) -> u32 {
        self.0.iter().find(|(n, _)| n == node).map(|(_, c)| c.id()).expect("running node")
    }

    fn signal(&self, node: &str, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid(node).to_string()]).status().expect("kill");
        assert!(status.success());
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes the test topology with `[tls]` into `dir`, runs `georelay certs`,
/// and returns the config path and the `127.a.b` prefix.
fn configure(dir: &Path) -> (std::path::PathBuf, (u8, u8)) {
    let prefix = {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 2];
        ring::rand::SystemRandom::new().fill(&mut b).expect("rand");
        (100 + b[0] % 140, b[1])
    };
    // The documented flow: certificates first, then the `[tls]` table.
    let path = dir.join("regions.toml");
    std::fs::write(&path, support::fleet::config_text(prefix, &FleetSpec::default())).expect("config");
    let out = Command::new(BIN)
        .args(["certs", "--config"])
        .arg(&path)
        .arg("--out")
        .arg(dir.join("certs"))
        .output()
        .expect("certs runs");
    assert!(out.status.success(), "georelay certs: {}", String::from_utf8_lossy(&out.stderr));
    let spec = FleetSpec {
        extra: "[tls]\nca = \"certs/ca.pem\"\ndir = \"certs\"\n".into(),
        ..FleetSpec::default()
    };
    std::fs::write(&path, support::fleet::config_text(prefix, &spec)).expect("config");
    (path, prefix)
}

fn spawn(path: &Path, nodes: &[&str]) -> Processes {
    let dir = path.parent().expect("dir");
    Processes(
        nodes
            .iter()
            .map(|node| {
                let log = std::fs::File::create(dir.join(format!("{node}.log"))).expect("log");
                let child = Command::new(BIN)
                    .args(["serve", "--node", node, "--config"])
                    .arg(path)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("log"))
                    .stderr(log)
                    .spawn()
                    .expect("serve starts");
                (node.to_string(), child)
            })
            .collect(),
    )
}

fn addr(prefix: (u8, u8), node: &str, port: u16) -> std::net::SocketAddr {
    let i = support::fleet::NODES.iter().position(|n| *n == node).expect("node");
    std::net::SocketAddr::from(([127, prefix.0, prefix.1, 10 + i as u8], port))
}

/// Waits until `node` reports every link in `peers` up.
async fn wait_links(prefix: (u8, u8), node: &str, peers: &[&str]) {
    for _ in 0..200 {
        let admin = tokio::net::TcpStream::connect(addr(prefix, node, 9090));
        if let Ok(Ok(_listening)) = tokio::time::timeout(Duration::from_millis(200), admin).await {
            let body = support::fleet::http_get(addr(prefix, node, 9090), "/status").await;
            if let Ok(status) = serde_json::from_str::<georelay::admin::StatusReport>(&body) {
                if peers.iter().all(|p| status.links.get(*p).is_some_and(|l| l.up)) {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{node}: links to {peers:?} did not come up");
}

fn client_options(dir: &Path) -> ClientOptions {
    let roots = georelay::tls::FleetPki::load_roots(&dir.join("certs/ca.pem")).expect("ca");
    ClientOptions::new(std::sync::Arc::new(roots))
}

fn join(policy: &georelay::relay::policy::Policy, app: &str, channel: &str, user: &str, role: Role) -> Join {
    let claims = georelay::auth::Claims {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_with_certs_fail_over_when_the_transit_is_sigkilled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, prefix) = configure(dir.path());
    let policy = georelay::relay::policy::Policy::load(&path).expect("policy");
    let processes = spawn(&path, &["eu-fra-1", "eu-ams-1", "uk-lon-1"]);
    wait_links(prefix, "eu-fra-1", &["eu-ams-1", "uk-lon-1"]).await;
    wait_links(prefix, "eu-ams-1", &["eu-fra-1", "uk-lon-1"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let options = client_options(dir.path());
    let target = |node: &str| georelay::client::Target { node: node.into(), addr: addr(prefix, node, 4433) };
    let mut subscriber = Client::connect(&options, &[target("eu-ams-1")], &join(&policy, "globex-media", "tv", "viewer", Role::Subscribe))
        .await
        .expect("subscriber");
    subscriber.subscribe().await.expect("subscribe");
    let publisher = Client::connect(&options, &[target("eu-fra-1")], &join(&policy, "globex-media", "tv", "studio", Role::Publish))
        .await
        .expect("publisher");
    let track = publisher.announce(TrackKind::Video, false, "cam").await.expect("announce");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, subscriber.events().next()).await {
        if matches!(event, Event::TrackAdded(_)) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Media flows fra -> lon -> ams between three processes.
    let mut seq = 0u64;
    let mut received_before = 0;
    for _ in 0..100 {
        publisher.send_media(track, seq, seq, b"frame").expect("send");
        seq += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, subscriber.events().next()).await {
        if matches!(event, Event::Media { .. }) {
            received_before += 1;
        }
    }
    assert!(received_before >= 99, "media crosses three processes: {received_before}");
    let lon = support::fleet::http_get(addr(prefix, "uk-lon-1", 9090), "/status").await;
    assert!(lon.contains("globex-media"), "London is the transit: {lon}");

    // SIGKILL London: no CONNECTION_CLOSE reaches its peers; they notice by
    // the mesh idle timeout and re-route over the direct link.
    processes.signal("uk-lon-1", "-KILL");
    let killed = tokio::time::Instant::now();
    let mut resumed = None;
    let first_after = seq;
    while killed.elapsed() < Duration::from_secs(15) {
        publisher.send_media(track, seq, seq, b"frame").expect("send");
        seq += 1;
        if let Ok(Some(Event::Media { header, .. })) = tokio::time::timeout(Duration::from_millis(5), subscriber.events().next()).await {
            if header.seq >= first_after {
                resumed = Some(killed.elapsed());
                break;
            }
        }
    }
    let resumed = resumed.expect("delivery resumes over fra -> ams after London's silent death");
    println!("SIGKILL failover: delivery resumed {resumed:?} after the transit process died");
    assert!(resumed < Duration::from_secs(6), "bounded by the 2 s mesh idle timeout plus re-routing: {resumed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_disables_core_dumps_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, prefix) = configure(dir.path());
    let policy = georelay::relay::policy::Policy::load(&path).expect("policy");
    let mut processes = spawn(&path, &["eu-fra-1", "eu-ams-1"]);
    wait_links(prefix, "eu-fra-1", &["eu-ams-1"]).await;

    let limits = std::fs::read_to_string(format!("/proc/{}/limits", processes.pid("eu-fra-1"))).expect("limits");
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).expect("core line");
    assert_eq!(core.split_whitespace().collect::<Vec<_>>()[4..6], ["0", "0"], "RLIMIT_CORE is 0: {core}");

    let options = client_options(dir.path());
    let target = georelay::client::Target { node: "eu-fra-1".into(), addr: addr(prefix, "eu-fra-1", 4433) };
    let mut client = Client::connect(&options, &[target], &join(&policy, "acme-health", "ward", "nurse", Role::Subscribe))
        .await
        .expect("admitted");
    processes.signal("eu-fra-1", "-TERM");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.events().next().await {
                Some(Event::Closed { code, redirect, .. }) => return (code, redirect),
                Some(_) => continue,
                None => panic!("events ended without a close"),
            }
        }
    })
    .await
    .expect("closed within the drain");
    assert_eq!(closed.0, Some(georelay::error::ErrorCode::ShuttingDown));
    let targets: Vec<&str> = closed.1.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(targets, ["eu-ams-1"], "redirected to the other EU node");
    let (_, child) = processes.0.iter_mut().find(|(n, _)| n == "eu-fra-1").expect("fra");
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("exits within the drain timeout");
    assert!(status.success(), "clean exit after draining: {status:?}");
}
