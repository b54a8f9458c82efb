//! TLS between nodes and clients over real QUIC on loopback: both ALPNs on
//! one endpoint, node identity checks, foreign CAs, and the files written by
//! `georelay certs` loading back.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use georelay::config::Fleet;
use georelay::ids::NodeId;
use georelay::tls::{
    self, DevCa, FleetPki, NodeIdentity, TlsError, TransportKind, client_config,
    mesh_client_config, server_config, transport_config,
};
use georelay::wire::{ALPN_CLIENT, ALPN_MESH};
use quinn::{Connection, Endpoint};
use rustls::RootCertStore;

/// Bounds every network wait of these tests.
const STEP: Duration = Duration::from_secs(10);

fn roots_of(ca: &DevCa) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.ca_cert().clone())
        .expect("the dev CA is a valid root");
    Arc::new(roots)
}

fn node(id: &str) -> NodeId {
    NodeId::new(id)
}

fn server(identity: &NodeIdentity, roots: Arc<RootCertStore>) -> Endpoint {
    let config = server_config(
        identity,
        roots,
        Arc::new(transport_config(TransportKind::Client)),
    )
    .expect("server config");
    Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind server")
}

/// Connects `client` to `server` as `server_name`; returns both sides'
/// outcomes (the server side is `None` when no connection reached it).
async fn connect(
    server: &Endpoint,
    client: quinn::ClientConfig,
    server_name: &str,
) -> (
    Result<Connection, String>,
    Option<Result<Connection, String>>,
) {
    let addr = server.local_addr().expect("server address");
    let endpoint = Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind client");
    let dial = async {
        match endpoint.connect_with(client, addr, server_name) {
            Ok(connecting) => connecting.await.map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        }
    };
    let accept = async {
        match tokio::time::timeout(STEP, server.accept()).await {
            Ok(Some(incoming)) => Some(incoming.await.map_err(|err| err.to_string())),
            _ => None,
        }
    };
    let (dialed, accepted) = tokio::time::timeout(STEP, async { tokio::join!(dial, accept) })
        .await
        .expect("handshake finishes in time");
    (dialed, accepted)
}

fn alpn(conn: &Connection) -> Option<Vec<u8>> {
    tls::negotiated_alpn(conn)
}

#[tokio::test]
async fn one_endpoint_serves_sdk_clients_and_mesh_peers() {
    let ca = DevCa::generate().expect("dev CA");
    let node_a = ca.issue_node(&node("node-a")).expect("issue a");
    let node_b = ca.issue_node(&node("node-b")).expect("issue b");
    let server = server(&node_a, roots_of(&ca));
    let transport = Arc::new(transport_config(TransportKind::Mesh));

    let sdk = client_config(roots_of(&ca), transport.clone()).expect("client config");
    let (client_side, server_side) = connect(&server, sdk, "node-a").await;
    let client_side = client_side.expect("SDK client connects");
    let server_side = server_side
        .expect("reached server")
        .expect("server accepts");
    assert_eq!(alpn(&client_side).as_deref(), Some(ALPN_CLIENT));
    assert_eq!(alpn(&server_side).as_deref(), Some(ALPN_CLIENT));
    assert!(matches!(
        tls::peer_node_id(&server_side, &node("node-b")),
        Err(TlsError::NoPeerCertificate)
    ));

    let mesh = mesh_client_config(&node_b, roots_of(&ca), transport).expect("mesh config");
    let (client_side, server_side) = connect(&server, mesh, "node-a").await;
    let client_side = client_side.expect("mesh peer connects");
    let server_side = server_side
        .expect("reached server")
        .expect("server accepts");
    assert_eq!(alpn(&client_side).as_deref(), Some(ALPN_MESH));
    assert_eq!(alpn(&server_side).as_deref(), Some(ALPN_MESH));

    // The server proves its identity to the dialer too.
    tls::peer_node_id(&client_side, &node("node-a")).expect("server cert names node-a");

    tls::peer_node_id(&server_side, &node("node-b")).expect("peer is node-b");
    let wrong = tls::peer_node_id(&server_side, &node("node-a"));
    assert!(
        matches!(&wrong, Err(TlsError::WrongPeer { expected }) if expected.as_str() == "node-a"),
        "{wrong:?}"
    );
    let fleet = [node("node-a"), node("node-b"), node("node-c")];
    assert_eq!(
        tls::identify_peer(&server_side, &fleet)
            .expect("identified")
            .as_str(),
        "node-b"
    );
    assert!(matches!(
        tls::identify_peer(&server_side, &[node("node-c")]),
        Err(TlsError::UnknownPeer)
    ));
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_fails_the_handshake() {
    let fleet_ca = DevCa::generate().expect("fleet CA");
    let rogue_ca = DevCa::generate().expect("rogue CA");
    assert_ne!(fleet_ca.fingerprint_sha256(), rogue_ca.fingerprint_sha256());
    let server = server(
        &fleet_ca.issue_node(&node("node-a")).expect("issue"),
        roots_of(&fleet_ca),
    );
    // Claims to be a fleet node, but its certificate comes from another CA.
    let impostor = rogue_ca.issue_node(&node("node-b")).expect("issue");
    let mesh = mesh_client_config(
        &impostor,
        roots_of(&fleet_ca),
        Arc::new(transport_config(TransportKind::Mesh)),
    )
    .expect("mesh config");
    let (client_side, server_side) = connect(&server, mesh, "node-a").await;
    let server_side = server_side.expect("the attempt reached the server");
    assert!(
        server_side.is_err(),
        "server accepted a foreign client cert"
    );
    // TLS 1.3 clients may finish before the server's verdict; if so, the
    // server's close must reach them.
    if let Ok(conn) = client_side {
        let closed = tokio::time::timeout(STEP, conn.closed())
            .await
            .expect("closed in time");
        assert!(closed.to_string().contains("certificate"), "{closed}");
    }
}

#[tokio::test]
async fn clients_refuse_a_server_from_another_ca_or_with_another_name() {
    let fleet_ca = DevCa::generate().expect("fleet CA");
    let rogue_ca = DevCa::generate().expect("rogue CA");
    let transport = Arc::new(transport_config(TransportKind::Client));

    let rogue_server = server(
        &rogue_ca.issue_node(&node("node-a")).expect("issue"),
        roots_of(&rogue_ca),
    );
    let sdk = client_config(roots_of(&fleet_ca), transport.clone()).expect("client config");
    let (client_side, _) = connect(&rogue_server, sdk, "node-a").await;
    let err = client_side.expect_err("trusted a server from another CA");
    assert!(err.contains("certificate"), "{err}");

    let honest_server = server(
        &fleet_ca.issue_node(&node("node-a")).expect("issue"),
        roots_of(&fleet_ca),
    );
    let sdk = client_config(roots_of(&fleet_ca), transport).expect("client config");
    let (client_side, _) = connect(&honest_server, sdk, "node-b").await;
    let err = client_side.expect_err("accepted node-a's cert as node-b");
    assert!(err.contains("certificate"), "{err}");
}

const FLEET: &str = r#"
[regions.eu]
countries = ["DE"]

[nodes.node-a]
region = "eu"
listen = "127.0.0.1:4433"
admin = "127.0.0.1:9090"

[nodes.node-b]
region = "eu"
listen = "127.0.0.2:4433"
admin = "127.0.0.2:9090"

[[links]]
between = ["node-a", "node-b"]
rtt_ms = 10

[apps.demo]
secret = "a-development-secret-of-some-length"
allow_regions = ["eu"]
"#;

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("regions.toml");
    std::fs::write(&path, format!("{FLEET}\n{extra}")).expect("write config");
    path
}

fn run_certs(config: &Path, out: &Path, force: bool) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_georelay"));
    command
        .arg("certs")
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out);
    if force {
        command.arg("--force");
    }
    command.output().expect("run georelay certs")
}

/// Mutual TLS between two nodes of `pki`, as the mesh uses it.
async fn mesh_handshake(pki: &FleetPki) {
    let node_a = pki.identity(&node("node-a")).expect("node-a identity");
    let node_b = pki.identity(&node("node-b")).expect("node-b identity");
    let server = server(&node_a, pki.roots.clone());
    let mesh = mesh_client_config(
        &node_b,
        pki.roots.clone(),
        Arc::new(transport_config(TransportKind::Mesh)),
    )
    .expect("mesh config");
    let (client_side, server_side) = connect(&server, mesh, "node-a").await;
    client_side.expect("node-b dials node-a");
    let server_side = server_side.expect("reached").expect("node-a accepts");
    tls::peer_node_id(&server_side, &node("node-b")).expect("peer is node-b");
}

#[tokio::test]
async fn without_tls_config_the_fleet_gets_an_in_memory_dev_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = Fleet::load(&write_config(dir.path(), "")).expect("valid config");
    let pki = FleetPki::from_fleet(&fleet).expect("dev PKI");
    let ca = pki.dev_ca().expect("a dev CA was generated");
    assert_eq!(ca.fingerprint_sha256(), pki.ca_fingerprint);
    assert_eq!(pki.ca_fingerprint.len(), 32 * 3 - 1);
    assert!(format!("{pki:?}").contains("[elided]"));
    mesh_handshake(&pki).await;
    // Nothing was written next to the config.
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("regions.toml")]);
}

#[tokio::test]
async fn files_written_by_certs_load_back_and_authenticate_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("pki");
    let config = write_config(dir.path(), "");

    let first = run_certs(&config, &out, false);
    assert!(first.status.success(), "{first:?}");
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("ca = \"pki/ca.pem\""), "{stdout}");
    for (name, mode) in [
        ("ca.pem", 0o644),
        ("ca.key", 0o600),
        ("node-a.pem", 0o644),
        ("node-a.key", 0o600),
        ("node-b.pem", 0o644),
        ("node-b.key", 0o600),
    ] {
        let meta = std::fs::metadata(out.join(name)).expect(name);
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
    }
    let ca_before = std::fs::read(out.join("ca.pem")).expect("ca.pem");

    let refused = run_certs(&config, &out, false);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(out.join("ca.pem")).expect("ca.pem"),
        ca_before
    );

    let forced = run_certs(&config, &out, true);
    assert!(forced.status.success(), "{forced:?}");
    let stdout = String::from_utf8_lossy(&forced.stdout);
    assert_ne!(
        std::fs::read(out.join("ca.pem")).expect("ca.pem"),
        ca_before
    );

    let snippet = &stdout[stdout.find("[tls]").expect("snippet printed")..];
    let fleet = Fleet::load(&write_config(dir.path(), snippet)).expect("config with [tls]");
    let pki = FleetPki::from_fleet(&fleet).expect("PKI from files");
    assert!(pki.dev_ca().is_none());
    assert!(
        stdout.contains(&pki.ca_fingerprint),
        "printed fingerprint differs from the loaded CA"
    );
    mesh_handshake(&pki).await;

    let only_b = FleetPki::from_fleet_for(&fleet, &node("node-b")).expect("one node");
    assert!(only_b.identity(&node("node-a")).is_none());
    assert!(only_b.identity(&node("node-b")).is_some());

    // A certificate swapped to the wrong node is refused at load time.
    std::fs::copy(out.join("node-b.pem"), out.join("node-a.pem")).expect("swap");
    let swapped = FleetPki::from_fleet(&fleet);
    assert!(
        matches!(&swapped, Err(TlsError::CertNameMismatch { node, .. }) if node.as_str() == "node-a"),
        "{swapped:?}"
    );
}
