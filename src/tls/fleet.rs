//! The fleet's TLS material: trust roots and node identities, either loaded
//! from the files that `[tls]` names (production, multi-process fleets) or
//! generated in memory by a [`DevCa`] (development, `serve --all`).
//!
//! `[tls] ca_key` is not read here: a relay never needs the CA's private
//! key, only the CA certificate and its own certificate and key.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{CertValidity, DevCa, NodeIdentity, TlsError, fingerprint_sha256, names_node};
use crate::config::Fleet;
use crate::ids::NodeId;

/// Trust roots and node identities of one fleet. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FleetPki {
    /// The CA every node and client trusts.
    pub roots: Arc<RootCertStore>,
    /// SHA-256 fingerprint of the CA certificate (see [`fingerprint_sha256`]).
    pub ca_fingerprint: String,
    identities: BTreeMap<NodeId, NodeIdentity>,
    dev_ca: Option<Arc<DevCa>>,
}

impl FleetPki {
    /// The material of every node of `fleet`: loaded from files when
    /// `[tls] ca` is set, otherwise generated in memory by a fresh dev CA.
    pub fn from_fleet(fleet: &Fleet) -> Result<FleetPki, TlsError> {
        Self::for_nodes(fleet, fleet.nodes.keys())
    }

    /// Like [`FleetPki::from_fleet`] but only for `node`'s identity: a
    /// `serve --node` host needs only its own key on disk.
    pub fn from_fleet_for(fleet: &Fleet, node: &NodeId) -> Result<FleetPki, TlsError> {
        Self::for_nodes(fleet, [node])
    }

    fn for_nodes<'a>(
        fleet: &Fleet,
        nodes: impl IntoIterator<Item = &'a NodeId>,
    ) -> Result<FleetPki, TlsError> {
        match &fleet.tls.ca {
            Some(ca_path) => {
                let (roots, ca_fingerprint) = load_ca(ca_path)?;
                let mut identities = BTreeMap::new();
                for node in nodes {
                    let (cert, key) = fleet
                        .node_cert_paths(node)
                        .ok_or_else(|| TlsError::MissingNodeCert(node.clone()))?;
                    identities.insert(node.clone(), load_identity(node, &cert, &key)?);
                }
                Ok(FleetPki {
                    roots: Arc::new(roots),
                    ca_fingerprint,
                    identities,
                    dev_ca: None,
                })
            }
            None => {
                let nodes = nodes.into_iter().map(|node| {
                    let ip = fleet.nodes.get(node).map(|n| n.listen.ip());
                    (node.clone(), ip)
                });
                Self::generate_with(nodes, CertValidity::from_config(&fleet.tls))
            }
        }
    }

    /// A fresh dev CA and an in-memory identity for each `(node, listen ip)`,
    /// with the default [`CertValidity`].
    pub fn generate(
        nodes: impl IntoIterator<Item = (NodeId, Option<std::net::IpAddr>)>,
    ) -> Result<FleetPki, TlsError> {
        Self::generate_with(nodes, CertValidity::default())
    }

    /// [`FleetPki::generate`] with certificates valid for `validity`.
    pub fn generate_with(
        nodes: impl IntoIterator<Item = (NodeId, Option<std::net::IpAddr>)>,
        validity: CertValidity,
    ) -> Result<FleetPki, TlsError> {
        let ca = DevCa::generate_with(Arc::new(crate::clock::SystemClock), validity)?;
        let mut identities = BTreeMap::new();
        for (node, ip) in nodes {
            let identity = ca.issue_node_with_ip(&node, ip)?;
            identities.insert(node, identity);
        }
        let mut roots = RootCertStore::empty();
        roots.add(ca.ca_cert().clone())?;
        Ok(FleetPki {
            roots: Arc::new(roots),
            ca_fingerprint: ca.fingerprint_sha256(),
            identities,
            dev_ca: Some(Arc::new(ca)),
        })
    }

    /// The certificate and key of `node`, if this fleet material has it.
    pub fn identity(&self, node: &NodeId) -> Option<NodeIdentity> {
        self.identities.get(node).cloned()
    }

    /// The in-memory CA, when the material was generated rather than loaded.
    /// In-process clients (tests, `serve --all` demos) trust its roots.
    pub fn dev_ca(&self) -> Option<&DevCa> {
        self.dev_ca.as_deref()
    }

    /// The root store of a CA file (PEM, one or more certificates), for SDK
    /// clients and loadgen.
    pub fn load_roots(ca_path: &Path) -> Result<RootCertStore, TlsError> {
        load_ca(ca_path).map(|(roots, _fingerprint)| roots)
    }
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| file_error(path, err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| file_error(path, err))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in file"));
    }
    Ok(certs)
}

fn load_ca(path: &Path) -> Result<(RootCertStore, String), TlsError> {
    let certs = read_certs(path)?;
    let fingerprint = fingerprint_sha256(&certs[0]);
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|err| file_error(path, format!("not a usable CA certificate: {err}")))?;
    }
    Ok((roots, fingerprint))
}

fn load_identity(node: &NodeId, cert: &Path, key: &Path) -> Result<NodeIdentity, TlsError> {
    let cert_chain = read_certs(cert)?;
    if !names_node(&cert_chain[0], node).map_err(|err| file_error(cert, err))? {
        return Err(TlsError::CertNameMismatch {
            node: node.clone(),
            path: cert.to_path_buf(),
        });
    }
    // The error of a key file never includes its contents.
    let key = PrivateKeyDer::from_pem_file(key).map_err(|err| file_error(key, err))?;
    Ok(NodeIdentity { cert_chain, key })
}
