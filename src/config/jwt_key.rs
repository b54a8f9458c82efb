//! An app's JWT verification key (`jwt_public_key_file`): a PEM
//! `PUBLIC KEY` (SubjectPublicKeyInfo) holding an ECDSA P-256 key (`ES256`)
//! or an Ed25519 key (`EdDSA`), read and checked when the config loads so a
//! bad file is reported with its position in `regions.toml`.
//!
//! The key is public: the customer's backend keeps the private key and the
//! relay only verifies. It is held as the raw key bytes the verifier needs
//! (the uncompressed P-256 point, or the 32 Ed25519 bytes).

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::pki_types::pem::PemObject;

/// The DER prefix of a P-256 SubjectPublicKeyInfo with an uncompressed
/// point: `SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING`,
/// then the point `04 || x || y`.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// The uncompressed P-256 point: `04`, then 32 bytes of x and 32 of y.
const P256_POINT_LEN: usize = 65;
/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410):
/// `SEQUENCE { SEQUENCE { id-Ed25519 }, BIT STRING`, then 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const ED25519_KEY_LEN: usize = 32;

/// The JWT algorithm a public key verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JwtKeyAlgorithm {
    /// ECDSA with P-256 and SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl JwtKeyAlgorithm {
    /// The JOSE `alg` name: `ES256` or `EdDSA`.
    pub const fn jose_name(self) -> &'static str {
        match self {
            JwtKeyAlgorithm::Es256 => "ES256",
            JwtKeyAlgorithm::EdDsa => "EdDSA",
        }
    }
}

/// A validated JWT verification key and the file it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtPublicKey {
    /// The resolved path of the PEM file (for messages).
    pub path: PathBuf,
    /// `ES256` or `EdDSA`.
    pub algorithm: JwtKeyAlgorithm,
    /// The raw public key: the uncompressed P-256 point or the Ed25519 key.
    pub raw: Vec<u8>,
}

impl fmt::Debug for JwtPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtPublicKey")
            .field("path", &self.path)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl JwtPublicKey {
    /// Reads and checks the PEM file at `path`. The error says what is wrong
    /// (unreadable, not a PEM public key, or a key type other than P-256 and
    /// Ed25519).
    pub fn load(path: &Path) -> Result<Self, String> {
        let pem =
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        Self::from_pem(&pem, path)
    }

    /// Checks PEM text; `path` is only recorded.
    pub fn from_pem(pem: &[u8], path: &Path) -> Result<Self, String> {
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|_| {
            format!(
                "{} holds no PEM \"PUBLIC KEY\" block (expected a SubjectPublicKeyInfo, \
                 e.g. from `openssl pkey -pubout`)",
                path.display()
            )
        })?;
        let der: &[u8] = spki.as_ref();
        let (algorithm, raw) = if let Some(point) = der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            if point.len() != P256_POINT_LEN || point[0] != 0x04 {
                return Err(format!(
                    "{}: the P-256 key must be an uncompressed point",
                    path.display()
                ));
            }
            (JwtKeyAlgorithm::Es256, point)
        } else if let Some(key) = der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            if key.len() != ED25519_KEY_LEN {
                return Err(format!("{}: truncated Ed25519 key", path.display()));
            }
            (JwtKeyAlgorithm::EdDsa, key)
        } else {
            return Err(format!(
                "{}: unsupported public key type: expected ECDSA P-256 (ES256) or Ed25519 (EdDSA)",
                path.display()
            ));
        };
        Ok(Self {
            path: path.to_path_buf(),
            algorithm,
            raw: raw.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spki_pem(der: &[u8]) -> String {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n")
    }

    #[test]
    fn p256_and_ed25519_keys_are_recognised() {
        let path = Path::new("k.pem");
        let mut p256 = P256_SPKI_PREFIX.to_vec();
        p256.push(0x04);
        p256.extend([7u8; 64]);
        let key = JwtPublicKey::from_pem(spki_pem(&p256).as_bytes(), path);
        assert_eq!(
            key.as_ref().map(|k| k.algorithm),
            Ok(JwtKeyAlgorithm::Es256)
        );
        assert_eq!(key.map(|k| k.raw.len()), Ok(65));

        let mut ed = ED25519_SPKI_PREFIX.to_vec();
        ed.extend([9u8; 32]);
        let key = JwtPublicKey::from_pem(spki_pem(&ed).as_bytes(), path);
        assert_eq!(
            key.map(|k| (k.algorithm, k.raw)),
            Ok((JwtKeyAlgorithm::EdDsa, vec![9u8; 32]))
        );
    }

    #[test]
    fn other_keys_and_non_pem_text_are_refused_with_a_reason() {
        let path = Path::new("k.pem");
        let not_pem = JwtPublicKey::from_pem(b"hello", path)
            .err()
            .unwrap_or_default();
        assert!(not_pem.contains("PUBLIC KEY"), "{not_pem}");

        let mut compressed = P256_SPKI_PREFIX.to_vec();
        compressed.push(0x02);
        compressed.extend([7u8; 32]);
        let message = JwtPublicKey::from_pem(spki_pem(&compressed).as_bytes(), path)
            .err()
            .unwrap_or_default();
        assert!(message.contains("uncompressed"), "{message}");

        // An RSA SubjectPublicKeyInfo starts with another algorithm OID.
        let rsa = [0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86];
        let message = JwtPublicKey::from_pem(spki_pem(&rsa).as_bytes(), path)
            .err()
            .unwrap_or_default();
        assert!(message.contains("unsupported public key type"), "{message}");
    }

    #[test]
    fn the_config_reads_the_key_relative_to_the_file_and_reports_a_bad_one_at_its_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ed = ED25519_SPKI_PREFIX.to_vec();
        ed.extend([3u8; 32]);
        std::fs::create_dir(dir.path().join("keys")).expect("mkdir");
        std::fs::write(dir.path().join("keys/acme.pub.pem"), spki_pem(&ed)).expect("write");
        std::fs::write(dir.path().join("keys/bad.pem"), "not a key").expect("write");
        let config = |file: &str| {
            format!(
                "[regions.eu]\ncountries = [\"DE\"]\n[nodes.eu-1]\nregion = \"eu\"\n\
                 listen = \"127.10.0.1:4433\"\nadmin = \"127.10.0.1:9090\"\n\
                 [apps.acme]\nsecret = \"s\"\nallow_regions = [\"eu\"]\n\
                 jwt_public_key_file = \"{file}\"\n"
            )
        };
        let path = dir.path().join("regions.toml");
        let fleet = crate::config::Fleet::parse(&config("keys/acme.pub.pem"), &path)
            .unwrap_or_else(|err| panic!("{err}"));
        let key = fleet
            .apps
            .values()
            .next()
            .and_then(|app| app.jwt_public_key.clone());
        assert_eq!(
            key.as_ref().map(|k| k.algorithm),
            Some(JwtKeyAlgorithm::EdDsa)
        );
        assert_eq!(
            key.map(|k| k.path),
            Some(dir.path().join("keys/acme.pub.pem"))
        );

        for (file, says) in [
            ("keys/bad.pem", "PUBLIC KEY"),
            ("keys/missing.pem", "cannot read"),
        ] {
            let errors = crate::config::Fleet::parse(&config(file), &path)
                .err()
                .map(|errors| errors.to_string())
                .unwrap_or_default();
            let at = format!("{}:10:23: apps.acme.jwt_public_key_file: ", path.display());
            assert!(errors.contains(&at), "{errors}");
            assert!(errors.contains(says), "{errors}");
        }
    }
}
