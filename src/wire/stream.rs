//! Control-stream IO shared by the relay's sessions and mesh links and by
//! the SDK: reading frames with a bounded decoder, and a writer task that
//! owns the send half and closes the connection cleanly after an `ERROR`
//! frame.
//!
//! Generic over the byte streams (`tokio::io::AsyncRead`/`AsyncWrite`) and
//! over the connection ([`CloseConnection`]), so native QUIC, WebTransport
//! and a WebSocket adapter frame their control streams the same way.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::ErrorCode;

use super::{ErrorFrame, Frame, FrameDecoder, MAX_FRAME_BODY, WireError};

/// How long a closing side waits for the peer to read its `ERROR` frame and
/// close first, before closing itself.
pub const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// How many bytes one read of a control stream asks for.
const READ_CHUNK: usize = 16 * 1024;

/// What a connection's control writer is asked to do.
#[derive(Debug)]
pub enum Outbound {
    /// Write a frame on the control stream.
    Frame(Frame),
    /// Write this `ERROR` frame, then close the connection with its code.
    Close(ErrorFrame),
}

/// The part of a connection the control writer needs: closing it with an
/// application code, and noticing that the peer closed it.
pub trait CloseConnection: Send + Sync + 'static {
    /// Closes the connection with an application error code and reason.
    fn close(&self, code: u32, reason: &[u8]);
    /// Resolves once the connection is closed (by either side).
    fn closed(&self) -> impl Future<Output = ()> + Send;
}

/// Why a control stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The peer sent bytes that do not decode.
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    /// The stream or connection failed.
    #[error("control stream: {0}")]
    Read(#[from] std::io::Error),
}

impl StreamError {
    /// The code to close the connection with.
    pub fn code(&self) -> ErrorCode {
        match self {
            StreamError::Wire(err) => err.code(),
            StreamError::Read(_) => ErrorCode::ProtocolViolation,
        }
    }
}

/// Reads frames from one control stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    recv: R,
    decoder: FrameDecoder,
    chunk: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `recv` with the protocol's frame-size limit.
    pub fn new(recv: R) -> Self {
        Self {
            recv,
            decoder: FrameDecoder::new(MAX_FRAME_BODY),
            chunk: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, StreamError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            self.chunk.clear();
            self.chunk.reserve(READ_CHUNK);
            if self.recv.read_buf(&mut self.chunk).await? == 0 {
                if self.decoder.buffered() > 0 {
                    return Err(StreamError::Wire(WireError::Truncated));
                }
                return Ok(None);
            }
            self.decoder.push(&self.chunk);
        }
    }
}

/// Owns the send half of a control stream: writes queued frames in order;
/// on [`Outbound::Close`] writes the `ERROR` frame, gives the peer
/// [`CLOSE_GRACE`] to close first, then closes with the frame's code, which
/// it also leaves in `closed_with`.
pub async fn run_control_writer<W, C>(
    mut send: W,
    mut rx: mpsc::Receiver<Outbound>,
    conn: C,
    closed_with: Arc<OnceLock<ErrorCode>>,
) where
    W: AsyncWrite + Unpin,
    C: CloseConnection,
{
    let mut buf = BytesMut::new();
    while let Some(out) = rx.recv().await {
        buf.clear();
        match out {
            Outbound::Frame(frame) => {
                frame.encode(&mut buf);
                if send.write_all(&buf).await.is_err() {
                    return;
                }
            }
            Outbound::Close(error) => {
                if let Some(code) = error.error_code() {
                    let _ = closed_with.set(code);
                }
                close_with(&mut send, &conn, &error, &mut buf).await;
                return;
            }
        }
    }
}

/// Writes `error` on the stream, waits up to [`CLOSE_GRACE`] for the peer to
/// close, then closes the connection with the error's code.
pub async fn close_with<W, C>(send: &mut W, conn: &C, error: &ErrorFrame, buf: &mut BytesMut)
where
    W: AsyncWrite + Unpin,
    C: CloseConnection,
{
    buf.clear();
    Frame::Error(error.clone()).encode(buf);
    let _ = send.write_all(buf).await;
    let _ = send.shutdown().await;
    let _ = tokio::time::timeout(CLOSE_GRACE, conn.closed()).await;
    let code = u32::try_from(error.code).unwrap_or(0);
    let reason = error.error_code().map(ErrorCode::name).unwrap_or("ERROR");
    conn.close(code, reason.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frames: &[Frame]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for frame in frames {
            frame.encode(&mut buf);
        }
        buf.to_vec()
    }

    #[tokio::test]
    async fn reads_frames_split_across_reads_and_ends_cleanly() {
        let bytes = encoded(&[Frame::Subscribe, Frame::Goodbye]);
        let (mut tx, rx) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            tx.write_all(&bytes).await.unwrap_or_default();
        });
        let mut reader = FrameReader::new(rx);
        assert!(matches!(reader.next().await, Ok(Some(Frame::Subscribe))));
        assert!(matches!(reader.next().await, Ok(Some(Frame::Goodbye))));
        let _ = writer.await;
        assert!(matches!(reader.next().await, Ok(None)));
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_truncated() {
        let bytes = encoded(&[Frame::Goodbye]);
        let cut = bytes[..bytes.len() - 1].to_vec();
        let mut reader = FrameReader::new(&cut[..]);
        match reader.next().await {
            Err(err) => assert_eq!(err.code(), ErrorCode::ProtocolViolation),
            other => panic!("expected a truncated frame, got {other:?}"),
        }
    }
}
