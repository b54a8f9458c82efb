//! TLS material and QUIC crypto configs: the dev CA, node identities, the
//! fleet's trust roots, rustls/quinn configs, and peer node identity checks.
//!
//! Policy, in one place:
//! - TLS 1.3 only, with the `ring` provider only. (rustls is built without
//!   its `tls12` feature, so TLS 1.2 cannot even be negotiated.)
//! - One server endpoint per node serves both ALPNs, `georelay/1` (SDK
//!   clients, no client certificate) and `georelay-mesh/1` (peer nodes, which
//!   present their node certificate). Client certificates are optional at the
//!   TLS layer; when one is presented rustls verifies its chain against the
//!   fleet CA. The relay then requires one on mesh connections and checks
//!   the name with [`peer_node_id`] or [`identify_peer`].
//! - Every node certificate names its node id as a DNS name, and clients
//!   connect with the target node id as the server name.
//! - Private keys live in memory; `Debug` never prints them and nothing here
//!   logs them. Only `georelay certs` writes keys to disk, because the
//!   operator asked.

mod dev_ca;
mod fleet;
mod reload;
mod transport;

use std::fmt;
use std::sync::Arc;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;

pub use dev_ca::{CLOCK_SKEW, CertValidity, DevCa};
pub use fleet::FleetPki;
pub use reload::{NodeTls, Rotation, quic_server_config};
pub use transport::{
    TransportKind, TransportLimits, apply_handshake_limits, client_transport_config,
    mesh_transport_config, transport_config,
};

use crate::error::ErrorCode;
use crate::ids::NodeId;
use crate::wire::{ALPN_CLIENT, ALPN_MESH};

/// What went wrong while making or checking TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not generate a key or sign a certificate.
    #[error("cannot generate certificate: {0}")]
    Generate(#[source] rcgen::Error),
    /// A node id is not usable as a DNS name; the config loader should have
    /// rejected it.
    #[error("node id {0} is not a valid DNS name for a certificate")]
    InvalidNodeName(NodeId),
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file, as configured.
        path: std::path::PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// `[tls]` is configured but names no certificate/key for this node.
    #[error("no certificate configured for node {0}: set [tls] dir or the node's cert/key")]
    MissingNodeCert(NodeId),
    /// A configured node certificate does not name its node.
    #[error("certificate {path} does not name node {node}")]
    CertNameMismatch {
        /// The node the certificate was configured for.
        node: NodeId,
        /// The certificate file.
        path: std::path::PathBuf,
    },
    /// rustls refused a config (e.g. a key that does not match its
    /// certificate).
    #[error("TLS config: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. empty roots).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The server-certificate verifier could not be built (e.g. empty roots).
    #[error("server certificate verifier: {0}")]
    ServerVerifier(#[source] rustls::server::VerifierBuilderError),
    /// The provider lacks the cipher suite QUIC needs for Initial packets.
    #[error("QUIC crypto: {0}")]
    Quic(#[from] NoInitialCipherSuite),
    /// A mesh peer completed the handshake without a client certificate.
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    /// The peer's certificate is valid for the fleet CA but names another
    /// node than the one expected.
    #[error("peer certificate does not name {expected}")]
    WrongPeer {
        /// The node id the connection was supposed to come from.
        expected: NodeId,
    },
    /// The peer's certificate names none of the fleet's nodes.
    #[error("peer certificate names no node of this fleet")]
    UnknownPeer,
    /// The peer's certificate could not be parsed.
    #[error("peer certificate: {0}")]
    BadPeerCertificate(webpki::Error),
    /// The wall clock reads a time no certificate can start at.
    #[error("the system clock is outside the range of certificate dates")]
    ClockOutOfRange,
}

impl TlsError {
    /// The stable code a peer is told when this error refuses it.
    pub fn code(&self) -> ErrorCode {
        match self {
            TlsError::NoPeerCertificate
            | TlsError::WrongPeer { .. }
            | TlsError::UnknownPeer
            | TlsError::BadPeerCertificate(_) => ErrorCode::Unauthorized,
            _ => ErrorCode::InternalError,
        }
    }
}

/// A node's certificate chain (leaf first) and private key. `Debug` elides
/// the key.
pub struct NodeIdentity {
    /// The leaf certificate first, then any intermediates (not the root).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl NodeIdentity {
    /// The certificate chain as PEM, leaf first (`<node>.pem`).
    pub fn cert_chain_pem(&self) -> String {
        self.cert_chain
            .iter()
            .map(|cert| pem_encode("CERTIFICATE", cert.as_ref()))
            .collect()
    }

    /// The private key as PEM (`<node>.key`). Only `georelay certs` calls
    /// this.
    pub fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem_encode(label, self.key.secret_der())
    }
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("certificates", &self.cert_chain.len())
            .field("key", &"[elided]")
            .finish()
    }
}

/// The SHA-256 fingerprint of a certificate's DER: uppercase hex pairs
/// separated by colons (`AB:CD:...`), as `openssl x509 -fingerprint -sha256`
/// prints it.
pub fn fingerprint_sha256(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The crypto provider of every config made here: ring, explicitly.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default rustls provider, for code that
/// builds rustls configs without naming a provider. Idempotent.
pub fn install_default_provider() {
    // An error only means a provider is already installed, which is fine.
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// The rustls side of [`server_config`]: TLS 1.3, both ALPNs, optional
/// client certificates verified against `roots`.
pub(crate) fn rustls_server_config(
    identity: &NodeIdentity,
    roots: Arc<RootCertStore>,
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_CLIENT.to_vec(), ALPN_MESH.to_vec()];
    Ok(config)
}

/// The rustls side of the client configs: TLS 1.3, servers verified against
/// `roots`, a client certificate when `identity` is given.
pub(crate) fn rustls_client_config(
    identity: Option<&NodeIdentity>,
    roots: Arc<RootCertStore>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => {
            builder.with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The QUIC server config of a node: one endpoint for SDK clients
/// (`georelay/1`) and mesh peers (`georelay-mesh/1`). Client certificates
/// are optional here; mesh connections must be checked with
/// [`peer_node_id`] or [`identify_peer`] after the handshake.
pub fn server_config(
    identity: &NodeIdentity,
    roots: Arc<RootCertStore>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = QuicServerConfig::try_from(rustls_server_config(identity, roots)?)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// The QUIC config of an SDK client: ALPN `georelay/1`, no client
/// certificate. Connect with the target node id as the server name.
pub fn client_config(
    roots: Arc<RootCertStore>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    quic_client_config(None, roots, ALPN_CLIENT, transport)
}

/// The QUIC config of a node dialing a mesh peer: ALPN `georelay-mesh/1`,
/// presenting `identity`. Connect with the peer's node id as the server name.
pub fn mesh_client_config(
    identity: &NodeIdentity,
    roots: Arc<RootCertStore>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    quic_client_config(Some(identity), roots, ALPN_MESH, transport)
}

fn quic_client_config(
    identity: Option<&NodeIdentity>,
    roots: Arc<RootCertStore>,
    alpn: &[u8],
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = QuicClientConfig::try_from(rustls_client_config(identity, roots, alpn)?)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// The ALPN the peer negotiated on `conn`, if any (`georelay/1` or
/// `georelay-mesh/1`).
pub fn negotiated_alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// Checks that the peer of `conn` presented a certificate naming `expected`.
/// The chain was already verified against the fleet CA by rustls during the
/// handshake; this checks the name, so that node X cannot pose as node Y.
pub fn peer_node_id(conn: &quinn::Connection, expected: &NodeId) -> Result<(), TlsError> {
    let leaf = peer_leaf(conn)?;
    if names_node(&leaf, expected)? {
        Ok(())
    } else {
        Err(TlsError::WrongPeer {
            expected: expected.clone(),
        })
    }
}

/// Finds which of `candidates` (the fleet's node ids) the peer's
/// certificate names, for an accepting node that does not know yet who
/// dialed it. Exactly one must match.
pub fn identify_peer<'a>(
    conn: &quinn::Connection,
    candidates: impl IntoIterator<Item = &'a NodeId>,
) -> Result<NodeId, TlsError> {
    let leaf = peer_leaf(conn)?;
    let mut named = None;
    for node in candidates {
        if names_node(&leaf, node)? {
            if named.is_some() {
                return Err(TlsError::UnknownPeer);
            }
            named = Some(node.clone());
        }
    }
    named.ok_or(TlsError::UnknownPeer)
}

fn peer_leaf(conn: &quinn::Connection) -> Result<CertificateDer<'static>, TlsError> {
    conn.peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.into_iter().next())
        .ok_or(TlsError::NoPeerCertificate)
}

/// Whether `cert` is valid for the DNS name `node`.
pub(crate) fn names_node(cert: &CertificateDer<'_>, node: &NodeId) -> Result<bool, TlsError> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(TlsError::BadPeerCertificate)?;
    let Ok(name) = ServerName::try_from(node.as_str()) else {
        return Ok(false);
    };
    Ok(parsed.verify_is_valid_for_subject_name(&name).is_ok())
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `supported_versions` extension (type 43) of a ClientHello record.
    fn offered_versions(record: &[u8]) -> Vec<u16> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> &'a [u8] {
            let (head, tail) = bytes.split_at(n);
            *bytes = tail;
            head
        }
        fn length(bytes: &mut &[u8], width: usize) -> usize {
            take(bytes, width)
                .iter()
                .fold(0, |acc, byte| acc << 8 | usize::from(*byte))
        }
        let mut hello = record;
        assert_eq!(take(&mut hello, 1), [22], "a handshake record");
        take(&mut hello, 4); // legacy record version, record length
        assert_eq!(take(&mut hello, 1), [1], "a ClientHello");
        take(&mut hello, 3 + 2 + 32); // length, legacy version, random
        for width in [1, 2, 1] {
            // session id, cipher suites, compression methods
            let len = length(&mut hello, width);
            take(&mut hello, len);
        }
        let extensions_len = length(&mut hello, 2);
        let mut extensions = take(&mut hello, extensions_len);
        while !extensions.is_empty() {
            let kind = length(&mut extensions, 2);
            let len = length(&mut extensions, 2);
            let mut body = take(&mut extensions, len);
            if kind == 43 {
                let list_len = length(&mut body, 1);
                return take(&mut body, list_len)
                    .chunks(2)
                    .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                    .collect();
            }
        }
        Vec::new()
    }

    #[test]
    fn clients_offer_tls_1_3_only_and_servers_negotiate_it() {
        let ca = DevCa::generate().expect("dev CA");
        let node = NodeId::new("node-a");
        let identity = ca.issue_node(&node).expect("issue");
        let mut roots = RootCertStore::empty();
        roots.add(ca.ca_cert().clone()).expect("root");
        let roots = Arc::new(roots);

        let client_config =
            rustls_client_config(Some(&identity), roots.clone(), ALPN_MESH).expect("client config");
        let server_config = rustls_server_config(&identity, roots).expect("server config");
        let name = ServerName::try_from("node-a").expect("name");
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), name).expect("client");
        let mut server = rustls::ServerConnection::new(Arc::new(server_config)).expect("server");

        let mut hello = Vec::new();
        client.write_tls(&mut hello).expect("ClientHello");
        assert_eq!(
            offered_versions(&hello),
            vec![0x0304],
            "only TLS 1.3 offered"
        );

        // Finish the handshake in memory, in a bounded number of flights.
        let mut to_server = hello;
        for _flight in 0..4 {
            server
                .read_tls(&mut to_server.as_slice())
                .expect("server reads");
            server.process_new_packets().expect("server accepts");
            let mut to_client = Vec::new();
            server.write_tls(&mut to_client).expect("server writes");
            client
                .read_tls(&mut to_client.as_slice())
                .expect("client reads");
            client.process_new_packets().expect("client accepts");
            to_server = Vec::new();
            client.write_tls(&mut to_server).expect("client writes");
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(!server.is_handshaking());
        assert_eq!(
            server.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(server.alpn_protocol(), Some(ALPN_MESH));
        let peer = server
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("client cert");
        assert!(names_node(peer, &node).expect("parse"));
        assert!(!names_node(peer, &NodeId::new("node-b")).expect("parse"));
    }

    #[test]
    fn debug_output_never_shows_private_keys() {
        let ca = DevCa::generate().expect("dev CA");
        let identity = ca.issue_node(&NodeId::new("node-a")).expect("issue");
        let key_body: String = identity.key_pem().lines().nth(1).unwrap_or("").to_owned();
        let ca_key_body: String = ca.key_pem().lines().nth(1).unwrap_or("").to_owned();
        assert!(key_body.len() > 16 && ca_key_body.len() > 16);
        let printed = format!("{identity:?} {:?} {ca:?}", identity.clone());
        assert!(!printed.contains(&key_body), "{printed}");
        assert!(!printed.contains(&ca_key_body), "{printed}");
        assert!(printed.contains(&ca.fingerprint_sha256()));
    }

    #[test]
    fn pem_round_trips_through_the_pki_types_parser() {
        use rustls::pki_types::pem::PemObject as _;
        let ca = DevCa::generate().expect("dev CA");
        let identity = ca
            .issue_node_with_ip(
                &NodeId::new("node-a"),
                Some("127.10.0.1".parse().expect("ip")),
            )
            .expect("issue");
        let certs = CertificateDer::pem_slice_iter(identity.cert_chain_pem().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certs parse");
        assert_eq!(certs, identity.cert_chain);
        let key = PrivateKeyDer::from_pem_slice(identity.key_pem().as_bytes()).expect("key");
        assert_eq!(key.secret_der(), identity.key.secret_der());
        let parsed = webpki::EndEntityCert::try_from(&certs[0]).expect("parse");
        let ip = ServerName::try_from("127.10.0.1").expect("ip name");
        assert!(parsed.verify_is_valid_for_subject_name(&ip).is_ok());
        let ca_cert = CertificateDer::from_pem_slice(ca.ca_pem().as_bytes()).expect("ca");
        assert_eq!(&ca_cert, ca.ca_cert());
        assert_eq!(fingerprint_sha256(&ca_cert), ca.fingerprint_sha256());
    }

    #[test]
    fn fingerprints_are_colon_separated_uppercase_sha256() {
        let cert = CertificateDer::from(b"abc".to_vec());
        assert_eq!(
            fingerprint_sha256(&cert),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }
}
