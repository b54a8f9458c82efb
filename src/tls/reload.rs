//! Certificate rotation without a restart: [`NodeTls`] builds a node's QUIC
//! server and mesh-client configs around a swappable identity (the node's
//! certificate chain and key) and swappable trust roots. [`NodeTls::reload`]
//! swaps both; connections made before keep the material they were
//! handshaken with, and every handshake after sees the new material.
//!
//! The configs are built once: the endpoint's server config and the mesh
//! dialers' client config stay the same objects, so a reload needs no
//! `Endpoint::set_server_config` and no restart of dialers.
//!
//! TLS session resumption must not outlive a rotation (a resumed session
//! carries the peer certificate verified under the old roots): the server's
//! session cache belongs to the material and is replaced with it, and mesh
//! dialers do not resume at all.

use std::fmt;
use std::sync::{Arc, RwLock};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::{FleetPki, NodeIdentity, TlsError, fingerprint_sha256, provider};
use crate::config::Fleet;
use crate::ids::NodeId;
use crate::wire::{ALPN_CLIENT, ALPN_MESH};

/// What one [`NodeTls::reload`] changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// SHA-256 fingerprint of the node's leaf certificate before the reload.
    pub old_cert: String,
    /// The fingerprint in force after it.
    pub new_cert: String,
    /// The CA fingerprint before the reload.
    pub old_ca: String,
    /// The CA fingerprint after it.
    pub new_ca: String,
}

impl Rotation {
    /// Whether the node certificate or the CA changed.
    pub fn changed(&self) -> bool {
        self.old_cert != self.new_cert || self.old_ca != self.new_ca
    }
}

/// The material in force: what every new handshake uses.
struct Material {
    key: Arc<CertifiedKey>,
    cert_fingerprint: String,
    ca_fingerprint: String,
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<WebPkiServerVerifier>,
    sessions: Arc<ServerSessionMemoryCache>,
}

/// Resumable server sessions kept per material (rustls's default size).
const SESSION_CACHE_ENTRIES: usize = 256;

/// A node's TLS, rotatable at run time. Cheap to clone (shared state).
#[derive(Clone)]
pub struct NodeTls {
    node: NodeId,
    material: Arc<RwLock<Arc<Material>>>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let material = self.current();
        f.debug_struct("NodeTls")
            .field("node", &self.node)
            .field("cert_sha256", &material.cert_fingerprint)
            .field("ca_sha256", &material.ca_fingerprint)
            .finish()
    }
}

impl NodeTls {
    /// The TLS of `node` from `pki`, which must hold its identity.
    pub fn new(node: &NodeId, pki: &FleetPki) -> Result<NodeTls, TlsError> {
        let material = material(node, pki)?;
        Ok(NodeTls {
            node: node.clone(),
            material: Arc::new(RwLock::new(Arc::new(material))),
        })
    }

    /// Puts `pki`'s CA and this node's identity in force for every handshake
    /// from now on. Existing connections are not touched. On error (no
    /// identity for this node, a key that does not match its certificate,
    /// an unusable CA) the old material stays in force.
    pub fn reload(&self, pki: &FleetPki) -> Result<Rotation, TlsError> {
        let next = Arc::new(material(&self.node, pki)?);
        let mut slot = self.material.write().unwrap_or_else(|e| e.into_inner());
        let rotation = Rotation {
            old_cert: slot.cert_fingerprint.clone(),
            new_cert: next.cert_fingerprint.clone(),
            old_ca: slot.ca_fingerprint.clone(),
            new_ca: next.ca_fingerprint.clone(),
        };
        *slot = next;
        Ok(rotation)
    }

    /// Re-reads this node's files as `fleet`'s `[tls]` names them and puts
    /// them in force ([`NodeTls::reload`]). A fleet without `[tls] ca` runs
    /// on an in-memory dev CA that has nothing to re-read: nothing changes.
    pub fn reload_from_files(&self, fleet: &Fleet) -> Result<Rotation, TlsError> {
        if fleet.tls.ca.is_none() {
            let current = self.current();
            return Ok(Rotation {
                old_cert: current.cert_fingerprint.clone(),
                new_cert: current.cert_fingerprint.clone(),
                old_ca: current.ca_fingerprint.clone(),
                new_ca: current.ca_fingerprint.clone(),
            });
        }
        self.reload(&FleetPki::from_fleet_for(fleet, &self.node)?)
    }

    /// The fingerprint of the node certificate in force.
    pub fn cert_fingerprint(&self) -> String {
        self.current().cert_fingerprint.clone()
    }

    /// The rustls server config of the node (both ALPNs, optional client
    /// certificates), reading the material in force at each handshake.
    pub fn rustls_server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(Swapped(self.clone())))
            .with_cert_resolver(self.cert_resolver());
        config.session_storage = Arc::new(Swapped(self.clone()));
        config.alpn_protocols = vec![ALPN_CLIENT.to_vec(), ALPN_MESH.to_vec()];
        Ok(config)
    }

    /// The node's certificate as a rustls resolver: the material in force
    /// at each handshake.
    pub fn cert_resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Swapped(self.clone()))
    }

    /// [`NodeTls::rustls_server_config`] as a QUIC server config.
    pub fn server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, TlsError> {
        quic_server_config(self.rustls_server_config()?, transport)
    }

    /// The QUIC config this node dials mesh peers with (ALPN
    /// `georelay-mesh/1`, presenting its certificate, verifying the peer
    /// against the roots in force).
    pub fn mesh_client_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Swapped(self.clone())))
            .with_client_cert_resolver(Arc::new(Swapped(self.clone())));
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = vec![ALPN_MESH.to_vec()];
        let crypto = QuicClientConfig::try_from(config)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport);
        Ok(config)
    }

    fn current(&self) -> Arc<Material> {
        Arc::clone(&self.material.read().unwrap_or_else(|e| e.into_inner()))
    }
}

fn material(node: &NodeId, pki: &FleetPki) -> Result<Material, TlsError> {
    let identity: NodeIdentity = pki
        .identity(node)
        .ok_or_else(|| TlsError::MissingNodeCert(node.clone()))?;
    let cert_fingerprint = identity
        .cert_chain
        .first()
        .map(fingerprint_sha256)
        .unwrap_or_default();
    let key = CertifiedKey::from_der(identity.cert_chain, identity.key, &provider())?;
    let roots: Arc<RootCertStore> = Arc::clone(&pki.roots);
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .allow_unauthenticated()
        .build()?;
    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(TlsError::ServerVerifier)?;
    Ok(Material {
        key: Arc::new(key),
        cert_fingerprint,
        ca_fingerprint: pki.ca_fingerprint.clone(),
        client_verifier,
        server_verifier,
        sessions: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
    })
}

/// The rustls hooks, each reading the material in force when called.
/// Wraps a rustls server config for QUIC with `transport`.
pub fn quic_server_config(
    tls: rustls::ServerConfig,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

struct Swapped(NodeTls);

impl fmt::Debug for Swapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl ResolvesServerCert for Swapped {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().key))
    }
}

impl StoresServerSessions for Swapped {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.current().sessions.put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.current().sessions.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.current().sessions.take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

impl ResolvesClientCert for Swapped {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().key))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for Swapped {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // SDK clients present no certificate; the relay requires one on mesh
        // connections after the handshake.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; nodes present their one certificate anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().client_verifier.supported_verify_schemes()
    }
}

impl ServerCertVerifier for Swapped {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .server_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .server_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().server_verifier.supported_verify_schemes()
    }
}
