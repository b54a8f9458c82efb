//! Mesh links (`georelay-mesh/1`): dialing configured peers with backoff,
//! accepting them with mutual TLS, and pumping control frames, media
//! datagrams and message streams between the link and the [`Hub`].
//!
//! Of the two ends of a configured link, the node whose id sorts first dials;
//! the other accepts. Each side checks that the other's certificate names the
//! node it claims in `PEER_HELLO`, and that the link is configured.
//!
//! `PEER_HELLO` carries the sender's policy version. A node of an older
//! release sends the old form (without it) and refuses the new one as a
//! protocol violation, so: the acceptor answers in the form it was greeted
//! with; a dialer whose `PEER_HELLO` was refused with `PROTOCOL_VIOLATION`
//! greets that peer in the old form next time (and back, if that is refused
//! too); and a reload's repeated `PEER_HELLO` goes only to peers that sent
//! the new form. Links between releases therefore come up either way, with
//! the old peer's version shown as unknown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::admin::metric_names as m;
use crate::error::ErrorCode;
use crate::ids::NodeId;
use crate::metadata::EventKind;
use crate::wire::stream::{FrameReader, Outbound, close_with, run_control_writer};
use crate::wire::{ErrorFrame, Frame, PROTOCOL_VERSION, PeerHello};

use super::core::PeerEntry;
use super::fanout::{DatagramQueue, MessageQueue};
use super::hub::{CONTROL_QUEUE, Hub};
use super::plane::PeerMsg;
use super::routes::{Receiver, Sender};
use super::session::read_messages;
use super::transport::QueuedControl;
use super::writers::run_message_writer;

/// First wait before redialing a peer; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between dials.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a peer has to complete `PEER_HELLO`.
const PEER_HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// How many reliable messages may wait for one peer.
const MESSAGE_QUEUE: usize = 8192;

/// Which `PEER_HELLO` this node greets a peer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HelloForm {
    /// With the policy version.
    Current,
    /// Without it, for a peer of an older release.
    Old,
}

impl HelloForm {
    fn of(hello: &PeerHello) -> Self {
        match hello.policy_version {
            Some(_) => HelloForm::Current,
            None => HelloForm::Old,
        }
    }

    fn other(self) -> Self {
        match self {
            HelloForm::Current => HelloForm::Old,
            HelloForm::Old => HelloForm::Current,
        }
    }
}

/// How a link ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkEnd {
    /// It was up, or failed for another reason.
    Closed,
    /// The peer answered our `PEER_HELLO` with `PROTOCOL_VIOLATION`.
    HelloRefused,
}

/// Dials `peer` at `addr` until shutdown, redialing with backoff whenever
/// the link drops.
pub async fn run_dialer(
    hub: Arc<Hub>,
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    peer: NodeId,
    addr: SocketAddr,
    max_message_bytes: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut form = HelloForm::Current;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let attempt = async {
            let connecting = endpoint
                .connect_with(config.clone(), addr, peer.as_str())
                .ok()?;
            connecting.await.ok()
        };
        if let Some(conn) = attempt.await {
            backoff = MIN_BACKOFF;
            tokio::select! {
                end = serve_link(Arc::clone(&hub), conn.clone(), Some((peer.clone(), form)), max_message_bytes) => {
                    if end == LinkEnd::HelloRefused {
                        form = form.other();
                        tracing::info!(node = %hub.me(), %peer, ?form, "PEER_HELLO refused; greeting the peer in the other form next");
                    }
                }
                _ = shutdown.changed() => {
                    conn.close(0u32.into(), b"shutdown");
                    return;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Runs one established mesh connection until it closes. `dialed` is the
/// peer this node dialed, or `None` for an accepted connection.
pub async fn run_link(
    hub: Arc<Hub>,
    conn: quinn::Connection,
    dialed: Option<NodeId>,
    max_message_bytes: usize,
) {
    let dialed = dialed.map(|peer| (peer, HelloForm::Current));
    serve_link(hub, conn, dialed, max_message_bytes).await;
}

/// [`run_link`], greeting a dialed peer with the given form.
async fn serve_link(
    hub: Arc<Hub>,
    conn: quinn::Connection,
    dialed: Option<(NodeId, HelloForm)>,
    max_message_bytes: usize,
) -> LinkEnd {
    metrics::counter!(m::CONNECTIONS_TOTAL, m::LABEL_NODE => hub.me().to_string(), m::LABEL_KIND => m::KIND_MESH).increment(1);
    let version_greeted = hub.policy().version;
    let handshake = match &dialed {
        Some((peer, form)) => dial_handshake(&hub, &conn, peer, *form).await,
        None => accept_handshake(&hub, &conn)
            .await
            .map_err(|error| (error, LinkEnd::Closed)),
    };
    let (peer, send, reader, policy_version) = match handshake {
        Ok(parts) => parts,
        Err((error, end)) => {
            tracing::warn!(node = %hub.me(), reason = %error.message, "mesh handshake refused");
            let code = quinn::VarInt::from_u64(error.code).unwrap_or(quinn::VarInt::from_u32(0));
            conn.close(code, error.message.as_bytes());
            return end;
        }
    };
    let span = tracing::info_span!("mesh", node = %hub.me(), peer = %peer);
    let _entered = span.enter();
    tracing::info!(rtt_ms = conn.rtt().as_millis() as u64, policy_version = ?policy_version, "mesh link up");
    let speaks_versions = policy_version.is_some();
    hub.set_peer_policy_version(&peer, policy_version);
    drop(_entered);
    hub.record(
        None,
        EventKind::LinkUp {
            peer: peer.clone(),
            rtt_ms: conn.rtt().as_secs_f64() * 1000.0,
        },
    );

    let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
    // Media goes straight from the ingress task into the link's bounded
    // QUIC datagram send buffer (`mesh_datagram_send_buffer_bytes`), which
    // drops its oldest datagram when the link falls behind: counted against
    // this link and the node, never holding back the publisher or others.
    let datagrams = Arc::new(DatagramQueue::direct(
        Box::new(conn.clone()),
        Arc::clone(&hub.drops),
    ));
    let (messages, messages_rx) = MessageQueue::new(MESSAGE_QUEUE, Arc::clone(&hub.drops));
    tokio::spawn(run_control_writer(
        send,
        control_rx,
        conn.clone(),
        Arc::default(),
    ));
    tokio::spawn(run_message_writer(
        messages_rx,
        conn.clone(),
        Arc::default(),
    ));
    hub.peer_up(
        peer.clone(),
        PeerEntry {
            control: Arc::new(QueuedControl::new(control.clone(), conn.clone())),
            receiver: Receiver {
                datagrams,
                messages,
            },
        },
    );
    // A reload between the greeting and `peer_up` found no peer to tell.
    if speaks_versions && hub.policy().version != version_greeted {
        let _ = control.try_send(Outbound::Frame(Frame::PeerHello(hub.peer_hello())));
    }

    let datagram_task = {
        let (hub, conn, peer) = (Arc::clone(&hub), conn.clone(), peer.clone());
        tokio::spawn(async move {
            while let Ok(datagram) = conn.read_datagram().await {
                hub.routes().peer_datagram(&peer, datagram);
            }
        })
    };
    let streams_task = {
        let (hub, conn, peer) = (Arc::clone(&hub), conn.clone(), peer.clone());
        tokio::spawn(async move {
            while let Ok(recv) = conn.accept_uni().await {
                let (hub, peer) = (Arc::clone(&hub), peer.clone());
                tokio::spawn(read_messages(
                    recv,
                    conn.clone(),
                    max_message_bytes,
                    move |track, payload| {
                        hub.routes().message(Sender::Peer(&peer), track, payload);
                    },
                ));
            }
        })
    };
    let mut reader = reader;
    loop {
        let frame = tokio::select! {
            frame = reader.next() => frame,
            _ = conn.closed() => break,
        };
        match frame {
            // A repeated PEER_HELLO: the peer's policy version changed.
            Ok(Some(Frame::PeerHello(hello)))
                if hello.node == peer.as_str() && hello.version == PROTOCOL_VERSION =>
            {
                tracing::info!(node = %hub.me(), %peer, policy_version = ?hello.policy_version, "peer policy version");
                hub.set_peer_policy_version(&peer, hello.policy_version);
            }
            Ok(Some(frame)) => match PeerMsg::from_frame(frame) {
                Some(msg) => hub.peer_msg(&peer, msg),
                None => {
                    let error = ErrorFrame::new(
                        ErrorCode::ProtocolViolation,
                        "unexpected frame on a mesh link",
                    );
                    let _ = control.try_send(Outbound::Close(error));
                    break;
                }
            },
            Ok(None) => break,
            Err(err) => {
                let _ = control.try_send(Outbound::Close(ErrorFrame::new(
                    err.code(),
                    err.to_string(),
                )));
                break;
            }
        }
    }
    datagram_task.abort();
    streams_task.abort();
    hub.peer_down(&peer, conn.stable_id());
    let reason = conn
        .close_reason()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "control stream ended".into());
    tracing::info!(node = %hub.me(), peer = %peer, %reason, "mesh link down");
    hub.record(None, EventKind::LinkDown { peer, reason });
    LinkEnd::Closed
}

/// The peer, the control stream, and the policy version its `PEER_HELLO`
/// named (`None` for the old form).
type Handshake = (
    NodeId,
    quinn::SendStream,
    FrameReader<quinn::RecvStream>,
    Option<String>,
);

/// This node's `PEER_HELLO` in `form`, encoded.
fn hello_bytes(hub: &Hub, form: HelloForm, buf: &mut bytes::BytesMut) {
    let mut hello = hub.peer_hello();
    if form == HelloForm::Old {
        hello.policy_version = None;
    }
    Frame::PeerHello(hello).encode(buf);
}

/// Whether the peer ended the connection as a protocol violation: how a
/// node of an older release refuses a `PEER_HELLO` it cannot read.
fn closed_as_violation(conn: &quinn::Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code.into_inner() == ErrorCode::ProtocolViolation.to_wire()
    )
}

/// The dialer's side; a failure says whether the peer refused our
/// `PEER_HELLO` ([`LinkEnd::HelloRefused`]).
async fn dial_handshake(
    hub: &Hub,
    conn: &quinn::Connection,
    peer: &NodeId,
    form: HelloForm,
) -> Result<Handshake, (ErrorFrame, LinkEnd)> {
    let closed = |error: ErrorFrame| (error, LinkEnd::Closed);
    crate::tls::peer_node_id(conn, peer)
        .map_err(|e| closed(ErrorFrame::new(ErrorCode::Unauthorized, e.to_string())))?;
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| closed(ErrorFrame::new(ErrorCode::ProtocolViolation, e.to_string())))?;
    let mut buf = bytes::BytesMut::new();
    hello_bytes(hub, form, &mut buf);
    send.write_all(&buf)
        .await
        .map_err(|e| closed(ErrorFrame::new(ErrorCode::ProtocolViolation, e.to_string())))?;
    let mut reader = FrameReader::new(recv);
    match tokio::time::timeout(PEER_HELLO_TIMEOUT, reader.next()).await {
        Ok(Ok(Some(Frame::PeerHello(hello)))) if hello.node == peer.as_str() => {
            Ok((peer.clone(), send, reader, hello.policy_version))
        }
        Ok(Ok(Some(Frame::Error(error)))) => {
            let end = if error.code == ErrorCode::ProtocolViolation.to_wire() {
                LinkEnd::HelloRefused
            } else {
                LinkEnd::Closed
            };
            Err((error, end))
        }
        _ => {
            let end = if closed_as_violation(conn) {
                LinkEnd::HelloRefused
            } else {
                LinkEnd::Closed
            };
            let error = ErrorFrame::new(
                ErrorCode::ProtocolViolation,
                "expected PEER_HELLO from the dialed node",
            );
            Err((error, end))
        }
    }
}

async fn accept_handshake(hub: &Hub, conn: &quinn::Connection) -> Result<Handshake, ErrorFrame> {
    let (mut send, recv) = tokio::time::timeout(PEER_HELLO_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| ErrorFrame::new(ErrorCode::ProtocolViolation, "no control stream"))?
        .map_err(|e| ErrorFrame::new(ErrorCode::ProtocolViolation, e.to_string()))?;
    let mut reader = FrameReader::new(recv);
    let refuse = |error: ErrorFrame| error;
    let hello = match tokio::time::timeout(PEER_HELLO_TIMEOUT, reader.next()).await {
        Ok(Ok(Some(Frame::PeerHello(hello)))) => hello,
        _ => {
            return Err(refuse(ErrorFrame::new(
                ErrorCode::ProtocolViolation,
                "the first mesh frame must be PEER_HELLO",
            )));
        }
    };
    let peer = NodeId::new(hello.node.as_str());
    let policy = hub.policy();
    let mut buf = bytes::BytesMut::new();
    let linked = policy
        .fleet
        .links
        .iter()
        .any(|l| (l.a == peer && &l.b == hub.me()) || (l.b == peer && &l.a == hub.me()));
    let verdict = if hello.version != PROTOCOL_VERSION {
        Err(ErrorFrame::new(
            ErrorCode::UnsupportedVersion,
            "unsupported mesh version",
        ))
    } else if let Err(err) = crate::tls::peer_node_id(conn, &peer) {
        Err(ErrorFrame::new(
            ErrorCode::Unauthorized,
            format!("certificate does not name {peer}: {err}"),
        ))
    } else if !linked {
        Err(ErrorFrame::new(
            ErrorCode::Unauthorized,
            format!("no configured link between {} and {peer}", hub.me()),
        ))
    } else {
        Ok(())
    };
    if let Err(error) = verdict {
        close_with(&mut send, conn, &error, &mut buf).await;
        return Err(error);
    }
    // Answer in the form we were greeted with: an older peer cannot read
    // the policy version.
    hello_bytes(hub, HelloForm::of(&hello), &mut buf);
    send.write_all(&buf)
        .await
        .map_err(|e| ErrorFrame::new(ErrorCode::ProtocolViolation, e.to_string()))?;
    Ok((peer, send, reader, hello.policy_version))
}
