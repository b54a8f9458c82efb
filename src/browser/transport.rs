//! [`SessionTransport`] for the two browser transports, so that the relay's
//! session logic ([`crate::relay::session::run_client`]) serves them exactly
//! as it serves native QUIC: same admission, limits, fan-out and counters.
//!
//! - `web_transport_quinn::Session` (ALPN `h3`, path `/georelay`): streams
//!   and datagrams map one-to-one; the georelay close code travels in the
//!   WebTransport session close.
//! - [`WsTransport`], a shared [`WsSession`] (the WebSocket fallback): its
//!   receive halves read as [`AsyncRead`]; its send halves are fed through a
//!   bounded in-memory pipe whose pump task writes the bytes as WebSocket
//!   chunks, so writers see ordinary backpressure.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf, SimplexStream, WriteHalf};

use crate::relay::transport::{
    DatagramError, DatagramSent, PathStats, SessionTransport, TransportError,
};
use crate::wire::stream::CloseConnection;

use super::websocket::{WS_CHUNK, WsRecvStream, WsSendStream, WsSession};

fn lost(err: impl std::fmt::Display) -> TransportError {
    TransportError(err.to_string())
}

fn quic_path(conn: &quinn::Connection) -> PathStats {
    let path = conn.stats().path;
    PathStats {
        rtt: conn.rtt(),
        sent_packets: path.sent_packets,
        lost_packets: path.lost_packets,
    }
}

impl CloseConnection for web_transport_quinn::Session {
    /// Ends the session with `CLOSE_WEBTRANSPORT_SESSION` carrying `code`
    /// (docs/PROTOCOL.md §11). The session's HTTP/3 control streams belong
    /// to the `Session` handles: were the last one dropped before the
    /// connection closes, the client would see its peer close a critical
    /// stream and drop the connection as lost (Chromium rejects
    /// `WebTransport.closed` instead of reporting the code). A clone is kept
    /// until the connection is closed, which `web-transport-quinn` bounds
    /// (it closes the connection at most 3 RTTs after the capsule).
    fn close(&self, code: u32, reason: &[u8]) {
        web_transport_quinn::Session::close(self, code, reason);
        let keep = self.clone();
        tokio::spawn(async move {
            let _ = quinn::Connection::closed(&keep).await;
        });
    }

    async fn closed(&self) {
        let _ = web_transport_quinn::Session::closed(self).await;
    }
}

impl SessionTransport for web_transport_quinn::Session {
    type SendStream = web_transport_quinn::SendStream;
    type RecvStream = web_transport_quinn::RecvStream;

    async fn accept_control(&self) -> Result<(Self::SendStream, Self::RecvStream), TransportError> {
        self.accept_bi().await.map_err(lost)
    }

    async fn accept_uni(&self) -> Result<Self::RecvStream, TransportError> {
        web_transport_quinn::Session::accept_uni(self)
            .await
            .map_err(lost)
    }

    async fn open_uni(&self) -> Result<Self::SendStream, TransportError> {
        web_transport_quinn::Session::open_uni(self)
            .await
            .map_err(lost)
    }

    async fn read_datagram(&self) -> Result<Bytes, TransportError> {
        web_transport_quinn::Session::read_datagram(self)
            .await
            .map_err(lost)
    }

    async fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramError> {
        match self.send_datagram_wait(datagram).await {
            Ok(()) => Ok(()),
            Err(web_transport_quinn::SessionError::SendDatagramError(
                quinn::SendDatagramError::TooLarge,
            )) => Err(DatagramError::TooLarge),
            Err(err) => Err(DatagramError::Closed(err.to_string())),
        }
    }

    fn send_datagram_now(&self, datagram: Bytes) -> Result<DatagramSent, DatagramError> {
        // The session prepends its id (a varint of at most 8 bytes) to each
        // datagram on the underlying connection.
        let displaces = quinn::Connection::datagram_send_buffer_space(self) < datagram.len() + 8;
        match web_transport_quinn::Session::send_datagram(self, datagram) {
            Ok(()) if displaces => Ok(DatagramSent::DisplacedOldest),
            Ok(()) => Ok(DatagramSent::Buffered),
            Err(web_transport_quinn::SessionError::SendDatagramError(
                quinn::SendDatagramError::TooLarge,
            )) => Err(DatagramError::TooLarge),
            Err(err) => Err(DatagramError::Closed(err.to_string())),
        }
    }

    fn max_datagram_size(&self) -> Option<usize> {
        match web_transport_quinn::Session::max_datagram_size(self) {
            0 => None,
            size => Some(size),
        }
    }

    fn remote_address(&self) -> SocketAddr {
        quinn::Connection::remote_address(self)
    }

    fn close_reason(&self) -> Option<String> {
        web_transport_quinn::Session::close_reason(self).map(|e| e.to_string())
    }

    fn stable_id(&self) -> usize {
        quinn::Connection::stable_id(self)
    }

    fn path(&self) -> PathStats {
        quic_path(self)
    }
}

/// A WebSocket fallback session shared by the relay's tasks.
#[derive(Clone, Debug)]
pub struct WsTransport(Arc<WsSession>);

impl WsTransport {
    /// Shares `session`.
    pub fn new(session: WsSession) -> Self {
        Self(Arc::new(session))
    }

    /// The session.
    pub fn session(&self) -> &WsSession {
        &self.0
    }

    /// Wraps a WebSocket send half as an [`tokio::io::AsyncWrite`]: a
    /// bounded pipe (one chunk) drained by a pump that finishes the stream
    /// at end of input.
    fn writer(&self, mut send: WsSendStream) -> WriteHalf<SimplexStream> {
        let (mut read, write) = tokio::io::simplex(WS_CHUNK);
        tokio::spawn(async move {
            let mut buf = vec![0u8; WS_CHUNK];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if send.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = send.finish().await;
        });
        write
    }
}

/// A WebSocket fallback stream's receive half as an [`AsyncRead`].
#[derive(Debug)]
pub struct WsReader {
    stream: WsRecvStream,
    pending: Bytes,
}

impl AsyncRead for WsReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.pending.is_empty() {
            match self.stream.poll_chunk(cx) {
                Poll::Ready(Some(chunk)) => self.pending = chunk,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl CloseConnection for WsTransport {
    fn close(&self, code: u32, reason: &[u8]) {
        self.0.close(code, reason);
    }

    async fn closed(&self) {
        let _ = self.0.closed().await;
    }
}

impl SessionTransport for WsTransport {
    type SendStream = WriteHalf<SimplexStream>;
    type RecvStream = WsReader;

    async fn accept_control(&self) -> Result<(Self::SendStream, Self::RecvStream), TransportError> {
        // The fallback's framing has exactly one bidirectional stream, open
        // from the start: once it is taken, no other can arrive, so a second
        // call waits until the session ends (as QUIC's accept_bi would).
        let Some((send, recv)) = self.0.accept_control() else {
            let close = self.0.closed().await;
            return Err(TransportError(format!("{close:?}")));
        };
        Ok((
            self.writer(send),
            WsReader {
                stream: recv,
                pending: Bytes::new(),
            },
        ))
    }

    async fn accept_uni(&self) -> Result<Self::RecvStream, TransportError> {
        let stream = self.0.accept_uni().await.map_err(lost)?;
        Ok(WsReader {
            stream,
            pending: Bytes::new(),
        })
    }

    async fn open_uni(&self) -> Result<Self::SendStream, TransportError> {
        let send = self.0.open_uni().map_err(lost)?;
        Ok(self.writer(send))
    }

    async fn read_datagram(&self) -> Result<Bytes, TransportError> {
        self.0.read_datagram().await.map_err(lost)
    }

    async fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramError> {
        if datagram.len() > self.0.max_datagram_size() {
            return Err(DatagramError::TooLarge);
        }
        self.0
            .send_datagram(datagram)
            .map_err(|err| DatagramError::Closed(err.to_string()))
    }

    fn send_datagram_now(&self, datagram: Bytes) -> Result<DatagramSent, DatagramError> {
        if datagram.len() > self.0.max_datagram_size() {
            return Err(DatagramError::TooLarge);
        }
        match self.0.send_datagram_displacing(datagram) {
            Ok(true) => Ok(DatagramSent::DisplacedOldest),
            Ok(false) => Ok(DatagramSent::Buffered),
            Err(err) => Err(DatagramError::Closed(err.to_string())),
        }
    }

    fn max_datagram_size(&self) -> Option<usize> {
        Some(self.0.max_datagram_size())
    }

    fn remote_address(&self) -> SocketAddr {
        self.0.remote_address()
    }

    fn close_reason(&self) -> Option<String> {
        self.0.close_reason().map(|close| format!("{close:?}"))
    }

    fn stable_id(&self) -> usize {
        // The session's address is unique among live sessions.
        Arc::as_ptr(&self.0) as usize
    }

    fn path(&self) -> PathStats {
        PathStats {
            rtt: self.0.rtt().unwrap_or_default(),
            sent_packets: 0,
            lost_packets: 0,
        }
    }
}
