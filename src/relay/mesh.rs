//! Mesh links (`georelay-mesh/1`): dialing configured peers with backoff,
//! accepting them with mutual TLS, and pumping control frames, media
//! datagrams and message streams between the link and the [`Hub`].
//!
//! Of the two ends of a configured link, the node whose id sorts first dials;
//! the other accepts. Each side checks that the other's certificate names the
//! node it claims in `PEER_HELLO`, and that the link is configured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::admin::metric_names as m;
use crate::error::ErrorCode;
use crate::ids::NodeId;
use crate::metadata::EventKind;
use crate::wire::stream::{FrameReader, Outbound, close_with, run_control_writer};
use crate::wire::{ErrorFrame, Frame, PROTOCOL_VERSION};

use super::core::PeerEntry;
use super::fanout::{DatagramQueue, MessageQueue};
use super::hub::{CONTROL_QUEUE, Hub};
use super::plane::PeerMsg;
use super::routes::{Receiver, Sender};
use super::session::read_messages;
use super::transport::QueuedControl;
use super::writers::{run_datagram_writer, run_message_writer};

/// First wait before redialing a peer; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between dials.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a peer has to complete `PEER_HELLO`.
const PEER_HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// How many reliable messages may wait for one peer.
const MESSAGE_QUEUE: usize = 8192;

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
                _ = run_link(Arc::clone(&hub), conn.clone(), Some(peer.clone()), max_message_bytes) => {}
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
    metrics::counter!(m::CONNECTIONS_TOTAL, m::LABEL_NODE => hub.me().to_string(), m::LABEL_KIND => m::KIND_MESH).increment(1);
    let handshake = match &dialed {
        Some(peer) => dial_handshake(&hub, &conn, peer).await,
        None => accept_handshake(&hub, &conn).await,
    };
    let (peer, send, reader, policy_version) = match handshake {
        Ok(parts) => parts,
        Err(error) => {
            tracing::warn!(node = %hub.me(), reason = %error.message, "mesh handshake refused");
            let code = quinn::VarInt::from_u64(error.code).unwrap_or(quinn::VarInt::from_u32(0));
            conn.close(code, error.message.as_bytes());
            return;
        }
    };
    let span = tracing::info_span!("mesh", node = %hub.me(), peer = %peer);
    let _entered = span.enter();
    tracing::info!(rtt_ms = conn.rtt().as_millis() as u64, policy_version = ?policy_version, "mesh link up");
    hub.set_peer_policy_version(&peer, policy_version);
    drop(_entered);
    hub.record(
        None,
        EventKind::LinkUp {
            peer: peer.clone(),
            rtt_ms: conn.rtt().as_secs_f64() * 1000.0,
        },
    );

    let policy = hub.policy();
    let queue_len = policy.fleet.limits.mesh_queue_packets;
    let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let datagrams = Arc::new(DatagramQueue::new(queue_len, Arc::clone(&hub.drops)));
    let (messages, messages_rx) = MessageQueue::new(MESSAGE_QUEUE, Arc::clone(&hub.drops));
    tokio::spawn(run_control_writer(
        send,
        control_rx,
        conn.clone(),
        Arc::default(),
    ));
    tokio::spawn(run_datagram_writer(Arc::clone(&datagrams), conn.clone()));
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
}

/// The peer, the control stream, and the policy version its `PEER_HELLO`
/// named (`None` for the old form).
type Handshake = (
    NodeId,
    quinn::SendStream,
    FrameReader<quinn::RecvStream>,
    Option<String>,
);

async fn dial_handshake(
    hub: &Hub,
    conn: &quinn::Connection,
    peer: &NodeId,
) -> Result<Handshake, ErrorFrame> {
    crate::tls::peer_node_id(conn, peer)
        .map_err(|e| ErrorFrame::new(ErrorCode::Unauthorized, e.to_string()))?;
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| ErrorFrame::new(ErrorCode::ProtocolViolation, e.to_string()))?;
    let mut buf = bytes::BytesMut::new();
    hub.peer_hello().encode(&mut buf);
    send.write_all(&buf)
        .await
        .map_err(|e| ErrorFrame::new(ErrorCode::ProtocolViolation, e.to_string()))?;
    let mut reader = FrameReader::new(recv);
    match tokio::time::timeout(PEER_HELLO_TIMEOUT, reader.next()).await {
        Ok(Ok(Some(Frame::PeerHello(hello)))) if hello.node == peer.as_str() => {
            Ok((peer.clone(), send, reader, hello.policy_version))
        }
        Ok(Ok(Some(Frame::Error(error)))) => Err(error),
        _ => Err(ErrorFrame::new(
            ErrorCode::ProtocolViolation,
            "expected PEER_HELLO from the dialed node",
        )),
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
    hub.peer_hello().encode(&mut buf);
    send.write_all(&buf)
        .await
        .map_err(|e| ErrorFrame::new(ErrorCode::ProtocolViolation, e.to_string()))?;
    Ok((peer, send, reader, hello.policy_version))
}
