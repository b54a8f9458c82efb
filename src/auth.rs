//! Signed client tokens: minting, verification, and the per-app key ring.
//!
//! A token binds an app, a channel, a user, a role and an expiry. Two formats
//! are accepted, told apart by the token text ([`verify`]): the compact `gr1`
//! format (below) and standard JWTs ([`mint_jwt`]; `HS256` under the app's
//! secret, or `ES256`/`EdDSA` under a public key configured for the app). A
//! `gr1` token is signed with HMAC-SHA256 under the app's secret; its format
//! is specified byte by byte in `docs/TOKENS.md`:
//!
//! ```text
//! gr1.<base64url-nopad(payload)>.<base64url-nopad(HMAC-SHA256(key, "gr1." + payload_b64))>
//! payload = str(app) str(channel) str(user) u8(role) u64be(expires_at)
//! str(s)  = u16be(len(s)) utf8(s)
//! ```
//!
//! Verification returns a typed [`TokenError`] so that the relay and the
//! metadata can tell an expired token from a forged one; every variant maps
//! to the wire code `UNAUTHORIZED`. Secrets never appear in `Debug` output or
//! in errors.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::config::{AppSecretError, Fleet, JwtKeyAlgorithm, JwtPublicKey};
use crate::error::ErrorCode;
use crate::ids::AppId;

mod jwt;

pub use jwt::{JWT_AUDIENCE, JWT_LEEWAY_SECS, JwtSigningKey, mint_jwt};

/// The version prefix: the first dot-separated part of every token.
pub const TOKEN_VERSION: &str = "gr1";

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The longest app id, channel or user accepted, in UTF-8 bytes.
pub const MAX_FIELD_LEN: usize = 256;

const ROLE_PUBLISH: u8 = 1;
const ROLE_SUBSCRIBE: u8 = 2;
const TAG_LEN: usize = 32;

/// What a token allows its holder to do on its channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Publish tracks (and nothing else).
    Publish,
    /// Subscribe to tracks (and nothing else).
    Subscribe,
}

impl Role {
    /// The name used on the command line and in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Publish => "publish",
            Role::Subscribe => "subscribe",
        }
    }

    const fn to_byte(self) -> u8 {
        match self {
            Role::Publish => ROLE_PUBLISH,
            Role::Subscribe => ROLE_SUBSCRIBE,
        }
    }

    const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            ROLE_PUBLISH => Some(Role::Publish),
            ROLE_SUBSCRIBE => Some(Role::Subscribe),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name other than `publish` or `subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid role {0:?}: expected \"publish\" or \"subscribe\"")]
pub struct ParseRoleError(String);

impl FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "publish" => Ok(Role::Publish),
            "subscribe" => Ok(Role::Subscribe),
            other => Err(ParseRoleError(other.to_owned())),
        }
    }
}

/// What a token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The app whose secret signs the token.
    pub app: AppId,
    /// The channel the holder may join.
    pub channel: String,
    /// The user id, as the customer's backend knows it.
    pub user: String,
    /// Publish or subscribe.
    pub role: Role,
    /// Unix time (seconds) from which the token is refused.
    pub expires_at: u64,
}

impl Claims {
    /// Checks the field bounds that [`verify`] enforces: each of app, channel
    /// and user is 1 to [`MAX_FIELD_LEN`] bytes without control characters.
    /// A token minted from claims that fail this check is refused by
    /// [`verify`] as malformed; call this first on untrusted input.
    pub fn validate(&self) -> Result<(), TokenError> {
        check_field(Field::App, self.app.as_str())?;
        check_field(Field::Channel, &self.channel)?;
        check_field(Field::User, &self.user)
    }
}

/// An app's token keys: its secret (for `gr1` and `HS256` JWTs) and,
/// optionally, the public key that verifies its `ES256`/`EdDSA` JWTs.
/// `Debug` never prints them.
#[derive(Clone)]
pub struct TokenKey {
    hmac: hmac::Key,
    jwt_secret: jsonwebtoken::DecodingKey,
    public: Option<(JwtKeyAlgorithm, jsonwebtoken::DecodingKey)>,
}

impl TokenKey {
    /// A key from the app's secret bytes (any length; HMAC hashes keys longer
    /// than 64 bytes).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            hmac: hmac::Key::new(hmac::HMAC_SHA256, secret),
            jwt_secret: jsonwebtoken::DecodingKey::from_secret(secret),
            public: None,
        }
    }

    /// Adds the public key that verifies the app's asymmetric JWTs.
    pub fn with_public_key(mut self, key: &JwtPublicKey) -> Self {
        let decoding = match key.algorithm {
            JwtKeyAlgorithm::Es256 => jsonwebtoken::DecodingKey::from_ec_der(&key.raw),
            JwtKeyAlgorithm::EdDsa => jsonwebtoken::DecodingKey::from_ed_der(&key.raw),
        };
        self.public = Some((key.algorithm, decoding));
        self
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// Why a token was refused. Every variant is `UNAUTHORIZED` on the wire.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed `gr1` token (wrong shape, encoding, or field bounds).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The signature does not match: forged, altered, or signed with another
    /// key (for example an old secret after a rotation).
    #[error("bad token signature")]
    BadSignature,
    /// The token was valid until `expired_at`; mint a new one.
    #[error("token expired at {expired_at} (now {now})")]
    Expired {
        /// The token's `expires_at`, unix seconds.
        expired_at: u64,
        /// The verifier's clock, unix seconds.
        now: u64,
    },
    /// A valid token for another app than the one this session is bound to.
    #[error("token is for app {token_app}, expected {expected}")]
    WrongApp {
        /// The app the token names.
        token_app: AppId,
        /// The app the verifier required.
        expected: AppId,
    },
    /// The token names an app this fleet does not have (or has no key for).
    #[error("token is for unknown app {0}")]
    UnknownApp(AppId),
    /// A JWT whose `alg` is refused: `none`, an algorithm georelay does not
    /// accept, or `ES256`/`EdDSA` for an app without that public key.
    #[error("JWT algorithm refused: {0}")]
    AlgorithmNotAllowed(String),
    /// A JWT whose `aud` does not name `"georelay"`.
    #[error("JWT audience is not \"georelay\"")]
    WrongAudience,
    /// A JWT used before its `nbf` (beyond the clock-skew leeway).
    #[error("token not valid before {not_before} (now {now})")]
    NotYetValid {
        /// The token's `nbf`, unix seconds.
        not_before: u64,
        /// The verifier's clock, unix seconds.
        now: u64,
    },
}

impl TokenError {
    /// The stable wire code: always `UNAUTHORIZED`.
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::Unauthorized
    }
}

/// Signs `claims` into a token. Claims that fail [`Claims::validate`]
/// produce a token that [`verify`] refuses as malformed.
pub fn mint(claims: &Claims, key: &TokenKey) -> String {
    let mut payload = Vec::with_capacity(
        2 * 3 + claims.app.as_str().len() + claims.channel.len() + claims.user.len() + 1 + 8,
    );
    put_str(&mut payload, claims.app.as_str());
    put_str(&mut payload, &claims.channel);
    put_str(&mut payload, &claims.user);
    payload.push(claims.role.to_byte());
    payload.extend_from_slice(&claims.expires_at.to_be_bytes());

    let mut token = format!("{TOKEN_VERSION}.");
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let tag = hmac::sign(&key.hmac, token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
    token
}

/// Checks a token of either format and returns its claims. A token whose
/// first dot-separated part is `gr1` is a `gr1` token; anything else is
/// read as a JWT.
///
/// `gr1`, in order: shape and bounds (`Malformed`), the app's key
/// (`UnknownApp`), the signature, compared in constant time
/// (`BadSignature`), the app the caller requires, if any (`WrongApp`), and
/// the expiry: a token is refused from `expires_at` on (`Expired`).
///
/// JWT, in order: the header's `alg` (`AlgorithmNotAllowed` unless `HS256`,
/// or `ES256`/`EdDSA` with that key configured for the app), `iss` names an
/// app with a key (`UnknownApp`), the signature (`BadSignature`), `aud`
/// (`WrongAudience`), the required claims (`Malformed`), the app the caller
/// requires (`WrongApp`), the field bounds (`Malformed`), `exp` and `nbf`
/// with [`JWT_LEEWAY_SECS`] of leeway (`Expired`, `NotYetValid`).
pub fn verify(
    token: &str,
    keys: &dyn Fn(&AppId) -> Option<TokenKey>,
    expected_app: Option<&AppId>,
    now_unix: u64,
) -> Result<Claims, TokenError> {
    if token.split('.').next() == Some(TOKEN_VERSION) {
        verify_gr1(token, keys, expected_app, now_unix)
    } else {
        jwt::verify_jwt(token, keys, expected_app, now_unix)
    }
}

fn verify_gr1(
    token: &str,
    keys: &dyn Fn(&AppId) -> Option<TokenKey>,
    expected_app: Option<&AppId>,
    now_unix: u64,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("token longer than 4096 bytes"));
    }
    let (signed, tag_b64) = token
        .rsplit_once('.')
        .ok_or(TokenError::Malformed("expected three dot-separated parts"))?;
    let (version, payload_b64) = signed
        .split_once('.')
        .ok_or(TokenError::Malformed("expected three dot-separated parts"))?;
    if version != TOKEN_VERSION {
        return Err(TokenError::Malformed("unknown token version"));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| TokenError::Malformed("payload is not base64url without padding"))?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag_b64)
        .map_err(|_| TokenError::Malformed("signature is not base64url without padding"))?;
    if tag.len() != TAG_LEN {
        return Err(TokenError::Malformed("signature is not 32 bytes"));
    }
    let claims = decode_payload(&payload)?;

    let key = keys(&claims.app).ok_or_else(|| TokenError::UnknownApp(claims.app.clone()))?;
    hmac::verify(&key.hmac, signed.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;

    if let Some(expected) = expected_app
        && *expected != claims.app
    {
        return Err(TokenError::WrongApp {
            token_app: claims.app,
            expected: expected.clone(),
        });
    }
    if now_unix >= claims.expires_at {
        return Err(TokenError::Expired {
            expired_at: claims.expires_at,
            now: now_unix,
        });
    }
    Ok(claims)
}

fn put_str(payload: &mut Vec<u8>, field: &str) {
    // A field longer than u16::MAX cannot fit the 4 KiB token bound anyway;
    // saturating keeps `mint` total and the token is refused by `verify`.
    let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
    payload.extend_from_slice(&len.to_be_bytes());
    payload.extend_from_slice(field.as_bytes());
}

/// Reads the payload, refusing anything but exactly one canonical encoding.
fn decode_payload(payload: &[u8]) -> Result<Claims, TokenError> {
    let mut rest = payload;
    let app = take_str(&mut rest, Field::App)?;
    let channel = take_str(&mut rest, Field::Channel)?;
    let user = take_str(&mut rest, Field::User)?;
    let (&role, after_role) = rest
        .split_first()
        .ok_or(TokenError::Malformed("payload ends before the role"))?;
    let role = Role::from_byte(role).ok_or(TokenError::Malformed("unknown role"))?;
    let expires_at: [u8; 8] = after_role
        .try_into()
        .map_err(|_| TokenError::Malformed("payload must end with an 8-byte expiry"))?;
    Ok(Claims {
        app: AppId::new(app),
        channel: channel.to_owned(),
        user: user.to_owned(),
        role,
        expires_at: u64::from_be_bytes(expires_at),
    })
}

fn take_str<'a>(rest: &mut &'a [u8], field: Field) -> Result<&'a str, TokenError> {
    let (len, after_len) = rest
        .split_first_chunk::<2>()
        .ok_or(TokenError::Malformed("payload ends inside a length"))?;
    let len = usize::from(u16::from_be_bytes(*len));
    if len > after_len.len() {
        return Err(TokenError::Malformed("payload ends inside a field"));
    }
    let (bytes, after) = after_len.split_at(len);
    let text =
        std::str::from_utf8(bytes).map_err(|_| TokenError::Malformed("field is not UTF-8"))?;
    check_field(field, text)?;
    *rest = after;
    Ok(text)
}

/// The three string fields of the payload, for precise error reasons.
#[derive(Clone, Copy)]
enum Field {
    App,
    Channel,
    User,
}

impl Field {
    const fn empty(self) -> &'static str {
        match self {
            Field::App => "app is empty",
            Field::Channel => "channel is empty",
            Field::User => "user is empty",
        }
    }

    const fn too_long(self) -> &'static str {
        match self {
            Field::App => "app longer than 256 bytes",
            Field::Channel => "channel longer than 256 bytes",
            Field::User => "user longer than 256 bytes",
        }
    }

    const fn control_character(self) -> &'static str {
        match self {
            Field::App => "app contains a control character",
            Field::Channel => "channel contains a control character",
            Field::User => "user contains a control character",
        }
    }
}

fn check_field(field: Field, text: &str) -> Result<(), TokenError> {
    if text.is_empty() {
        return Err(TokenError::Malformed(field.empty()));
    }
    if text.len() > MAX_FIELD_LEN {
        return Err(TokenError::Malformed(field.too_long()));
    }
    if text.chars().any(char::is_control) {
        return Err(TokenError::Malformed(field.control_character()));
    }
    Ok(())
}

/// Every app's token key, resolved once from the fleet's secrets.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: std::collections::BTreeMap<AppId, TokenKey>,
}

impl Keyring {
    /// Resolves every app's secret and attaches its JWT public key. Fails on the first app whose secret
    /// cannot be read, naming the app and the variable or file.
    pub fn from_fleet(fleet: &Fleet) -> Result<Self, AppSecretError> {
        let mut keys = std::collections::BTreeMap::new();
        for (id, app) in &fleet.apps {
            let secret = app.resolve_secret()?;
            let mut key = TokenKey::new(secret.as_bytes());
            if let Some(public) = &app.jwt_public_key {
                key = key.with_public_key(public);
            }
            keys.insert(id.clone(), key);
        }
        Ok(Self { keys })
    }

    /// A key ring from explicit keys (tests and tools).
    pub fn from_keys(keys: impl IntoIterator<Item = (AppId, TokenKey)>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
        }
    }

    /// The key of `app`, if the fleet has that app.
    pub fn key(&self, app: &AppId) -> Option<TokenKey> {
        self.keys.get(app).cloned()
    }

    /// [`verify`] against this ring's keys.
    pub fn verify(
        &self,
        token: &str,
        expected_app: Option<&AppId>,
        now_unix: u64,
    ) -> Result<Claims, TokenError> {
        verify(token, &|app| self.key(app), expected_app, now_unix)
    }

    /// [`mint`] with the key of `claims.app`; `None` when the ring has no
    /// such app.
    pub fn mint(&self, claims: &Claims) -> Option<String> {
        self.keys.get(&claims.app).map(|key| mint(claims, key))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: u64 = 1_750_000_000;

    fn claims() -> Claims {
        Claims {
            app: AppId::new("acme-health"),
            channel: "room-1".to_owned(),
            user: "alice".to_owned(),
            role: Role::Publish,
            expires_at: NOW + 60,
        }
    }

    fn ring() -> Keyring {
        Keyring::from_keys([
            (AppId::new("acme-health"), TokenKey::new(b"acme secret")),
            (AppId::new("globex"), TokenKey::new(b"globex secret")),
        ])
    }

    #[test]
    fn a_minted_token_verifies_to_its_claims() {
        let ring = ring();
        let token = ring.mint(&claims()).unwrap_or_default();
        assert!(token.starts_with("gr1."));
        assert_eq!(ring.verify(&token, None, NOW), Ok(claims()));
        let app = AppId::new("acme-health");
        assert_eq!(ring.verify(&token, Some(&app), NOW), Ok(claims()));
    }

    #[test]
    fn matches_the_worked_example_in_docs() {
        let claims = Claims {
            app: AppId::new("acme-health"),
            channel: "room-1".to_owned(),
            user: "alice".to_owned(),
            role: Role::Subscribe,
            expires_at: 1_750_000_000,
        };
        let token = mint(&claims, &TokenKey::new(b"dev-secret-acme"));
        let docs = include_str!("../docs/TOKENS.md");
        assert!(docs.contains(&token), "docs/TOKENS.md lacks {token}");
    }

    #[test]
    fn expiry_is_exclusive() {
        let ring = ring();
        let token = ring.mint(&claims()).unwrap_or_default();
        assert!(ring.verify(&token, None, NOW + 59).is_ok());
        assert_eq!(
            ring.verify(&token, None, NOW + 60),
            Err(TokenError::Expired {
                expired_at: NOW + 60,
                now: NOW + 60
            })
        );
    }

    #[test]
    fn a_token_for_another_app_is_wrong_app_and_an_unknown_app_is_named() {
        let ring = ring();
        let token = ring.mint(&claims()).unwrap_or_default();
        let globex = AppId::new("globex");
        assert_eq!(
            ring.verify(&token, Some(&globex), NOW),
            Err(TokenError::WrongApp {
                token_app: AppId::new("acme-health"),
                expected: globex,
            })
        );
        let stranger = Claims {
            app: AppId::new("initech"),
            ..claims()
        };
        let token = mint(&stranger, &TokenKey::new(b"whatever"));
        assert_eq!(
            ring.verify(&token, None, NOW),
            Err(TokenError::UnknownApp(AppId::new("initech")))
        );
    }

    #[test]
    fn another_apps_key_or_a_swapped_payload_is_a_bad_signature() {
        let ring = ring();
        let forged = mint(&claims(), &TokenKey::new(b"globex secret"));
        assert_eq!(
            ring.verify(&forged, None, NOW),
            Err(TokenError::BadSignature)
        );
        let publish = ring.mint(&claims()).unwrap_or_default();
        let subscribe = ring
            .mint(&Claims {
                role: Role::Subscribe,
                ..claims()
            })
            .unwrap_or_default();
        let (publish_signed, _) = publish.rsplit_once('.').unwrap_or_default();
        let (_, subscribe_tag) = subscribe.rsplit_once('.').unwrap_or_default();
        let spliced = format!("{publish_signed}.{subscribe_tag}");
        assert_eq!(
            ring.verify(&spliced, None, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn bounds_and_shape_are_enforced() {
        let ring = ring();
        let long = "x".repeat(MAX_FIELD_LEN + 1);
        for bad in [
            Claims {
                channel: long.clone(),
                ..claims()
            },
            Claims {
                user: "ali\nce".to_owned(),
                ..claims()
            },
            Claims {
                channel: String::new(),
                ..claims()
            },
        ] {
            assert!(matches!(bad.validate(), Err(TokenError::Malformed(_))));
            let token = ring.mint(&bad).unwrap_or_default();
            assert!(matches!(
                ring.verify(&token, None, NOW),
                Err(TokenError::Malformed(_))
            ));
        }
        let at_bound = Claims {
            channel: "c".repeat(MAX_FIELD_LEN),
            user: "u".repeat(MAX_FIELD_LEN),
            ..claims()
        };
        let token = ring.mint(&at_bound).unwrap_or_default();
        assert_eq!(ring.verify(&token, None, NOW), Ok(at_bound));

        let huge = format!("gr1.{}.x", "A".repeat(MAX_TOKEN_LEN));
        for malformed in [
            "",
            "gr1",
            "gr1.abc",
            "gr2.AA.AA",
            huge.as_str(),
            "gr1..",
            "gr1.AA.AA.AA",
        ] {
            assert!(
                matches!(
                    ring.verify(malformed, None, NOW),
                    Err(TokenError::Malformed(_))
                ),
                "{malformed:?} was not malformed"
            );
        }
    }

    #[test]
    fn debug_output_redacts_keys() {
        let key = TokenKey::new(b"super-secret-value");
        assert_eq!(format!("{key:?}"), "TokenKey(<redacted>)");
        assert!(!format!("{:?}", ring()).contains("secret"));
    }

    #[test]
    fn roles_parse_and_print() {
        for role in [Role::Publish, Role::Subscribe] {
            assert_eq!(role.to_string().parse(), Ok(role));
        }
        assert!("Publish".parse::<Role>().is_err());
        assert_eq!(TokenError::BadSignature.code(), ErrorCode::Unauthorized);
    }

    #[test]
    fn keyring_from_fleet_resolves_secrets_and_names_a_missing_variable() {
        let config = r#"
[regions.eu]
countries = ["DE"]
[nodes.eu-1]
region = "eu"
listen = "127.10.0.1:4433"
admin = "127.10.0.1:9090"
[apps.inline-app]
secret = "inline secret"
allow_regions = ["eu"]
"#;
        let path = std::path::Path::new("keyring-test.toml");
        let fleet = Fleet::parse(config, path).unwrap_or_else(|err| panic!("{err}"));
        let ring = Keyring::from_fleet(&fleet).unwrap_or_else(|err| panic!("{err}"));
        let token = mint(
            &Claims {
                app: AppId::new("inline-app"),
                ..claims()
            },
            &TokenKey::new(b"inline secret"),
        );
        assert!(ring.verify(&token, None, NOW).is_ok());
        assert!(ring.key(&AppId::new("acme-health")).is_none());

        let unset = format!(
            "{config}[apps.env-app]\nsecret_env = \"GEORELAY_AUTH_TEST_NEVER_SET\"\nallow_regions = [\"eu\"]\n"
        );
        let fleet = Fleet::parse(&unset, path).unwrap_or_else(|err| panic!("{err}"));
        let message = Keyring::from_fleet(&fleet)
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default();
        assert!(message.contains("env-app"), "{message}");
        assert!(
            message.contains("GEORELAY_AUTH_TEST_NEVER_SET"),
            "{message}"
        );
    }

    fn field() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.:/ é-]{1,64}"
    }

    proptest! {
        #[test]
        fn mint_verify_round_trips(
            app in "[a-z][a-z0-9-]{0,30}",
            channel in field(),
            user in field(),
            publish in any::<bool>(),
            expires_at in (NOW + 1)..u64::MAX,
            secret in proptest::collection::vec(any::<u8>(), 1..80),
        ) {
            let claims = Claims {
                app: AppId::new(app.as_str()),
                channel,
                user,
                role: if publish { Role::Publish } else { Role::Subscribe },
                expires_at,
            };
            let key = TokenKey::new(&secret);
            let token = mint(&claims, &key);
            prop_assert!(token.len() <= MAX_TOKEN_LEN);
            prop_assert_eq!(verify(&token, &|_| Some(key.clone()), None, NOW), Ok(claims));
        }

        #[test]
        fn any_single_byte_change_is_rejected(
            channel in field(),
            position in any::<prop::sample::Index>(),
            replacement in any::<u8>(),
        ) {
            let key = TokenKey::new(b"acme secret");
            let token = mint(&Claims { channel, ..claims() }, &key);
            let mut bytes = token.clone().into_bytes();
            let index = position.index(bytes.len());
            prop_assume!(bytes[index] != replacement);
            bytes[index] = replacement;
            let altered = String::from_utf8_lossy(&bytes);
            prop_assert!(verify(&altered, &|_| Some(key.clone()), None, NOW).is_err());
        }
    }
}
