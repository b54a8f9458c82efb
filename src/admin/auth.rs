//! Authentication of the admin HTTP API (`[admin]` in regions.toml).
//!
//! - Mutating endpoints (any method but `GET`/`HEAD`: `POST /reload` and
//!   whatever is added later) need `Authorization: Bearer <token>` when a
//!   token is configured. Without a token they are served only when the
//!   admin listener is on a loopback address.
//! - `GET`/`HEAD` endpoints are open unless `protect_reads = true`.
//! - A missing or wrong token gets 401, `WWW-Authenticate: Bearer` and
//!   `{"error":"UNAUTHORIZED","message":"..."}`.
//! - Tokens are compared in constant time: both sides are hashed with
//!   SHA-256 and the digests compared with `subtle`, so neither the content
//!   nor the length of the configured token leaks through timing.
//! - [`check_admin_exposure`] is what `serve` runs before binding anything: a
//!   node whose admin address is not loopback and that has no token refuses
//!   to start.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::config::{AdminConfig, AdminTokenSource, Fleet};
use crate::ids::NodeId;

/// The shortest admin token accepted, in bytes: shorter ones are guessable.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Why the admin authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminAuthError {
    /// `token_env` names a variable that is not set.
    #[error("[admin] token_env: environment variable {0} is not set")]
    EnvUnset(String),
    /// `token_file` could not be read.
    #[error("[admin] token_file: cannot read {}: {source}", path.display())]
    FileUnreadable {
        /// The resolved path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The token is shorter than [`MIN_TOKEN_BYTES`] (an empty one included).
    #[error("[admin] the admin token from {origin} is {len} bytes; use at least {MIN_TOKEN_BYTES}")]
    TooShort {
        /// Where it came from (never the token).
        origin: String,
        /// Its length.
        len: usize,
    },
    /// A node's admin address is not loopback and no token is configured.
    #[error(
        "node {node}: admin address {admin} is not loopback and [admin] has no token: \
         set token_env or token_file, or bind admin to 127.0.0.1/::1"
    )]
    ExposedWithoutToken {
        /// The node.
        node: NodeId,
        /// Its admin address.
        admin: SocketAddr,
    },
}

/// The configured admin token, kept only as its SHA-256 digest. `Debug`
/// prints nothing of it.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

impl AdminToken {
    /// A token from its bytes; refuses one shorter than [`MIN_TOKEN_BYTES`].
    pub fn new(token: &[u8], origin: &str) -> Result<AdminToken, AdminAuthError> {
        if token.len() < MIN_TOKEN_BYTES {
            return Err(AdminAuthError::TooShort {
                origin: origin.to_owned(),
                len: token.len(),
            });
        }
        Ok(AdminToken {
            digest: sha256(token),
        })
    }

    /// Reads the token from where `[admin]` says.
    pub fn resolve(source: &AdminTokenSource) -> Result<AdminToken, AdminAuthError> {
        match source {
            AdminTokenSource::Env(var) => {
                let value =
                    std::env::var_os(var).ok_or_else(|| AdminAuthError::EnvUnset(var.clone()))?;
                AdminToken::new(
                    value.as_encoded_bytes(),
                    &format!("environment variable {var}"),
                )
            }
            AdminTokenSource::File(path) => {
                let mut bytes =
                    std::fs::read(path).map_err(|source| AdminAuthError::FileUnreadable {
                        path: path.clone(),
                        source,
                    })?;
                for ending in [&b"\r\n"[..], b"\n"] {
                    if bytes.ends_with(ending) {
                        bytes.truncate(bytes.len() - ending.len());
                        break;
                    }
                }
                AdminToken::new(&bytes, &format!("file {}", path.display()))
            }
        }
    }

    /// Whether `presented` is the token, in time independent of both.
    pub fn matches(&self, presented: &[u8]) -> bool {
        bool::from(sha256(presented).ct_eq(&self.digest))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// How one node's admin API authenticates requests. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct AdminAuth {
    token: Option<Arc<AdminToken>>,
    protect_reads: bool,
}

impl AdminAuth {
    /// No token: reads are open, mutating endpoints are served only on a
    /// loopback listener (see [`crate::admin::serve`]).
    pub fn without_token() -> AdminAuth {
        AdminAuth::default()
    }

    /// Mutating endpoints (and reads when `protect_reads`) need `token`.
    pub fn with_token(token: AdminToken, protect_reads: bool) -> AdminAuth {
        AdminAuth {
            token: Some(Arc::new(token)),
            protect_reads,
        }
    }

    /// The authentication `[admin]` configures for a node whose admin
    /// address is `admin`: resolves the token, and refuses a non-loopback
    /// address without one.
    pub fn for_node(
        config: &AdminConfig,
        node: &NodeId,
        admin: SocketAddr,
    ) -> Result<AdminAuth, AdminAuthError> {
        match &config.token {
            Some(source) => Ok(AdminAuth::with_token(
                AdminToken::resolve(source)?,
                config.protect_reads,
            )),
            None if admin.ip().to_canonical().is_loopback() => Ok(AdminAuth::without_token()),
            None => Err(AdminAuthError::ExposedWithoutToken {
                node: node.clone(),
                admin,
            }),
        }
    }

    /// Whether a request may go on, given its method, its `Authorization`
    /// header and whether the listener is on loopback (`None`: not served
    /// from a socket, e.g. a `oneshot` test: treated as loopback).
    fn decide(
        &self,
        method: &Method,
        authorization: Option<&[u8]>,
        listener_is_loopback: Option<bool>,
    ) -> Result<(), &'static str> {
        let reading = method == Method::GET || method == Method::HEAD;
        match &self.token {
            None if reading => Ok(()),
            None if listener_is_loopback.unwrap_or(true) => Ok(()),
            None => Err(
                "no admin token is configured: mutating endpoints are served on loopback admin addresses only",
            ),
            Some(_) if reading && !self.protect_reads => Ok(()),
            Some(token) => match authorization.and_then(bearer) {
                None => Err("this endpoint needs Authorization: Bearer <admin token>"),
                Some(presented) if token.matches(presented) => Ok(()),
                Some(_) => Err("the admin token is wrong"),
            },
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme
/// case-insensitive, as RFC 9110 says).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Whether the admin listener serving a request is on loopback; the
/// admin server adds it to every request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ListenerIsLoopback(pub(crate) bool);

/// The body of a 401 answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Unauthorized {
    /// Always `"UNAUTHORIZED"`.
    pub error: String,
    /// Why, for a human.
    pub message: String,
}

/// The axum middleware that enforces [`AdminAuth`].
pub(crate) async fn require_auth(
    State(auth): State<AdminAuth>,
    request: Request,
    next: Next,
) -> Response {
    let listener = request
        .extensions()
        .get::<ListenerIsLoopback>()
        .map(|flag| flag.0);
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    match auth.decide(request.method(), authorization, listener) {
        Ok(()) => next.run(request).await,
        Err(message) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(Unauthorized {
                error: "UNAUTHORIZED".to_owned(),
                message: message.to_owned(),
            }),
        )
            .into_response(),
    }
}

/// What `serve` checks before starting `nodes` (every node when empty): each
/// node's admin address is loopback, or `[admin]` configures a token that
/// resolves. The error names the node and its address.
pub fn check_admin_exposure(fleet: &Fleet, nodes: &[NodeId]) -> Result<(), AdminAuthError> {
    for node in fleet.nodes.values() {
        if nodes.is_empty() || nodes.contains(&node.id) {
            AdminAuth::for_node(&fleet.admin, &node.id, node.admin)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"0123456789abcdef-admin";

    fn protected(protect_reads: bool) -> AdminAuth {
        AdminAuth::with_token(
            AdminToken::new(TOKEN, "test").expect("token"),
            protect_reads,
        )
    }

    #[test]
    fn mutating_requests_need_the_exact_bearer_token() {
        let auth = protected(false);
        let post = Method::POST;
        assert!(
            auth.decide(&post, Some(b"Bearer 0123456789abcdef-admin"), Some(false))
                .is_ok()
        );
        assert!(
            auth.decide(&post, Some(b"bearer 0123456789abcdef-admin"), Some(false))
                .is_ok()
        );
        assert!(
            auth.decide(&post, None, Some(true)).is_err(),
            "loopback does not skip a token"
        );
        assert!(
            auth.decide(&post, Some(b"Bearer 0123456789abcdef-admiN"), None)
                .is_err()
        );
        assert!(
            auth.decide(&post, Some(b"Bearer 0123456789abcdef-admin2"), None)
                .is_err()
        );
        assert!(auth.decide(&post, Some(b"Bearer "), None).is_err());
        assert!(
            auth.decide(&post, Some(b"Basic MDEyMzQ1Njc4OWFiY2RlZg=="), None)
                .is_err()
        );
        assert!(
            auth.decide(&Method::GET, None, Some(false)).is_ok(),
            "reads stay open"
        );
    }

    #[test]
    fn protect_reads_closes_get_too() {
        let auth = protected(true);
        assert!(auth.decide(&Method::GET, None, Some(true)).is_err());
        assert!(auth.decide(&Method::HEAD, None, Some(true)).is_err());
        assert!(
            auth.decide(&Method::GET, Some(b"Bearer 0123456789abcdef-admin"), None)
                .is_ok()
        );
    }

    #[test]
    fn without_a_token_mutations_are_served_on_loopback_only() {
        let auth = AdminAuth::without_token();
        assert!(auth.decide(&Method::POST, None, Some(true)).is_ok());
        assert!(auth.decide(&Method::POST, None, Some(false)).is_err());
        assert!(auth.decide(&Method::GET, None, Some(false)).is_ok());
    }

    #[test]
    fn short_tokens_are_refused_and_never_printed() {
        let err = AdminToken::new(b"short", "environment variable X").expect_err("too short");
        assert!(err.to_string().contains("5 bytes"), "{err}");
        let token = AdminToken::new(TOKEN, "test").expect("token");
        assert!(!format!("{token:?}").contains("0123"));
    }

    #[test]
    fn a_node_outside_loopback_needs_a_token() {
        let node = NodeId::new("eu-fra-1");
        let public: SocketAddr = "192.0.2.10:9090".parse().expect("addr");
        let err = AdminAuth::for_node(&AdminConfig::default(), &node, public)
            .expect_err("exposed without a token");
        let message = err.to_string();
        assert!(
            message.contains("eu-fra-1") && message.contains("192.0.2.10:9090"),
            "{message}"
        );
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9090".parse().expect("addr");
        assert!(AdminAuth::for_node(&AdminConfig::default(), &node, mapped).is_ok());
    }
}
