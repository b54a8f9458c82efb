//! Certificate rotation without a restart, over real QUIC on loopback: a
//! node's [`NodeTls`] re-reads its files and swaps its certificate (same CA,
//! then a new CA) while a connection made before keeps working, and every
//! handshake after sees the new material — on the server side (SDK clients)
//! and on the mesh-client side (client certificate and peer verification).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use georelay::config::Fleet;
use georelay::ids::NodeId;
use georelay::tls::{
    DevCa, FleetPki, NodeTls, TransportKind, client_config, fingerprint_sha256, transport_config,
};
use quinn::{Connection, Endpoint};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

/// Bounds every network wait.
const STEP: Duration = Duration::from_secs(10);

const FLEET: &str = r#"
[regions.eu]
countries = ["DE"]
[nodes.node-a]
region = "eu"
listen = "127.10.0.1:4433"
admin = "127.10.0.1:9090"
[nodes.node-b]
region = "eu"
listen = "127.10.0.2:4433"
admin = "127.10.0.2:9090"
[tls]
ca = "ca.pem"
dir = "."
"#;

/// Writes `ca.pem` and `<node>.pem`/`.key` for both nodes, issued by `ca`;
/// returns node-a's leaf fingerprint.
fn write_material(dir: &Path, ca: &DevCa) -> String {
    std::fs::write(dir.join("ca.pem"), ca.ca_pem()).expect("write CA");
    let mut fingerprint = String::new();
    for id in ["node-a", "node-b"] {
        let identity = ca.issue_node(&NodeId::new(id)).expect("issue");
        std::fs::write(dir.join(format!("{id}.pem")), identity.cert_chain_pem()).expect("cert");
        std::fs::write(dir.join(format!("{id}.key")), identity.key_pem()).expect("key");
        if id == "node-a" {
            fingerprint = fingerprint_sha256(&identity.cert_chain[0]);
        }
    }
    fingerprint
}

fn roots_of(ca: &DevCa) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.ca_cert().clone()).expect("root");
    Arc::new(roots)
}

fn peer_fingerprint(conn: &Connection) -> String {
    let chain = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .expect("peer certificates");
    fingerprint_sha256(&chain[0])
}

fn client_endpoint() -> Endpoint {
    Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind client")
}

/// Dials `server` as node-a with `config`; on success the server side is
/// accepted too and returned with it.
async fn dial(
    server: &Endpoint,
    config: quinn::ClientConfig,
) -> Result<(Connection, Connection), String> {
    let client = client_endpoint();
    let addr = server.local_addr().expect("server address");
    let dialed = async {
        client
            .connect_with(config, addr, "node-a")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    };
    let accepted = async {
        let incoming = server.accept().await.ok_or("endpoint closed")?;
        incoming.await.map_err(|e| e.to_string())
    };
    let (dialed, accepted) = tokio::time::timeout(STEP, async { tokio::join!(dialed, accepted) })
        .await
        .map_err(|_| "handshake timed out".to_owned())?;
    Ok((dialed?, accepted?))
}

/// One request/response on a fresh bidirectional stream: proves the
/// connection still carries data.
async fn round_trip(client: &Connection, server: &Connection, payload: &[u8]) {
    let exchange = async {
        let (mut send, mut recv) = client.open_bi().await.expect("open stream");
        send.write_all(payload).await.expect("write");
        send.finish().expect("finish");
        let (mut back, mut incoming) = server.accept_bi().await.expect("accept stream");
        let got = incoming.read_to_end(1 << 16).await.expect("read");
        back.write_all(&got).await.expect("echo");
        back.finish().expect("finish echo");
        recv.read_to_end(1 << 16).await.expect("read echo")
    };
    let echoed = tokio::time::timeout(STEP, exchange)
        .await
        .expect("round trip in time");
    assert_eq!(echoed, payload);
}

#[tokio::test]
async fn reload_swaps_the_server_certificate_and_ca_while_connections_continue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("regions.toml");
    std::fs::write(&config, FLEET).expect("write config");
    let ca1 = DevCa::generate().expect("CA 1");
    let cert1 = write_material(dir.path(), &ca1);
    let fleet = Fleet::load(&config).expect("fleet");
    let node_a = NodeId::new("node-a");
    let tls = NodeTls::new(
        &node_a,
        &FleetPki::from_fleet_for(&fleet, &node_a).expect("pki"),
    )
    .expect("node TLS");
    let transport = Arc::new(transport_config(TransportKind::Client));
    let server = Endpoint::server(
        tls.server_config(transport.clone()).expect("server config"),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .expect("bind server");

    let trust1 = client_config(roots_of(&ca1), transport.clone()).expect("client config");
    let (old_client, old_server) = dial(&server, trust1.clone()).await.expect("first dial");
    assert_eq!(peer_fingerprint(&old_client), cert1);

    // Same CA, new node certificate.
    let cert2 = write_material(dir.path(), &ca1);
    let rotation = tls.reload_from_files(&fleet).expect("reload");
    assert!(rotation.changed());
    assert_eq!(
        (rotation.old_cert.as_str(), rotation.new_cert.as_str()),
        (cert1.as_str(), cert2.as_str())
    );
    assert_eq!(rotation.old_ca, rotation.new_ca);
    round_trip(&old_client, &old_server, b"after the first rotation").await;
    let (fresh, _fresh_server) = dial(&server, trust1.clone())
        .await
        .expect("dial after rotation");
    assert_eq!(peer_fingerprint(&fresh), cert2);

    // A new CA: clients that trust only the old one are refused, clients of
    // the new one get the new certificate, the old connection goes on.
    let ca2 = DevCa::generate().expect("CA 2");
    let cert3 = write_material(dir.path(), &ca2);
    let rotation = tls.reload_from_files(&fleet).expect("reload with a new CA");
    assert_ne!(rotation.old_ca, rotation.new_ca);
    assert_eq!(rotation.new_ca, ca2.fingerprint_sha256());
    assert!(
        dial(&server, trust1).await.is_err(),
        "a client of the old CA is refused"
    );
    let trust2 = client_config(roots_of(&ca2), transport).expect("client config");
    let (newest, _newest_server) = dial(&server, trust2).await.expect("dial the new CA");
    assert_eq!(peer_fingerprint(&newest), cert3);
    round_trip(&old_client, &old_server, b"after the CA rotation").await;

    // A broken file set is refused and the material in force stays.
    std::fs::write(dir.path().join("node-a.key"), "not a key").expect("break the key");
    assert!(tls.reload_from_files(&fleet).is_err());
    assert_eq!(tls.cert_fingerprint(), cert3);
}

#[tokio::test]
async fn reload_swaps_the_mesh_client_certificate_and_the_roots_it_verifies_with() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("regions.toml");
    std::fs::write(&config, FLEET).expect("write config");
    write_material(dir.path(), &DevCa::generate().expect("CA 1"));
    let fleet = Fleet::load(&config).expect("fleet");
    let pki = FleetPki::from_fleet(&fleet).expect("pki");
    let node_a = NodeTls::new(&NodeId::new("node-a"), &pki).expect("node-a TLS");
    let node_b = NodeTls::new(&NodeId::new("node-b"), &pki).expect("node-b TLS");
    let mesh_transport = Arc::new(transport_config(TransportKind::Mesh));
    let server = Endpoint::server(
        node_a
            .server_config(mesh_transport.clone())
            .expect("server config"),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .expect("bind node-a");
    let mesh = node_b
        .mesh_client_config(mesh_transport)
        .expect("mesh client config");

    let (_link, accepted) = dial(&server, mesh.clone()).await.expect("mesh dial");
    let presented = peer_fingerprint(&accepted);
    assert_eq!(
        presented,
        node_b.cert_fingerprint(),
        "node-b presented its certificate"
    );

    // node-a moves to a new CA first: node-b's old certificate and old roots
    // no longer fit, so the dial fails.
    write_material(dir.path(), &DevCa::generate().expect("CA 2"));
    node_a.reload_from_files(&fleet).expect("reload node-a");
    assert!(dial(&server, mesh.clone()).await.is_err());

    // node-b reloads too; the same client config object now works.
    let rotation = node_b.reload_from_files(&fleet).expect("reload node-b");
    assert!(rotation.changed());
    let (_link, accepted) = dial(&server, mesh)
        .await
        .expect("mesh dial after both reloads");
    assert_eq!(peer_fingerprint(&accepted), rotation.new_cert);
}
