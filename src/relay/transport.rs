//! What the relay needs from a connection, as traits, and their
//! implementations for native QUIC (`quinn::Connection`).
//!
//! [`SessionTransport`] is "a client connection": the session logic
//! ([`super::session::run_client`]) and the media writers are generic over
//! it, so native QUIC (ALPN `georelay/1`), a WebTransport session
//! (`web_transport_quinn::Session`, ALPN `h3`, path `/georelay`) and a
//! WebSocket adapter serve clients alike. It maps one-to-one onto
//! `web_transport_quinn::Session`: `accept_bi` (the control stream),
//! `accept_uni`/`open_uni`, `read_datagram`/`send_datagram` (and the
//! non-blocking `send_datagram` behind [`SessionTransport::send_datagram_now`]),
//! `max_datagram_size`, `close(code: u32, reason)`, `closed()`, and the
//! underlying `quinn::Connection` (it derefs to one) for the remote
//! address, stable id and path statistics.
//!
//! [`QueuedControl`] is the [`Control`] handle the relay core uses for
//! any such connection: a bounded queue drained by the connection's
//! control writer.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::ErrorCode;
use crate::wire::stream::{CloseConnection, Outbound};

use super::core::Control;
use super::fanout::{DatagramSink, Offer};

/// A connection-level failure: the connection closed or a stream could not
/// be opened or accepted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// Why a datagram was not sent.
#[derive(Debug, thiserror::Error)]
pub enum DatagramError {
    /// Larger than the path allows right now (counted as `too_large`).
    #[error("datagram larger than the path allows")]
    TooLarge,
    /// The connection is gone or does not support datagrams.
    #[error("{0}")]
    Closed(String),
}

/// How a datagram handed over without waiting was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramSent {
    /// Buffered for sending; nothing was discarded.
    Buffered,
    /// Buffered, but the send buffer was full, so the transport discarded
    /// its oldest buffered datagram(s) to make room (counted `queue_full`).
    DisplacedOldest,
}

/// Path statistics of a connection, for quality samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Packets sent on the path so far.
    pub sent_packets: u64,
    /// Of those, packets declared lost.
    pub lost_packets: u64,
}

/// A client connection, whatever carries it. See the module docs.
pub trait SessionTransport: CloseConnection + Clone + Send + Sync + 'static {
    /// The send half of a stream.
    type SendStream: AsyncWrite + Unpin + Send + 'static;
    /// The receive half of a stream.
    type RecvStream: AsyncRead + Unpin + Send + 'static;

    /// Accepts the client's first bidirectional stream: the control stream.
    fn accept_control(
        &self,
    ) -> impl Future<Output = Result<(Self::SendStream, Self::RecvStream), TransportError>> + Send;
    /// Accepts the next unidirectional stream the client opens (messages).
    fn accept_uni(&self) -> impl Future<Output = Result<Self::RecvStream, TransportError>> + Send;
    /// Opens a unidirectional stream to the client (messages).
    fn open_uni(&self) -> impl Future<Output = Result<Self::SendStream, TransportError>> + Send;
    /// The next media datagram from the client.
    fn read_datagram(&self) -> impl Future<Output = Result<Bytes, TransportError>> + Send;
    /// Sends one media datagram, waiting for room in the send buffer (the
    /// congestion controller paces the writer).
    fn send_datagram(
        &self,
        datagram: Bytes,
    ) -> impl Future<Output = Result<(), DatagramError>> + Send;
    /// Sends one media datagram now, never waiting: it goes into the
    /// connection's bounded datagram send buffer, and when that buffer has
    /// no room the transport discards its *oldest* buffered datagrams to
    /// make room (fresher media is worth more) and returns
    /// [`DatagramSent::DisplacedOldest`]. This is the relay's fast path: it
    /// is called from the publisher's ingress task once per subscriber, so it
    /// must not block, allocate per call beyond the datagram, or wait for
    /// the congestion controller. Errors as for [`Self::send_datagram`].
    ///
    /// Over `quinn::Connection` (and a WebTransport session, which derefs
    /// to one): `datagram_send_buffer_space() < datagram.len()` before
    /// `quinn::Connection::send_datagram` means it displaced older ones.
    fn send_datagram_now(&self, datagram: Bytes) -> Result<DatagramSent, DatagramError>;
    /// The largest datagram the path takes now; `None` without datagram
    /// support.
    fn max_datagram_size(&self) -> Option<usize>;
    /// The client's address as this node sees it.
    fn remote_address(&self) -> SocketAddr;
    /// Why the connection closed, once it has.
    fn close_reason(&self) -> Option<String>;
    /// An id unique among this node's live connections.
    fn stable_id(&self) -> usize;
    /// Round-trip time and loss of the path.
    fn path(&self) -> PathStats;
}

impl CloseConnection for quinn::Connection {
    fn close(&self, code: u32, reason: &[u8]) {
        quinn::Connection::close(self, quinn::VarInt::from_u32(code), reason);
    }

    async fn closed(&self) {
        let _ = quinn::Connection::closed(self).await;
    }
}

fn lost(err: impl std::fmt::Display) -> TransportError {
    TransportError(err.to_string())
}

impl SessionTransport for quinn::Connection {
    type SendStream = quinn::SendStream;
    type RecvStream = quinn::RecvStream;

    async fn accept_control(
        &self,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), TransportError> {
        self.accept_bi().await.map_err(lost)
    }

    async fn accept_uni(&self) -> Result<quinn::RecvStream, TransportError> {
        quinn::Connection::accept_uni(self).await.map_err(lost)
    }

    async fn open_uni(&self) -> Result<quinn::SendStream, TransportError> {
        quinn::Connection::open_uni(self).await.map_err(lost)
    }

    async fn read_datagram(&self) -> Result<Bytes, TransportError> {
        quinn::Connection::read_datagram(self).await.map_err(lost)
    }

    async fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramError> {
        match self.send_datagram_wait(datagram).await {
            Ok(()) => Ok(()),
            Err(quinn::SendDatagramError::TooLarge) => Err(DatagramError::TooLarge),
            Err(err) => Err(DatagramError::Closed(err.to_string())),
        }
    }

    fn send_datagram_now(&self, datagram: Bytes) -> Result<DatagramSent, DatagramError> {
        send_quinn_datagram_now(self, datagram)
    }

    fn max_datagram_size(&self) -> Option<usize> {
        quinn::Connection::max_datagram_size(self)
    }

    fn remote_address(&self) -> SocketAddr {
        quinn::Connection::remote_address(self)
    }

    fn close_reason(&self) -> Option<String> {
        quinn::Connection::close_reason(self).map(|e| e.to_string())
    }

    fn stable_id(&self) -> usize {
        quinn::Connection::stable_id(self)
    }

    fn path(&self) -> PathStats {
        let path = self.stats().path;
        PathStats {
            rtt: self.rtt(),
            sent_packets: path.sent_packets,
            lost_packets: path.lost_packets,
        }
    }
}

/// [`SessionTransport::send_datagram_now`] over a quinn connection (also
/// what a WebTransport session, which derefs to one, calls): quinn's
/// non-blocking `send_datagram` drops the oldest buffered datagrams when
/// its buffer is full, which is exactly when the space left is below the
/// datagram's size.
pub fn send_quinn_datagram_now(
    conn: &quinn::Connection,
    datagram: Bytes,
) -> Result<DatagramSent, DatagramError> {
    let displaces = conn.datagram_send_buffer_space() < datagram.len();
    match conn.send_datagram(datagram) {
        Ok(()) if displaces => Ok(DatagramSent::DisplacedOldest),
        Ok(()) => Ok(DatagramSent::Buffered),
        Err(quinn::SendDatagramError::TooLarge) => Err(DatagramError::TooLarge),
        Err(err) => Err(DatagramError::Closed(err.to_string())),
    }
}

impl<T: SessionTransport + std::fmt::Debug> DatagramSink for T {
    fn offer(&self, datagram: Bytes) -> Offer {
        match self.send_datagram_now(datagram) {
            Ok(DatagramSent::Buffered) => Offer::Sent,
            Ok(DatagramSent::DisplacedOldest) => Offer::DisplacedOldest,
            Err(DatagramError::TooLarge) => Offer::TooLarge,
            Err(DatagramError::Closed(_)) => Offer::Closed,
        }
    }
}

/// The core's [`Control`] handle of a connection: control frames go on a
/// bounded queue that the connection's control writer drains
/// ([`crate::wire::stream::run_control_writer`]).
#[derive(Debug)]
pub struct QueuedControl<T> {
    queue: tokio::sync::mpsc::Sender<Outbound>,
    conn: T,
}

impl<T: SessionTransport> QueuedControl<T> {
    /// The handle of `conn` whose writer drains `queue`.
    pub fn new(queue: tokio::sync::mpsc::Sender<Outbound>, conn: T) -> Self {
        Self { queue, conn }
    }
}

impl<T: SessionTransport + std::fmt::Debug> Control for QueuedControl<T> {
    fn send(&self, out: Outbound) -> bool {
        self.queue.try_send(out).is_ok()
    }

    fn abort(&self, code: ErrorCode, reason: &str) {
        let code = u32::try_from(code.to_wire()).unwrap_or(0);
        CloseConnection::close(&self.conn, code, reason.as_bytes());
    }

    fn connection_id(&self) -> usize {
        self.conn.stable_id()
    }

    fn rtt(&self) -> Duration {
        self.conn.path().rtt
    }
}
