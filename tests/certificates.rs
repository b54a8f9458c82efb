//! The certificates georelay makes, read by a strict DER parser (RustCrypto
//! `x509-cert`, which refuses DEFAULT values encoded explicitly and any
//! non-canonical encoding): the dev CA that `serve` generates in memory and
//! the files `georelay certs` writes. Each certificate and each of its
//! extensions must decode, re-encode to the same bytes, and carry a bounded
//! validity.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use georelay::config::Fleet;
use georelay::ids::NodeId;
use georelay::tls::{CLOCK_SKEW, FleetPki};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use x509_cert::Certificate;
use x509_cert::der::oid::AssociatedOid as _;
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName,
    SubjectKeyIdentifier,
};

const DAY: Duration = Duration::from_secs(86_400);

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
"#;

/// What a strict reading of one certificate found.
struct Strict {
    is_ca: bool,
    not_before: Duration,
    lifetime: Duration,
}

/// Decodes `der` and every extension strictly; panics with the reason.
fn read_strictly(der: &[u8], what: &str) -> Strict {
    let cert = Certificate::from_der(der).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        cert.to_der().expect("re-encode"),
        der,
        "{what}: DER re-encodes to the same bytes"
    );
    let mut is_ca = false;
    let extensions = cert.tbs_certificate.extensions.clone().unwrap_or_default();
    for ext in &extensions {
        let value = ext.extn_value.as_bytes();
        let oid = ext.extn_id;
        let reencoded = if oid == BasicConstraints::OID {
            BasicConstraints::from_der(value).and_then(|bc| {
                is_ca = bc.ca;
                bc.to_der()
            })
        } else if oid == KeyUsage::OID {
            KeyUsage::from_der(value).and_then(|ku| ku.to_der())
        } else if oid == ExtendedKeyUsage::OID {
            ExtendedKeyUsage::from_der(value).and_then(|eku| eku.to_der())
        } else if oid == SubjectAltName::OID {
            SubjectAltName::from_der(value).and_then(|san| san.to_der())
        } else if oid == AuthorityKeyIdentifier::OID {
            AuthorityKeyIdentifier::from_der(value).and_then(|aki| aki.to_der())
        } else if oid == SubjectKeyIdentifier::OID {
            SubjectKeyIdentifier::from_der(value).and_then(|ski| ski.to_der())
        } else {
            panic!("{what}: unexpected extension {oid}")
        };
        // DER omits DEFAULT values: an extension that held one explicitly
        // re-encodes shorter.
        let reencoded = reencoded.unwrap_or_else(|e| panic!("{what}: extension {oid}: {e}"));
        assert_eq!(reencoded, value, "{what}: extension {oid} is canonical DER");
    }
    let validity = &cert.tbs_certificate.validity;
    let not_before = validity.not_before.to_unix_duration();
    let not_after = validity.not_after.to_unix_duration();
    Strict {
        is_ca,
        not_before,
        lifetime: not_after - not_before,
    }
}

fn now() -> Duration {
    georelay::clock::wall_now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
}

/// Validity starts at most `CLOCK_SKEW` (and a minute of test time) before
/// now, and not after now.
fn assert_fresh(strict: &Strict, what: &str) {
    let now = now();
    assert!(strict.not_before <= now, "{what} starts in the future");
    assert!(
        strict.not_before + CLOCK_SKEW + Duration::from_secs(60) >= now,
        "{what} starts long before it was made"
    );
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("open PEM")
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

#[test]
fn serve_dev_ca_certificates_pass_a_strict_der_parser() {
    let fleet = Fleet::parse(FLEET, Path::new("regions.toml")).expect("valid fleet");
    let pki = FleetPki::from_fleet(&fleet).expect("dev PKI");
    let ca = pki.dev_ca().expect("no [tls]: a dev CA");
    let strict_ca = read_strictly(ca.ca_cert(), "dev CA");
    assert!(strict_ca.is_ca);
    assert_eq!(strict_ca.lifetime, 3650 * DAY, "the CA lives 10 years");
    assert_fresh(&strict_ca, "dev CA");
    for id in ["node-a", "node-b"] {
        let identity = pki.identity(&NodeId::new(id)).expect("identity");
        let strict = read_strictly(&identity.cert_chain[0], id);
        assert!(!strict.is_ca, "{id} is not a CA");
        assert_eq!(strict.lifetime, 90 * DAY, "{id}: the default 90 days");
        assert_fresh(&strict, id);
    }
}

#[test]
fn georelay_certs_files_pass_a_strict_der_parser_with_the_configured_validity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("regions.toml");
    let text = format!("{FLEET}\n[tls]\nnode_cert_days = 30\nca_cert_days = 365\n");
    std::fs::write(&config, text).expect("write config");
    let out = dir.path().join("certs");
    let status = Command::new(env!("CARGO_BIN_EXE_georelay"))
        .args(["certs", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run georelay certs");
    assert!(status.status.success(), "{status:?}");

    let ca = pem_certs(&out.join("ca.pem"));
    let strict_ca = read_strictly(&ca[0], "ca.pem");
    assert!(strict_ca.is_ca);
    assert_eq!(strict_ca.lifetime, 365 * DAY);
    for id in ["node-a", "node-b"] {
        let chain = pem_certs(&out.join(format!("{id}.pem")));
        let strict = read_strictly(&chain[0], id);
        assert!(!strict.is_ca);
        assert_eq!(strict.lifetime, 30 * DAY);
        assert_fresh(&strict, id);
    }
}

/// The parser above is strict: the encoding georelay used to write (an
/// explicit `cA = FALSE`) is refused by it.
#[test]
fn the_strict_parser_refuses_an_explicit_default_basic_constraint() {
    let mut params = rcgen::CertificateParams::new(vec!["node-a".to_owned()]).expect("params");
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    let refused = std::panic::catch_unwind(|| read_strictly(cert.der(), "explicit cA=FALSE"));
    assert!(refused.is_err(), "explicit DEFAULT must be refused");
}

#[test]
fn validity_beyond_the_limits_is_a_config_error_with_a_position() {
    for (key, value, max) in [("node_cert_days", 399, 398), ("ca_cert_days", 3651, 3650)] {
        let text = format!("{FLEET}\n[tls]\n{key} = {value}\n");
        let errors = Fleet::parse(&text, Path::new("regions.toml")).expect_err("over the limit");
        let printed = errors.to_string();
        assert!(
            printed.contains(&format!("tls.{key}: must be between 1 and {max}")),
            "{printed}"
        );
        assert_eq!(errors.0[0].line, FLEET.lines().count() + 3, "{printed}");
    }
}
