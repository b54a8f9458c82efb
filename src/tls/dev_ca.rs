//! The development certificate authority: a CA and node certificates made in
//! memory with rcgen, so that a fresh clone runs with no manual step.
//!
//! Nothing here touches the disk; `georelay certs` is the only caller that
//! writes the PEM it gets from [`DevCa::ca_pem`], [`DevCa::key_pem`] and
//! [`NodeIdentity::key_pem`].

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{NodeIdentity, TlsError, fingerprint_sha256};
use crate::ids::NodeId;

/// The common name of every CA that [`DevCa::generate`] makes.
const DEV_CA_COMMON_NAME: &str = "georelay development CA";

/// A certificate authority generated in memory. Its private key is never
/// printed: `Debug` shows only the fingerprint.
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    fingerprint: String,
}

impl DevCa {
    /// Generates a fresh CA (ECDSA P-256) that may sign node certificates only
    /// (path length 0).
    pub fn generate() -> Result<DevCa, TlsError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, DEV_CA_COMMON_NAME);
        name.push(DnType::OrganizationName, "georelay");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(TlsError::Generate)?;
        let fingerprint = fingerprint_sha256(issuer.der());
        Ok(DevCa {
            issuer,
            fingerprint,
        })
    }

    /// Issues a certificate for `node` whose DNS name is the node id, usable
    /// for both server and client authentication.
    pub fn issue_node(&self, node: &NodeId) -> Result<NodeIdentity, TlsError> {
        self.issue_node_with_ip(node, None)
    }

    /// Like [`DevCa::issue_node`], and also names `ip` (the node's listen
    /// address) as an IP subject alternative name when given.
    pub fn issue_node_with_ip(
        &self,
        node: &NodeId,
        ip: Option<IpAddr>,
    ) -> Result<NodeIdentity, TlsError> {
        let dns_name = node
            .as_str()
            .to_owned()
            .try_into()
            .map_err(|_| TlsError::InvalidNodeName(node.clone()))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node.as_str());
        params.distinguished_name = name;
        params.subject_alt_names = vec![SanType::DnsName(dns_name)];
        params
            .subject_alt_names
            .extend(ip.map(|ip| SanType::IpAddress(ip.to_canonical())));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(TlsError::Generate)?;
        Ok(NodeIdentity {
            cert_chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// The CA certificate (DER), to put in a root store.
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        self.issuer.der()
    }

    /// The CA certificate as PEM (`ca.pem`).
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA private key as PKCS#8 PEM (`ca.key`). Only `georelay certs`
    /// calls this, because the operator asked for the key on disk.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The SHA-256 fingerprint of the CA certificate's DER: uppercase hex
    /// pairs separated by colons, as `openssl x509 -fingerprint -sha256`
    /// prints it.
    pub fn fingerprint_sha256(&self) -> String {
        self.fingerprint.clone()
    }
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("fingerprint_sha256", &self.fingerprint)
            .field("key", &"[elided]")
            .finish()
    }
}
