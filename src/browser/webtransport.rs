//! Accepting WebTransport sessions (docs/PROTOCOL.md §11) on a QUIC
//! connection that the node's endpoint accepted with ALPN `h3`: the HTTP/3
//! SETTINGS exchange and the extended CONNECT (`:protocol` `webtransport`)
//! are `web-transport-quinn`'s; this module checks the path and bounds the
//! handshake in time. Inside the session the relay speaks georelay/1
//! unchanged: the first client bidirectional stream is the control stream,
//! datagrams are media datagrams, unidirectional streams are message
//! streams; `Session::close(code, reason)` carries the georelay code.

use std::time::Duration;

use web_transport_quinn::http::StatusCode;
use web_transport_quinn::{Request, ServerError, Session};

pub use super::devcert::ALPN_H3;

/// The only session path a node serves.
pub const WEBTRANSPORT_PATH: &str = "/georelay";

/// How long a client may take from the QUIC handshake to its CONNECT.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection did not become a WebTransport session.
#[derive(Debug, thiserror::Error)]
pub enum WebTransportError {
    /// The HTTP/3 or CONNECT handshake failed (bad SETTINGS, not a
    /// WebTransport CONNECT, connection lost).
    #[error("WebTransport handshake failed: {0}")]
    Handshake(#[from] ServerError),
    /// The client asked for another path; it was answered 404.
    #[error("WebTransport CONNECT for path {0:?}, expected {WEBTRANSPORT_PATH}")]
    WrongPath(String),
    /// No CONNECT within [`HANDSHAKE_TIMEOUT`].
    #[error("no WebTransport CONNECT within {0:?}")]
    Timeout(Duration),
}

/// Turns an `h3` connection into a WebTransport session at
/// [`WEBTRANSPORT_PATH`], answering `200` (or `404` for another path).
/// `timeout` bounds the whole handshake; a connection that fails is closed
/// by the caller dropping it.
pub async fn accept_session(
    conn: quinn::Connection,
    timeout: Duration,
) -> Result<Session, WebTransportError> {
    let handshake = async {
        let request = Request::accept(conn).await?;
        let path = request.url.path().to_owned();
        if path != WEBTRANSPORT_PATH {
            request.reject(StatusCode::NOT_FOUND).await?;
            return Err(WebTransportError::WrongPath(path));
        }
        Ok(request.ok().await?)
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| WebTransportError::Timeout(timeout))?
}
