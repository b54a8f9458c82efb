//! The node's QUIC accept loop: every `Incoming` passes the node's
//! [`AcceptGate`] before a handshake is spent on it.
//!
//! - `Retry`: a stateless Retry (`incoming.retry()`), when too many
//!   handshakes from unvalidated addresses are in progress (or always).
//! - `Refuse`: `incoming.refuse()` (QUIC CONNECTION_REFUSED, no state kept),
//!   counted in `georelay_connections_refused_total{reason}`.
//! - `Accept`: the handshake runs in its own task holding the connection's
//!   [`ConnectionSlot`] for the connection's whole life. A client connection
//!   then needs a HELLO permit (`max_pending_hello`; none left: closed with
//!   `LIMIT_EXCEEDED`) and has until one deadline, `hello_timeout_ms` after
//!   the handshake, to open its control stream and send `HELLO`.
//!
//! A node with several endpoints on its port (`[limits] quic_endpoints`,
//! see `super::endpoints`) runs one accept loop per endpoint, all with the
//! one gate, so connection counts and HELLO permits are node-wide.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::admin::metric_names as m;
use crate::config::Limits;
use crate::error::ErrorCode;
use crate::gate::{AcceptGate, ConnectionSlot, IncomingDecision, Refusal};

use super::hub::Hub;
use super::session::AwaitingHello;
use super::{mesh, session};

/// How the accept loop recognises mesh peers' dials.
#[derive(Clone)]
pub(super) struct MeshAcceptance {
    /// The server config with the mesh transport (datagram buffers, streams
    /// and keep-alives of a mesh link).
    pub(super) server: Arc<quinn::ServerConfig>,
    /// Listen addresses of this node's linked peers: their dials come from
    /// there, and are accepted with [`MeshAcceptance::server`].
    pub(super) peers: HashSet<SocketAddr>,
}

/// Accepts connections on `endpoint` until `shutdown` changes.
pub(super) async fn accept_loop(
    hub: Arc<Hub>,
    endpoint: quinn::Endpoint,
    gate: AcceptGate,
    limits: Limits,
    mesh: MeshAcceptance,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.changed() => return,
        };
        let Some(incoming) = incoming else {
            return;
        };
        match gate.on_incoming(
            incoming.remote_address(),
            incoming.remote_address_validated(),
        ) {
            IncomingDecision::Retry => {
                metrics::counter!(m::RETRIES_TOTAL, m::LABEL_NODE => hub.me().to_string())
                    .increment(1);
                if let Err(err) = incoming.retry() {
                    err.into_incoming().ignore();
                }
            }
            IncomingDecision::Refuse(refusal) => {
                count_refusal(&hub, refusal);
                incoming.refuse();
            }
            IncomingDecision::Accept(slot) => {
                let connecting = if mesh.peers.contains(&incoming.remote_address()) {
                    incoming.accept_with(Arc::clone(&mesh.server))
                } else {
                    incoming.accept()
                };
                tokio::spawn(serve_connection(
                    Arc::clone(&hub),
                    connecting,
                    slot,
                    gate.clone(),
                    limits.clone(),
                ));
            }
        }
    }
}

/// Completes the handshake and serves the connection, holding `slot` until
/// it ends.
async fn serve_connection(
    hub: Arc<Hub>,
    connecting: Result<quinn::Connecting, quinn::ConnectionError>,
    mut slot: ConnectionSlot,
    gate: AcceptGate,
    limits: Limits,
) {
    let started = crate::clock::monotonic_now();
    // The handshake is bounded by the transport's idle timeout.
    let handshake = match connecting {
        Ok(connecting) => connecting.await,
        Err(err) => Err(err),
    };
    slot.handshake_done();
    let Ok(conn) = handshake else {
        return;
    };
    metrics::histogram!(m::HANDSHAKE_DURATION_SECONDS, m::LABEL_NODE => hub.me().to_string())
        .record(started.elapsed().as_secs_f64());
    match crate::tls::negotiated_alpn(&conn).as_deref() {
        Some(crate::wire::ALPN_MESH) => {
            mesh::run_link(hub, conn, None, limits.max_message_bytes).await;
        }
        alpn => {
            let webtransport = alpn == Some(crate::browser::devcert::ALPN_H3);
            if !webtransport {
                metrics::counter!(m::CONNECTIONS_TOTAL, m::LABEL_NODE => hub.me().to_string(), m::LABEL_KIND => m::KIND_CLIENT)
                    .increment(1);
            }
            let permit = match gate.await_hello() {
                Ok(permit) => permit,
                Err(refusal) => {
                    count_refusal(&hub, refusal);
                    conn.close(
                        u32::try_from(ErrorCode::LimitExceeded.to_wire())
                            .unwrap_or_default()
                            .into(),
                        b"too many connections are waiting for HELLO",
                    );
                    return;
                }
            };
            let awaiting = AwaitingHello {
                deadline: crate::clock::timer_now() + gate.hello_deadline(),
                permit,
            };
            if webtransport {
                crate::browser::serve::run_webtransport(hub, conn, limits, awaiting).await;
            } else {
                session::run_client(hub, conn, limits, awaiting).await;
            }
        }
    }
    drop(slot);
}

fn count_refusal(hub: &Hub, refusal: Refusal) {
    metrics::counter!(m::CONNECTIONS_REFUSED_TOTAL, m::LABEL_NODE => hub.me().to_string(), m::LABEL_REASON => refusal.as_str())
        .increment(1);
    tracing::debug!(
        reason = refusal.as_str(),
        "connection refused by the accept gate"
    );
}
