//! Standard JWTs (RFC 7519) as client tokens, next to `gr1`: `HS256` under
//! the app's secret, `ES256` or `EdDSA` under the app's configured public
//! key. Signature checks and the `aud` rule are the `jsonwebtoken` crate's
//! (ring backend, the crypto provider the relay already uses); the claims
//! the relay relies on and the clock checks are done here, against the
//! caller's `now` (so only `crate::clock` reads time).
//!
//! Claims: `iss` = app id, `sub` = user id, `aud` = `"georelay"` (a string,
//! or an array containing it), `exp` (required), `nbf` (optional),
//! `channel`, `role` (`"publish"` or `"subscribe"`). Other claims (`iat`,
//! `jti`, ...) are ignored. `exp` and `nbf` are checked with
//! [`JWT_LEEWAY_SECS`] of leeway for clock skew.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use super::{Claims, Field, MAX_TOKEN_LEN, Role, TokenError, TokenKey, check_field};
use crate::config::JwtKeyAlgorithm;
use crate::ids::AppId;

/// The audience every georelay JWT must name.
pub const JWT_AUDIENCE: &str = "georelay";

/// Clock-skew leeway, in seconds, for `exp` and `nbf`: a JWT is accepted
/// until `exp + 30` and from `nbf - 30`.
pub const JWT_LEEWAY_SECS: u64 = 30;

/// The claims georelay reads from a JWT.
#[derive(Deserialize)]
struct ReceivedClaims {
    sub: String,
    exp: u64,
    nbf: Option<u64>,
    channel: String,
    role: String,
}

/// Just the issuer, read before the key is known.
#[derive(Deserialize)]
struct Issuer {
    iss: String,
}

/// The claims `georelay token --format jwt` signs.
#[derive(Serialize)]
struct MintedClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    channel: &'a str,
    role: &'a str,
}

/// A key that signs JWTs: the app's secret (`HS256`) or a PKCS#8 private
/// key (`ES256` with P-256, `EdDSA` with Ed25519). `Debug` never prints it.
pub struct JwtSigningKey {
    algorithm: Algorithm,
    key: EncodingKey,
}

impl std::fmt::Debug for JwtSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtSigningKey({:?}, <redacted>)", self.algorithm)
    }
}

impl JwtSigningKey {
    /// `HS256` with the app's secret bytes.
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            algorithm: Algorithm::HS256,
            key: EncodingKey::from_secret(secret),
        }
    }

    /// A PEM `PRIVATE KEY` (PKCS#8) holding a P-256 (`ES256`) or Ed25519
    /// (`EdDSA`) key, e.g. from `openssl genpkey -algorithm ed25519`.
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<Self, String> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem)
            .map_err(|_| "no PEM \"PRIVATE KEY\" (PKCS#8) block".to_owned())?;
        let der = der.secret_pkcs8_der();
        let rng = ring::rand::SystemRandom::new();
        if EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng).is_ok()
        {
            return Ok(Self {
                algorithm: Algorithm::ES256,
                key: EncodingKey::from_ec_der(der),
            });
        }
        if Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok() {
            return Ok(Self {
                algorithm: Algorithm::EdDSA,
                key: EncodingKey::from_ed_der(der),
            });
        }
        Err("unsupported private key: expected ECDSA P-256 or Ed25519 in PKCS#8".to_owned())
    }

    /// The JOSE `alg` this key signs with.
    pub fn algorithm_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
            _ => "HS256",
        }
    }
}

/// Signs `claims` as a JWT issued at `issued_at` (unix seconds), with
/// `exp` = `claims.expires_at`.
pub fn mint_jwt(claims: &Claims, key: &JwtSigningKey, issued_at: u64) -> Result<String, String> {
    let body = MintedClaims {
        iss: claims.app.as_str(),
        sub: &claims.user,
        aud: JWT_AUDIENCE,
        iat: issued_at,
        exp: claims.expires_at,
        channel: &claims.channel,
        role: claims.role.as_str(),
    };
    jsonwebtoken::encode(&Header::new(key.algorithm), &body, &key.key)
        .map_err(|err| format!("cannot sign the JWT: {err}"))
}

/// Verifies a JWT; see the module docs for the rules and
/// [`super::verify`] for the order of the checks.
pub(super) fn verify_jwt(
    token: &str,
    keys: &dyn Fn(&AppId) -> Option<TokenKey>,
    expected_app: Option<&AppId>,
    now_unix: u64,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("token longer than 4096 bytes"));
    }
    let algorithm = header_algorithm(token)?;
    let app = AppId::new(issuer(token, algorithm.jose())?);
    check_field(Field::App, app.as_str())?;
    let key = keys(&app).ok_or_else(|| TokenError::UnknownApp(app.clone()))?;
    let decoding_key = match algorithm {
        Accepted::Hs256 => &key.jwt_secret,
        Accepted::PublicKey(wanted) => match &key.public {
            Some((configured, public)) if *configured == wanted => public,
            _ => {
                return Err(TokenError::AlgorithmNotAllowed(format!(
                    "app {app} has no {} public key configured",
                    wanted.jose_name()
                )));
            }
        },
    };

    let mut validation = Validation::new(algorithm.jose());
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_audience(&[JWT_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let received = jsonwebtoken::decode::<ReceivedClaims>(token, decoding_key, &validation)
        .map_err(|err| match err.kind() {
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) => TokenError::Malformed(match claim.as_str() {
                "exp" => "JWT lacks the exp claim",
                "aud" => "JWT lacks the aud claim",
                "sub" => "JWT lacks the sub claim",
                _ => "JWT lacks the iss claim",
            }),
            ErrorKind::Json(_) | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                TokenError::Malformed("JWT claims lack channel or role, or have the wrong types")
            }
            ErrorKind::InvalidToken => TokenError::Malformed("not a JWT: expected three parts"),
            _ => TokenError::BadSignature,
        })?
        .claims;

    if let Some(expected) = expected_app
        && *expected != app
    {
        return Err(TokenError::WrongApp {
            token_app: app,
            expected: expected.clone(),
        });
    }
    check_field(Field::User, &received.sub)?;
    check_field(Field::Channel, &received.channel)?;
    let role: Role = received
        .role
        .parse()
        .map_err(|_| TokenError::Malformed("role must be \"publish\" or \"subscribe\""))?;
    if now_unix >= received.exp.saturating_add(JWT_LEEWAY_SECS) {
        return Err(TokenError::Expired {
            expired_at: received.exp,
            now: now_unix,
        });
    }
    if let Some(not_before) = received.nbf
        && not_before > now_unix.saturating_add(JWT_LEEWAY_SECS)
    {
        return Err(TokenError::NotYetValid {
            not_before,
            now: now_unix,
        });
    }
    Ok(Claims {
        app,
        channel: received.channel,
        user: received.sub,
        role,
        expires_at: received.exp,
    })
}

/// The algorithms georelay accepts.
#[derive(Clone, Copy)]
enum Accepted {
    /// HMAC-SHA256 under the app's secret.
    Hs256,
    /// A signature under the app's configured public key.
    PublicKey(JwtKeyAlgorithm),
}

impl Accepted {
    fn jose(self) -> Algorithm {
        match self {
            Accepted::Hs256 => Algorithm::HS256,
            Accepted::PublicKey(JwtKeyAlgorithm::Es256) => Algorithm::ES256,
            Accepted::PublicKey(JwtKeyAlgorithm::EdDsa) => Algorithm::EdDSA,
        }
    }
}

/// The header's `alg`, if it is one georelay accepts.
fn header_algorithm(token: &str) -> Result<Accepted, TokenError> {
    match jsonwebtoken::decode_header(token) {
        Ok(header) => match header.alg {
            Algorithm::HS256 => Ok(Accepted::Hs256),
            Algorithm::ES256 => Ok(Accepted::PublicKey(JwtKeyAlgorithm::Es256)),
            Algorithm::EdDSA => Ok(Accepted::PublicKey(JwtKeyAlgorithm::EdDsa)),
            other => Err(TokenError::AlgorithmNotAllowed(format!(
                "alg {other:?} is not accepted (HS256, ES256 or EdDSA)"
            ))),
        },
        // jsonwebtoken refuses to parse a header whose alg it does not
        // know (`none` among them); name it in the reason.
        Err(_) => match raw_header_alg(token) {
            Some(alg) => Err(TokenError::AlgorithmNotAllowed(format!(
                "alg {alg:?} is not accepted (HS256, ES256 or EdDSA)"
            ))),
            None => Err(TokenError::Malformed(
                "neither a gr1 token nor a JWT with a valid header",
            )),
        },
    }
}

/// The `alg` string of a header the crate could not parse, for the message.
fn raw_header_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let (header, _) = token.split_once('.')?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let alg = value.get("alg")?.as_str()?;
    // Echoed into messages and logs: short, printable ASCII only.
    Some(
        alg.chars()
            .filter(char::is_ascii_graphic)
            .take(32)
            .collect(),
    )
}

/// Reads `iss` without checking the signature: it only chooses the key.
fn issuer(token: &str, algorithm: Algorithm) -> Result<String, TokenError> {
    let mut peek = Validation::new(algorithm);
    peek.insecure_disable_signature_validation();
    peek.validate_exp = false;
    peek.validate_aud = false;
    peek.required_spec_claims.clear();
    jsonwebtoken::decode::<Issuer>(token, &DecodingKey::from_secret(&[]), &peek)
        .map(|data| data.claims.iss)
        .map_err(|_| TokenError::Malformed("JWT claims lack iss (the app id)"))
}

#[cfg(test)]
mod tests {
    //! JWTs here are built by hand (base64url JSON, signed with ring), not
    //! by `jsonwebtoken`'s encoder, so verification is checked against an
    //! independent minting path.

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::rand::SystemRandom;
    use ring::signature::KeyPair;
    use serde_json::{Value, json};

    use super::*;
    use crate::auth::Keyring;
    use crate::config::JwtPublicKey;

    const NOW: u64 = 1_750_000_000;
    const SECRET: &[u8] = b"acme secret";

    struct Keys {
        ring: Keyring,
        ec: EcdsaKeyPair,
        ed: Ed25519KeyPair,
    }

    fn keys() -> Keys {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("ec key");
        let ec = EcdsaKeyPair::from_pkcs8(alg, ec_pkcs8.as_ref(), &rng).expect("ec key");
        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("ed key");
        let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).expect("ed key");
        let public = |algorithm, raw: &[u8]| JwtPublicKey {
            path: "test.pem".into(),
            algorithm,
            raw: raw.to_vec(),
        };
        let ring = Keyring::from_keys([
            (
                AppId::new("acme-health"),
                TokenKey::new(SECRET)
                    .with_public_key(&public(JwtKeyAlgorithm::Es256, ec.public_key().as_ref())),
            ),
            (
                AppId::new("globex"),
                TokenKey::new(b"globex secret")
                    .with_public_key(&public(JwtKeyAlgorithm::EdDsa, ed.public_key().as_ref())),
            ),
            (AppId::new("plain"), TokenKey::new(b"plain secret")),
        ]);
        Keys { ring, ec, ed }
    }

    fn claims_json() -> Value {
        json!({
            "iss": "acme-health",
            "sub": "alice",
            "aud": "georelay",
            "exp": NOW + 600,
            "channel": "room-1",
            "role": "publish",
        })
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    enum Signer<'a> {
        Hmac(&'a [u8]),
        Ec(&'a EcdsaKeyPair),
        Ed(&'a Ed25519KeyPair),
        Unsigned,
    }

    fn hand_jwt(alg: &str, claims: &Value, signer: Signer<'_>) -> String {
        let signing_input = format!(
            "{}.{}",
            b64(&json!({"alg": alg, "typ": "JWT"})),
            b64(claims)
        );
        let signature = match signer {
            Signer::Hmac(secret) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                ring::hmac::sign(&key, signing_input.as_bytes())
                    .as_ref()
                    .to_vec()
            }
            Signer::Ec(pair) => pair
                .sign(&SystemRandom::new(), signing_input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec(),
            Signer::Ed(pair) => pair.sign(signing_input.as_bytes()).as_ref().to_vec(),
            Signer::Unsigned => Vec::new(),
        };
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn with(changes: &[(&str, Value)]) -> Value {
        let mut claims = claims_json();
        for (key, value) in changes {
            if value.is_null() {
                claims.as_object_mut().map(|map| map.remove(*key));
            } else {
                claims[*key] = value.clone();
            }
        }
        claims
    }

    fn expected() -> Claims {
        Claims {
            app: AppId::new("acme-health"),
            channel: "room-1".to_owned(),
            user: "alice".to_owned(),
            role: Role::Publish,
            expires_at: NOW + 600,
        }
    }

    #[test]
    fn hs256_es256_and_eddsa_tokens_minted_by_hand_are_admitted() {
        let keys = keys();
        let acme = AppId::new("acme-health");
        let hs = hand_jwt("HS256", &claims_json(), Signer::Hmac(SECRET));
        assert_eq!(keys.ring.verify(&hs, Some(&acme), NOW), Ok(expected()));
        let es = hand_jwt("ES256", &claims_json(), Signer::Ec(&keys.ec));
        assert_eq!(keys.ring.verify(&es, Some(&acme), NOW), Ok(expected()));

        let globex = with(&[("iss", json!("globex")), ("role", json!("subscribe"))]);
        let ed = hand_jwt("EdDSA", &globex, Signer::Ed(&keys.ed));
        let claims = keys.ring.verify(&ed, None, NOW).expect("EdDSA admitted");
        assert_eq!(
            (claims.app.as_str(), claims.role),
            ("globex", Role::Subscribe)
        );

        // `aud` may be an array naming georelay; unknown claims are ignored.
        let array = with(&[("aud", json!(["other", "georelay"])), ("jti", json!("x1"))]);
        let token = hand_jwt("HS256", &array, Signer::Hmac(SECRET));
        assert_eq!(keys.ring.verify(&token, None, NOW), Ok(expected()));
    }

    #[test]
    fn tokens_minted_here_verify_for_every_algorithm() {
        let keys = keys();
        let rng = SystemRandom::new();
        let ec_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .expect("ec key");
        let pem = |der: &[u8]| {
            let body = base64::engine::general_purpose::STANDARD.encode(der);
            format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
        };
        let signer =
            JwtSigningKey::from_pkcs8_pem(pem(ec_pkcs8.as_ref()).as_bytes()).expect("P-256 PKCS#8");
        assert_eq!(signer.algorithm_name(), "ES256");
        let ec = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            ec_pkcs8.as_ref(),
            &rng,
        )
        .expect("ec key");
        let ring = Keyring::from_keys([(
            AppId::new("acme-health"),
            TokenKey::new(SECRET).with_public_key(&JwtPublicKey {
                path: "k.pem".into(),
                algorithm: JwtKeyAlgorithm::Es256,
                raw: ec.public_key().as_ref().to_vec(),
            }),
        )]);
        let token = mint_jwt(&expected(), &signer, NOW).expect("mint");
        assert_eq!(ring.verify(&token, None, NOW), Ok(expected()));

        let token = mint_jwt(&expected(), &JwtSigningKey::hs256(SECRET), NOW).expect("mint");
        assert_eq!(keys.ring.verify(&token, None, NOW), Ok(expected()));

        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("ed key");
        let signer = JwtSigningKey::from_pkcs8_pem(pem(ed_pkcs8.as_ref()).as_bytes())
            .expect("Ed25519 PKCS#8");
        assert_eq!(signer.algorithm_name(), "EdDSA");
        assert!(JwtSigningKey::from_pkcs8_pem(b"not a key").is_err());
    }

    #[test]
    fn refused_algorithms_name_the_alg() {
        let keys = keys();
        let none = hand_jwt("none", &claims_json(), Signer::Unsigned);
        let refused = keys.ring.verify(&none, None, NOW);
        assert!(
            matches!(&refused, Err(TokenError::AlgorithmNotAllowed(m)) if m.contains("\"none\"")),
            "{refused:?}"
        );
        let hs384 = hand_jwt("HS384", &claims_json(), Signer::Hmac(SECRET));
        assert!(matches!(
            keys.ring.verify(&hs384, None, NOW),
            Err(TokenError::AlgorithmNotAllowed(_))
        ));
        // An app without a public key takes no asymmetric JWT, and an app
        // with an ES256 key takes no EdDSA one.
        let plain = with(&[("iss", json!("plain"))]);
        let es = hand_jwt("ES256", &plain, Signer::Ec(&keys.ec));
        assert!(matches!(
            keys.ring.verify(&es, None, NOW),
            Err(TokenError::AlgorithmNotAllowed(m)) if m.contains("plain")
        ));
        let ed = hand_jwt("EdDSA", &claims_json(), Signer::Ed(&keys.ed));
        assert!(matches!(
            keys.ring.verify(&ed, None, NOW),
            Err(TokenError::AlgorithmNotAllowed(_))
        ));
    }

    #[test]
    fn forged_altered_and_key_confused_tokens_are_bad_signatures() {
        let keys = keys();
        let wrong_secret = hand_jwt("HS256", &claims_json(), Signer::Hmac(b"globex secret"));
        assert_eq!(
            keys.ring.verify(&wrong_secret, None, NOW),
            Err(TokenError::BadSignature)
        );
        // HS256 "signed" with the app's public key as the HMAC secret.
        let confused = hand_jwt(
            "HS256",
            &claims_json(),
            Signer::Hmac(keys.ec.public_key().as_ref()),
        );
        assert_eq!(
            keys.ring.verify(&confused, None, NOW),
            Err(TokenError::BadSignature)
        );
        // Another channel spliced onto a valid signature.
        let good = hand_jwt("ES256", &claims_json(), Signer::Ec(&keys.ec));
        let (header, rest) = good.split_once('.').expect("three parts");
        let (_, signature) = rest.split_once('.').expect("three parts");
        let spliced = format!(
            "{header}.{}.{signature}",
            b64(&with(&[("channel", json!("room-2"))]))
        );
        assert_eq!(
            keys.ring.verify(&spliced, None, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn audience_app_and_issuer_are_checked() {
        let keys = keys();
        let other_aud = hand_jwt(
            "HS256",
            &with(&[("aud", json!("someone-else"))]),
            Signer::Hmac(SECRET),
        );
        assert_eq!(
            keys.ring.verify(&other_aud, None, NOW),
            Err(TokenError::WrongAudience)
        );
        let good = hand_jwt("HS256", &claims_json(), Signer::Hmac(SECRET));
        let globex = AppId::new("globex");
        assert_eq!(
            keys.ring.verify(&good, Some(&globex), NOW),
            Err(TokenError::WrongApp {
                token_app: AppId::new("acme-health"),
                expected: globex,
            })
        );
        let stranger = hand_jwt(
            "HS256",
            &with(&[("iss", json!("initech"))]),
            Signer::Hmac(SECRET),
        );
        assert_eq!(
            keys.ring.verify(&stranger, None, NOW),
            Err(TokenError::UnknownApp(AppId::new("initech")))
        );
    }

    #[test]
    fn exp_and_nbf_are_checked_with_the_leeway() {
        let keys = keys();
        let at = |changes: &[(&str, Value)], now| {
            let token = hand_jwt("HS256", &with(changes), Signer::Hmac(SECRET));
            keys.ring.verify(&token, None, now)
        };
        let exp = NOW + 600;
        assert!(at(&[], exp + JWT_LEEWAY_SECS - 1).is_ok());
        assert_eq!(
            at(&[], exp + JWT_LEEWAY_SECS),
            Err(TokenError::Expired {
                expired_at: exp,
                now: exp + JWT_LEEWAY_SECS
            })
        );
        let nbf = NOW + 100;
        assert!(at(&[("nbf", json!(nbf))], nbf - JWT_LEEWAY_SECS).is_ok());
        assert_eq!(
            at(&[("nbf", json!(nbf))], nbf - JWT_LEEWAY_SECS - 1),
            Err(TokenError::NotYetValid {
                not_before: nbf,
                now: nbf - JWT_LEEWAY_SECS - 1
            })
        );
    }

    #[test]
    fn missing_or_mistyped_claims_are_malformed() {
        let keys = keys();
        for changes in [
            vec![("exp", Value::Null)],
            vec![("aud", Value::Null)],
            vec![("sub", Value::Null)],
            vec![("channel", Value::Null)],
            vec![("role", json!("admin"))],
            vec![("exp", json!("tomorrow"))],
            vec![("channel", json!(""))],
            vec![("sub", json!("a\nb"))],
        ] {
            let token = hand_jwt("HS256", &with(&changes), Signer::Hmac(SECRET));
            let result = keys.ring.verify(&token, None, NOW);
            assert!(
                matches!(result, Err(TokenError::Malformed(_))),
                "{changes:?}: {result:?}"
            );
        }
        let no_iss = hand_jwt(
            "HS256",
            &with(&[("iss", Value::Null)]),
            Signer::Hmac(SECRET),
        );
        assert!(matches!(
            keys.ring.verify(&no_iss, None, NOW),
            Err(TokenError::Malformed(_))
        ));
        for garbage in ["eyJ", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", &"x".repeat(5000)] {
            assert!(
                matches!(
                    keys.ring.verify(garbage, None, NOW),
                    Err(TokenError::Malformed(_))
                ),
                "{garbage:.20}"
            );
        }
    }
}
