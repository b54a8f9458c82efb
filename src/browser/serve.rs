//! Serving browsers on a running node: what [`crate::relay::RunningNode`]
//! calls to admit web clients next to native ones.
//!
//! - [`client_server_config`]: the client endpoint's QUIC config, offering
//!   `h3` beside `georelay/1` and `georelay-mesh/1`; with the development
//!   PKI the browser certificate ([`BrowserCertStore`]) is presented to
//!   `h3` connections, with operator certificates the node's own.
//! - [`run_webtransport`]: an accepted `h3` connection: its stream limits
//!   raised by what HTTP/3 needs, the WebTransport handshake, then the
//!   relay's session logic on the session.
//! - [`run_websocket_listener`]: the fallback listener of a node that
//!   configures `websocket`, each session run by the same session logic.
//! - [`BrowserServing`]: the per-node state (certificate store, fallback
//!   address) and its tasks (renewal, listener, `/certificate.sha256`).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::{Semaphore, watch};

use crate::admin::metric_names as m;
use crate::clock::SharedClock;
use crate::config::Limits;
use crate::error::ErrorCode;
use crate::gate::{AcceptGate, IncomingDecision};
use crate::relay::hub::Hub;
use crate::relay::session::{AwaitingHello, run_client};
use crate::tls::{NodeTls, TlsError};

use super::devcert::{
    ALPN_H3, AlpnCertResolver, BrowserCertStore, DevCertError, RENEWAL_CHECK, certificate_router,
    run_renewal,
};
use super::transport::WsTransport;
use super::websocket::{WsAcceptor, WsConfig, WsListener};
use super::webtransport::{HANDSHAKE_TIMEOUT, accept_session};

/// Streams an HTTP/3 client opens besides georelay/1's: the CONNECT
/// request (bidirectional) and its control, QPACK encoder and decoder
/// streams (unidirectional).
pub const H3_EXTRA_BIDI_STREAMS: u32 = 1;
/// See [`H3_EXTRA_BIDI_STREAMS`].
pub const H3_EXTRA_UNI_STREAMS: u32 = 3;

/// Fallback TLS/WebSocket handshakes in progress at once, at most; further
/// TCP connections wait in the kernel's backlog.
pub const MAX_PENDING_WS_HANDSHAKES: usize = 64;

/// A node's browser serving state.
#[derive(Clone, Debug, Default)]
pub struct BrowserServing {
    /// The development WebTransport certificate (`None` with operator
    /// certificates).
    pub cert: Option<Arc<BrowserCertStore>>,
    /// Wakes the renewal task to compare the certificate with the clock now.
    recheck: Arc<tokio::sync::Notify>,
}

impl BrowserServing {
    /// With the development PKI (`dev`), issues the browser certificate for
    /// `listen`'s address (and `localhost`).
    pub fn new(dev: bool, listen: SocketAddr, now_unix: u64) -> Result<Self, DevCertError> {
        if !dev {
            return Ok(Self::default());
        }
        let names = vec![listen.ip().to_string(), "localhost".to_owned()];
        let store = BrowserCertStore::new(names, now_unix)?;
        Ok(Self {
            cert: Some(Arc::new(store)),
            recheck: Arc::default(),
        })
    }

    /// Has the renewal task re-read the wall clock now and renew the
    /// development certificate if it is due (called on every reload: an
    /// operator who stepped the clock reloads; otherwise the task looks at
    /// most every [`RENEWAL_CHECK`]).
    pub fn recheck_certificate(&self) {
        self.recheck.notify_one();
    }

    /// Merges `GET /certificate.sha256` into the admin router (dev only).
    pub fn admin_routes(&self, router: axum::Router) -> axum::Router {
        match &self.cert {
            Some(store) => router.merge(certificate_router(Arc::clone(store))),
            None => router,
        }
    }

    /// Keeps the development certificate renewed until `shutdown`.
    pub fn renewal(
        &self,
        clock: SharedClock,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let store = Arc::clone(self.cert.as_ref()?);
        let recheck = Arc::clone(&self.recheck);
        Some(async move {
            let stop = async move {
                let _ = shutdown.changed().await;
            };
            run_renewal(store, clock, RENEWAL_CHECK, recheck, stop).await;
        })
    }

    /// The fallback's TLS: the browser certificate in development, the
    /// node's otherwise; ALPN `http/1.1`.
    pub fn websocket_tls(&self, node: &NodeTls) -> Result<rustls::ServerConfig, TlsError> {
        let cert_resolver: Arc<dyn ResolvesServerCert> = match &self.cert {
            Some(store) => Arc::new(AlwaysBrowser(Arc::clone(store))),
            None => node.cert_resolver(),
        };
        // No client certificates: browsers asked for one may prompt or abort.
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(cert_resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Presents the browser certificate to every connection (the fallback in
/// development: browsers reach it with that certificate trusted).
#[derive(Debug)]
struct AlwaysBrowser(Arc<BrowserCertStore>);

impl ResolvesServerCert for AlwaysBrowser {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().certified))
    }
}

/// The client endpoint's QUIC server config: [`crate::tls::server_config`]
/// plus ALPN `h3`, presented the development browser certificate when
/// `browser` serves one.
pub fn client_server_config(
    node: &NodeTls,
    transport: Arc<quinn::TransportConfig>,
    browser: &BrowserServing,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = node.rustls_server_config()?;
    if let Some(store) = &browser.cert {
        let node = Arc::clone(&tls.cert_resolver);
        tls.cert_resolver = Arc::new(AlpnCertResolver::new(Arc::clone(store), node));
    }
    tls.alpn_protocols.push(ALPN_H3.to_vec());
    crate::tls::quic_server_config(tls, transport)
}

/// Serves an accepted `h3` connection: grants the HTTP/3 streams on top of
/// the client limits, accepts the WebTransport session at `/georelay`
/// (bounded by [`HANDSHAKE_TIMEOUT`]) and runs the session logic on it.
pub async fn run_webtransport(
    hub: Arc<Hub>,
    conn: quinn::Connection,
    limits: Limits,
    awaiting: AwaitingHello,
) {
    conn.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(
        limits
            .max_bidi_streams
            .saturating_add(H3_EXTRA_BIDI_STREAMS),
    ));
    conn.set_max_concurrent_uni_streams(quinn::VarInt::from_u32(
        limits.max_uni_streams.saturating_add(H3_EXTRA_UNI_STREAMS),
    ));
    match accept_session(conn, HANDSHAKE_TIMEOUT).await {
        Ok(session) => {
            count_client(&hub, m::KIND_WEBTRANSPORT);
            run_client(hub, session, limits, awaiting).await;
        }
        Err(err) => tracing::debug!(%err, "WebTransport session refused"),
    }
}

fn count_client(hub: &Hub, kind: &'static str) {
    metrics::counter!(m::CONNECTIONS_TOTAL, m::LABEL_NODE => hub.me().to_string(), m::LABEL_KIND => kind)
        .increment(1);
}

/// Binds the WebSocket fallback at `addr` with `tls` (see
/// [`BrowserServing::websocket_tls`]).
pub async fn bind_websocket(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
) -> std::io::Result<WsListener> {
    WsListener::bind(addr, WsAcceptor::new(Arc::new(tls), WsConfig::default())).await
}

/// Accepts fallback sessions until `shutdown` and runs the session logic
/// on each; at most [`MAX_PENDING_WS_HANDSHAKES`] handshakes at once. The
/// node's accept gate bounds them like QUIC connections: per-address and
/// total slots (a TCP peer's address is validated by its handshake), a
/// HELLO permit and the one HELLO deadline.
pub async fn run_websocket_listener(
    hub: Arc<Hub>,
    listener: WsListener,
    limits: Limits,
    gate: AcceptGate,
    mut shutdown: watch::Receiver<bool>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_WS_HANDSHAKES));
    loop {
        let Ok(permit) = Arc::clone(&pending).acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept_tcp() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((tcp, remote)) = accepted else {
            continue;
        };
        let mut slot = match gate.on_incoming(remote, true) {
            IncomingDecision::Accept(slot) => slot,
            IncomingDecision::Refuse(refusal) => {
                metrics::counter!(m::CONNECTIONS_REFUSED_TOTAL, m::LABEL_NODE => hub.me().to_string(), m::LABEL_REASON => refusal.as_str())
                    .increment(1);
                continue;
            }
            IncomingDecision::Retry => continue,
        };
        let acceptor = listener.acceptor().clone();
        let hub = Arc::clone(&hub);
        let limits = limits.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let session = acceptor.accept(tcp, remote).await;
            drop(permit);
            slot.handshake_done();
            match session {
                Ok(session) => {
                    count_client(&hub, m::KIND_WEBSOCKET);
                    let Ok(hello) = gate.await_hello() else {
                        session.close(
                            u32::try_from(ErrorCode::LimitExceeded.to_wire()).unwrap_or_default(),
                            b"too many connections are waiting for HELLO",
                        );
                        return;
                    };
                    let awaiting = AwaitingHello {
                        deadline: crate::clock::timer_now() + gate.hello_deadline(),
                        permit: hello,
                    };
                    let transport = WsTransport::new(session);
                    run_client(Arc::clone(&hub), transport.clone(), limits, awaiting).await;
                    let dropped = transport.session().dropped_datagrams_out();
                    if dropped > 0 {
                        metrics::counter!(m::DROPS_TOTAL, m::LABEL_NODE => hub.me().to_string(), m::LABEL_REASON => m::REASON_WEBSOCKET_QUEUE)
                            .increment(dropped);
                    }
                }
                Err(err) => tracing::debug!(%err, %remote, "WebSocket session refused"),
            }
        });
    }
}
