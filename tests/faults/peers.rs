//! Hostile peers: connections that complete the QUIC handshake and then
//! never send `HELLO`, and a peer that opens every stream it may and fills
//! each without ever finishing it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint};
use rustls::RootCertStore;

/// One client endpoint per source address.
pub fn endpoints(sources: &[IpAddr], roots: &Arc<RootCertStore>) -> Vec<Endpoint> {
    let transport = Arc::new(georelay::tls::transport_config(
        georelay::tls::TransportKind::Client,
    ));
    let config = georelay::tls::client_config(Arc::clone(roots), transport).expect("client config");
    sources
        .iter()
        .map(|ip| {
            let mut endpoint =
                Endpoint::client(SocketAddr::new(*ip, 0)).expect("bind a client endpoint");
            endpoint.set_default_client_config(config.clone());
            endpoint
        })
        .collect()
}

/// A connection that completed its handshake and says nothing.
#[derive(Debug)]
pub struct Silent {
    /// The connection.
    pub conn: Connection,
    /// When the client started connecting (before the node accepted it).
    pub started: Instant,
    /// When the client's side of the handshake finished.
    pub handshake_done: Instant,
    /// Resolves when the connection closes: when, and why. Watched from the
    /// end of the handshake, so the time is the close's, not when a test
    /// got round to looking.
    pub closed: tokio::task::JoinHandle<(Instant, quinn::ConnectionError)>,
}

/// Opens `count` connections to `node` (spread over `endpoints`) that
/// complete the handshake and then say nothing, one every `pace` (all at
/// once when `None`). Returns the ones that got through.
pub async fn never_hello(
    endpoints: &[Endpoint],
    node: SocketAddr,
    server_name: &str,
    count: usize,
    pace: Option<Duration>,
) -> Vec<Silent> {
    let mut handshakes = tokio::task::JoinSet::new();
    let mut ticks = pace.map(|every| {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        ticks
    });
    for n in 0..count {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        let endpoint = endpoints[n % endpoints.len()].clone();
        let name = server_name.to_owned();
        handshakes.spawn(async move {
            let started = georelay::clock::monotonic_now();
            let conn = endpoint.connect(node, &name).ok()?.await.ok()?;
            let handshake_done = georelay::clock::monotonic_now();
            let closed = tokio::spawn({
                let conn = conn.clone();
                async move {
                    let reason = conn.closed().await;
                    (georelay::clock::monotonic_now(), reason)
                }
            });
            Some(Silent {
                conn,
                started,
                handshake_done,
                closed,
            })
        });
    }
    let mut connections = Vec::new();
    while let Some(joined) = handshakes.join_next().await {
        if let Ok(Some(conn)) = joined {
            connections.push(conn);
        }
    }
    connections
}

/// What a stream-exhaustion peer managed to make the node accept. Its
/// streams stay open (unfinished) while this is alive.
#[derive(Debug, Default)]
pub struct Exhaustion {
    /// The open streams, never finished.
    pub streams: Vec<quinn::SendStream>,
    /// Bidirectional streams it could open (the control stream included).
    pub bidi_opened: usize,
    /// Unidirectional streams it could open.
    pub uni_opened: usize,
    /// Bytes the node's flow control let it send, over all streams, before
    /// every stream blocked.
    pub bytes_accepted: u64,
}

/// Opens up to `bidi` bidirectional and `uni` unidirectional streams on
/// `conn` and writes up to `per_stream` bytes on each, never finishing any.
/// A stream blocked by flow control for `stall` counts as full; an open
/// blocked as long counts as refused.
pub async fn exhaust_streams(
    conn: &Connection,
    bidi: usize,
    uni: usize,
    per_stream: usize,
    stall: Duration,
) -> Exhaustion {
    let mut report = Exhaustion::default();
    let chunk = vec![0x5a_u8; 16 * 1024];
    let mut sends = Vec::new();
    for _ in 0..bidi {
        match tokio::time::timeout(stall, conn.open_bi()).await {
            Ok(Ok((send, _recv))) => {
                report.bidi_opened += 1;
                sends.push(send);
            }
            _ => break,
        }
    }
    for _ in 0..uni {
        match tokio::time::timeout(stall, conn.open_uni()).await {
            Ok(Ok(send)) => {
                report.uni_opened += 1;
                sends.push(send);
            }
            _ => break,
        }
    }
    let mut writers = tokio::task::JoinSet::new();
    for mut send in sends {
        let chunk = chunk.clone();
        writers.spawn(async move {
            let mut written = 0u64;
            while (written as usize) < per_stream {
                match tokio::time::timeout(stall, send.write(&chunk)).await {
                    Ok(Ok(n)) => written += n as u64,
                    _ => break,
                }
            }
            (written, send)
        });
    }
    while let Some(joined) = writers.join_next().await {
        if let Ok((written, send)) = joined {
            report.bytes_accepted += written;
            report.streams.push(send);
        }
    }
    report
}
