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
//!
//! # Wiring them into a node
//!
//! 1. At start-up (dev TLS only): `BrowserCertStore::new(vec![listen_ip], now)`,
//!    spawn [`devcert::run_renewal`]`(store, clock, RENEWAL_CHECK, recheck, shutdown)`
//!    (notify `recheck` on reload: [`serve::BrowserServing::recheck_certificate`]),
//!    and build the client endpoint's rustls config with
//!    `with_cert_resolver(AlpnCertResolver::new(store, node_cert_resolver))`
//!    and ALPNs `georelay/1`, `georelay-mesh/1`, [`devcert::ALPN_H3`]. With
//!    operator certificates, no store: the node certificate serves `h3` too.
//! 2. Admin router: `.merge(devcert::certificate_router(store))`.
//! 3. Accept loop: a connection whose negotiated ALPN is `h3` goes to
//!    [`webtransport::accept_session`]`(conn, HANDSHAKE_TIMEOUT)`; the
//!    `web_transport_quinn::Session` then runs the georelay/1 session logic
//!    like a `quinn::Connection`: `accept_bi` (control stream),
//!    `read_datagram`/`send_datagram`, `accept_uni`/`open_uni`,
//!    `close(code, reason)`, `max_datagram_size()` (WELCOME's payload limit
//!    minus 24), and the underlying `conn.remote_address()` for admission.
//! 4. Fallback: `WsListener::bind(addr, WsAcceptor::new(tls, WsConfig))`
//!    (TLS with ALPN `http/1.1`), loop on `accept_tcp`, spawn
//!    `acceptor().accept(tcp, remote)`, and run the session logic on the
//!    `WsSession`: `accept_control()`, `read_datagram`/`send_datagram`
//!    (drop-oldest, `dropped_datagrams_out()` for the drop counter),
//!    `accept_uni`/`open_uni`, `close(code, reason)`, `remote_address()`,
//!    `max_datagram_size()`, `rtt()`.

pub mod devcert;
pub mod serve;
pub mod transport;
pub mod websocket;
pub mod webtransport;
