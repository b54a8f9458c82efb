//! Nothing at rest: a fleet run as `georelay serve --all` at trace level in a
//! temporary working directory carries media whose payload is a unique
//! canary; afterwards the canary is in no file under the working directory,
//! the metadata directory or the system temp directory, and in no captured
//! log line. And a SIGKILLed server keeps every event flushed before the kill.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use georelay::auth::Role;
use georelay::client::{Client, ClientOptions, Event, Join};
use georelay::metadata::{EventKind, SqliteStore};
use georelay::wire::TrackKind;
use support::fleet::FleetSpec;

const BIN: &str = env!("CARGO_BIN_EXE_georelay");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prefix() -> (u8, u8) {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    ring::rand::SystemRandom::new().fill(&mut b).expect("rand");
    (100 + b[0] % 140, b[1])
}

/// Starts `serve --all` in `dir` (its working directory) with metadata on.
fn serve(dir: &Path, prefix: (u8, u8), log_level: &str) -> Server {
    let spec = FleetSpec {
        metadata: true,
        ..FleetSpec::default()
    };
    std::fs::write(dir.join("regions.toml"), support::fleet::config_text(prefix, &spec)).expect("config");
    let log = std::fs::File::create(dir.join("serve.log")).expect("log");
    let child = Command::new(BIN)
        .args(["serve", "--all", "--config", "regions.toml"])
        .current_dir(dir)
        .env("RUST_LOG", log_level)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("serve starts");
    Server(child)
}

fn addr(prefix: (u8, u8), node: &str, port: u16) -> std::net::SocketAddr {
    let i = support::fleet::NODES.iter().position(|n| *n == node).expect("node");
    std::net::SocketAddr::from(([127, prefix.0, prefix.1, 10 + i as u8], port))
}

async fn wait_ready(prefix: (u8, u8), node: &str) {
    for _ in 0..200 {
        let admin = tokio::net::TcpStream::connect(addr(prefix, node, 9090));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), admin).await {
            let (code, _) = support::fleet::http_request(addr(prefix, node, 9090), "GET", "/readyz").await;
            if code == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{node} not ready");
}

fn join(dir: &Path, app: &str, channel: &str, user: &str, role: Role) -> Join {
    let policy = georelay::relay::policy::Policy::load(&dir.join("regions.toml")).expect("policy");
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

fn options(dir: &Path) -> ClientOptions {
    let roots = georelay::tls::FleetPki::load_roots(&dir.join("data/dev-ca.pem")).expect("dev CA certificate");
    ClientOptions::new(std::sync::Arc::new(roots))
}

/// Every file under `root` (bounded depth and size) whose bytes contain
/// `needle`.
fn files_containing(root: &Path, needle: &[u8], depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() && depth > 0 {
            found.extend(files_containing(&path, needle, depth - 1));
        } else if meta.is_file() && meta.len() < 256 * 1024 * 1024 {
            if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_payload_is_found_in_no_file_and_no_log_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = prefix();
    let canary = format!("CANARY-{:016x}-{:08x}", rand_u64(), std::process::id());
    let server = serve(dir.path(), prefix, "trace");
    wait_ready(prefix, "eu-fra-1").await;
    wait_ready(prefix, "eu-ams-1").await;

    let options = options(dir.path());
    let target = |node: &str| georelay::client::Target { node: node.into(), addr: addr(prefix, node, 4433) };
    let mut subscriber = Client::connect(&options, &[target("eu-ams-1")], &join(dir.path(), "globex-media", "secret-show", "viewer", Role::Subscribe))
        .await
        .expect("subscriber");
    subscriber.subscribe().await.expect("subscribe");
    let publisher = Client::connect(&options, &[target("eu-fra-1")], &join(dir.path(), "globex-media", "secret-show", "studio", Role::Publish))
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
    for seq in 0..200u64 {
        publisher.send_media(track, seq, seq, canary.as_bytes()).expect("send");
        if seq % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    publisher.send_message(track, canary.as_bytes()).await.expect("message");
    let mut delivered = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, subscriber.events().next()).await {
        match event {
            Event::Media { payload, .. } | Event::Message { payload, .. } if payload == canary.as_bytes() => delivered += 1,
            _ => {}
        }
    }
    assert!(delivered >= 190, "the canary media was relayed across the mesh: {delivered}");
    publisher.close().await;
    subscriber.close().await;

    // Clean shutdown flushes metadata; then search every byte at rest.
    let status = Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let mut server = server;
    for _ in 0..100 {
        if server.0.try_wait().expect("wait").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(dir.path().join("serve.log")).expect("log");
    assert!(log.lines().count() > 100, "trace logging was on ({} lines)", log.lines().count());
    assert!(log.contains("secret-show") || log.contains("globex-media"), "the log is the real one");
    let metadata = dir.path().join("metadata");
    assert!(!files_containing(&metadata, b"secret-show", 3).is_empty(), "metadata recorded the session");
    let hits = files_containing(dir.path(), canary.as_bytes(), 6);
    assert!(hits.is_empty(), "canary at rest under the working dir: {hits:?}");
    let hits = files_containing(&std::env::temp_dir(), canary.as_bytes(), 4);
    assert!(hits.is_empty(), "canary at rest under the temp dir: {hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_server_keeps_every_flushed_event_and_its_store_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = prefix();
    let server = serve(dir.path(), prefix, "warn");
    wait_ready(prefix, "eu-fra-1").await;
    let options = options(dir.path());
    let target = georelay::client::Target { node: "eu-fra-1".into(), addr: addr(prefix, "eu-fra-1", 4433) };
    const SESSIONS: usize = 12;
    for i in 0..SESSIONS {
        let client = Client::connect(&options, std::slice::from_ref(&target), &join(dir.path(), "acme-health", "ward", &format!("u{i}"), Role::Subscribe))
            .await
            .expect("admitted");
        client.close().await;
    }
    // Longer than the flush interval (100 ms): everything so far is flushed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut server = server;
    server.0.kill().expect("SIGKILL");
    server.0.wait().expect("reaped");

    let store = SqliteStore::open_existing(dir.path().join("metadata")).expect("the store opens cleanly after SIGKILL");
    let events = store.read_events(0, None).expect("read");
    let opened = events.iter().filter(|e| matches!(e.kind, EventKind::SessionOpened { .. })).count();
    let closed = events.iter().filter(|e| matches!(e.kind, EventKind::SessionClosed { .. })).count();
    assert_eq!(opened, SESSIONS, "every flushed session_opened survived");
    assert_eq!(closed, SESSIONS, "every flushed session_closed survived");
}

fn rand_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut b).expect("rand");
    u64::from_le_bytes(b)
}
