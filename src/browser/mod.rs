//! Serving browsers: the building blocks a node needs to admit web clients
//! next to native QUIC ones (docs/PROTOCOL.md §11, §12).
//!
//! - [`webtransport`]: accepting a WebTransport session (ALPN `h3`, path
//!   `/georelay`) on a QUIC connection the node's endpoint accepted;
//! - [`devcert`]: the browser-trusted development certificate
//!   (`serverCertificateHashes`: ECDSA P-256, at most 14 days, renewed before
//!   it expires), the certificate resolver that presents it to `h3`
//!   connections, and `GET /certificate.sha256` for the admin router;
//! - [`websocket`]: the WebSocket (TLS) fallback listener, with a bounded
//!   drop-oldest queue per session for media.
//!
//! Each block stands alone; the relay's session logic drives them through
//! its client-connection abstraction.

pub mod devcert;
pub mod websocket;
pub mod webtransport;
