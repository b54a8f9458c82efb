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
//!   the node accepted it, to complete its handshake, open its control
//!   stream and send `HELLO`.
//!
//! Every refusal (and every connection closed at the `HELLO` deadline) is
//! also operational metadata: the gate counts them per reason and source
//! address, and [`record_refusals`] writes one `connections_refused` event
//! per reason and minimised address every [`REFUSAL_WINDOW`].
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

/// How often refused connections are written as metadata events.
pub(super) const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

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
            _ = shutdown.changed() => break,
        };
        let Some(incoming) = incoming else {
            break;
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
                let from_peer = mesh.peers.contains(&incoming.remote_address());
                let connecting = if from_peer {
                    incoming.accept_with(Arc::clone(&mesh.server))
                } else {
                    incoming.accept()
                };
                // A client's HELLO deadline runs from here: a handshake that
                // stalls (its packets lost under a flood, or a peer that
                // stops half-way) is closed by it too.
                let hello_deadline =
                    (!from_peer).then(|| crate::clock::timer_now() + gate.hello_deadline());
                tokio::spawn(serve_connection(
                    Arc::clone(&hub),
                    connecting,
                    hello_deadline,
                    slot,
                    gate.clone(),
                    limits.clone(),
                ));
            }
        }
    }
}

/// Writes the gate's refusal counts as metadata every [`REFUSAL_WINDOW`],
/// and once more when `shutdown` changes. One per node: the gate is shared
/// by every endpoint's accept loop and the WebSocket fallback.
pub(super) async fn record_refusals(
    hub: Arc<Hub>,
    gate: AcceptGate,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(REFUSAL_WINDOW);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => write_refusals(&hub, &gate),
            _ = shutdown.changed() => break,
        }
    }
    write_refusals(&hub, &gate);
}

fn write_refusals(hub: &Hub, gate: &AcceptGate) {
    let refused = gate.take_refused();
    if refused.is_empty() {
        return;
    }
    let ip_mode = hub.policy().fleet.metadata.ip_mode;
    for refusal in refused {
        hub.record(
            None,
            crate::metadata::EventKind::ConnectionsRefused {
                reason: refusal.reason.as_str().to_string(),
                count: refusal.count,
                client_ip: refusal
                    .source
                    .map_or_else(crate::metadata::MinimisedIp::dropped, |ip| {
                        crate::metadata::minimise(ip, ip_mode)
                    }),
            },
        );
    }
}

/// Completes the handshake and serves the connection, holding `slot` until
/// it ends. A client's handshake and `HELLO` must both be done by
/// `hello_deadline`; a mesh peer's handshake is bounded by the transport's
/// idle timeout.
async fn serve_connection(
    hub: Arc<Hub>,
    connecting: Result<quinn::Connecting, quinn::ConnectionError>,
    hello_deadline: Option<tokio::time::Instant>,
    mut slot: ConnectionSlot,
    gate: AcceptGate,
    limits: Limits,
) {
    let started = crate::clock::monotonic_now();
    let handshake = match connecting {
        Ok(connecting) => complete_handshake(connecting, hello_deadline, &gate).await,
        Err(_) => None,
    };
    slot.handshake_done();
    let Some(conn) = handshake else {
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
                    gate.note_refusal(refusal, conn.remote_address().ip());
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
                deadline: hello_deadline
                    .unwrap_or_else(|| crate::clock::timer_now() + gate.hello_deadline()),
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

/// The connection once its handshake completed; `None` when it failed, or
/// when `deadline` passed first: then the connection is closed with
/// `PROTOCOL_VIOLATION` (sent as a transport `APPLICATION_ERROR` while the
/// handshake is unfinished, RFC 9000 §10.2.3) and counted as a `HELLO`
/// deadline refusal.
async fn complete_handshake(
    connecting: quinn::Connecting,
    deadline: Option<tokio::time::Instant>,
    gate: &AcceptGate,
) -> Option<quinn::Connection> {
    let Some(deadline) = deadline else {
        return connecting.await.ok();
    };
    // A server-side `Connecting` always converts (0.5-RTT): the connection
    // handle is needed to close it at the deadline. Nothing is read or sent
    // on it before the handshake completes.
    let (conn, established) = match connecting.into_0rtt() {
        Ok(pair) => pair,
        Err(connecting) => return connecting.await.ok(),
    };
    match tokio::time::timeout_at(deadline, established).await {
        Ok(_) if conn.close_reason().is_none() => Some(conn),
        Ok(_) => None,
        Err(_) => {
            gate.note_refusal(Refusal::HelloDeadline, conn.remote_address().ip());
            conn.close(
                u32::try_from(ErrorCode::ProtocolViolation.to_wire())
                    .unwrap_or_default()
                    .into(),
                b"no HELLO within the HELLO deadline",
            );
            None
        }
    }
}

fn count_refusal(hub: &Hub, refusal: Refusal) {
    metrics::counter!(m::CONNECTIONS_REFUSED_TOTAL, m::LABEL_NODE => hub.me().to_string(), m::LABEL_REASON => refusal.as_str())
        .increment(1);
    tracing::debug!(
        reason = refusal.as_str(),
        "connection refused by the accept gate"
    );
}
