//! The development certificate authority: a CA and node certificates made in
//! memory with rcgen, so that a fresh clone runs with no manual step.
//!
//! Nothing here touches the disk; `georelay certs` is the only caller that
//! writes the PEM it gets from [`DevCa::ca_pem`], [`DevCa::key_pem`] and
//! [`NodeIdentity::key_pem`].
//!
//! Certificates are strict DER that any RFC 5280 parser accepts: no field
//! holds its DEFAULT value explicitly (node certificates carry no
//! BasicConstraints at all, which means "not a CA"), and validity is bounded
//! by [`CertValidity`]: node certificates 90 days by default and at most 398,
//! the CA at most 10 years. Validity starts [`CLOCK_SKEW`] before issuance so
//! that a peer whose clock is slightly behind still accepts a fresh
//! certificate.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{NodeIdentity, TlsError, fingerprint_sha256};
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::config::{MAX_CA_CERT_DAYS, MAX_NODE_CERT_DAYS, TlsConfig};
use crate::ids::NodeId;

/// How far before "now" every certificate's validity starts.
pub const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// How long the certificates a [`DevCa`] makes are valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertValidity {
    /// Node certificates: 1 to [`MAX_NODE_CERT_DAYS`] days (default 90).
    pub node_days: u32,
    /// The CA certificate: 1 to [`MAX_CA_CERT_DAYS`] days (default 3650).
    pub ca_days: u32,
}

impl Default for CertValidity {
    fn default() -> Self {
        CertValidity::from_config(&TlsConfig::default())
    }
}

impl CertValidity {
    /// The validity `[tls]` configures (`node_cert_days`, `ca_cert_days`),
    /// clamped to the limits (the config loader already refuses more).
    pub fn from_config(tls: &TlsConfig) -> CertValidity {
        CertValidity {
            node_days: tls.node_cert_days.clamp(1, MAX_NODE_CERT_DAYS),
            ca_days: tls.ca_cert_days.clamp(1, MAX_CA_CERT_DAYS),
        }
    }
}

/// The common name of every CA that [`DevCa::generate`] makes.
const DEV_CA_COMMON_NAME: &str = "georelay development CA";

/// A certificate authority generated in memory. Its private key is never
/// printed: `Debug` shows only the fingerprint.
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    fingerprint: String,
    clock: SharedClock,
    validity: CertValidity,
}

impl DevCa {
    /// Generates a fresh CA (ECDSA P-256) that may sign node certificates only
    /// (path length 0), with the default [`CertValidity`] and the system
    /// clock.
    pub fn generate() -> Result<DevCa, TlsError> {
        Self::generate_with(std::sync::Arc::new(SystemClock), CertValidity::default())
    }

    /// Like [`DevCa::generate`], with validity measured on `clock` (read
    /// when the CA and each node certificate are made).
    pub fn generate_with(clock: SharedClock, validity: CertValidity) -> Result<DevCa, TlsError> {
        let mut params = CertificateParams::default();
        set_validity(&mut params, clock.as_ref(), validity.ca_days)?;
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
            clock,
            validity,
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
        set_validity(&mut params, self.clock.as_ref(), self.validity.node_days)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node.as_str());
        params.distinguished_name = name;
        params.subject_alt_names = vec![SanType::DnsName(dns_name)];
        params
            .subject_alt_names
            .extend(ip.map(|ip| SanType::IpAddress(ip.to_canonical())));
        // No BasicConstraints: an explicit `cA = FALSE` is a DEFAULT value,
        // which DER forbids and strict parsers refuse.
        params.is_ca = IsCa::NoCa;
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

/// Validity from [`CLOCK_SKEW`] before `clock`'s now, for `days` days.
fn set_validity(
    params: &mut CertificateParams,
    clock: &dyn Clock,
    days: u32,
) -> Result<(), TlsError> {
    let now = i64::try_from(clock.now_unix_secs()).map_err(|_| TlsError::ClockOutOfRange)?;
    let start = now.saturating_sub(CLOCK_SKEW.as_secs() as i64);
    let not_before =
        time::OffsetDateTime::from_unix_timestamp(start).map_err(|_| TlsError::ClockOutOfRange)?;
    params.not_before = not_before;
    params.not_after = not_before + time::Duration::days(i64::from(days));
    Ok(())
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("fingerprint_sha256", &self.fingerprint)
            .field("validity", &self.validity)
            .field("key", &"[elided]")
            .finish()
    }
}
