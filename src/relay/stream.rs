//! Control-stream IO shared by client sessions, mesh links and the SDK:
//! reading frames with a bounded decoder, and a writer task that owns the
//! send half and closes the connection cleanly after an `ERROR` frame.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::mpsc;

use crate::error::ErrorCode;
use crate::wire::{ErrorFrame, Frame, FrameDecoder, MAX_FRAME_BODY, WireError};

use super::hub::Outbound;

/// How long a closing side waits for the peer to read its `ERROR` frame and
/// close first, before closing itself.
pub const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Why a control stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The peer sent bytes that do not decode.
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    /// The stream or connection failed.
    #[error("control stream: {0}")]
    Read(#[from] quinn::ReadError),
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
pub struct FrameReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
}

impl FrameReader {
    /// A reader over `recv` with the protocol's frame-size limit.
    pub fn new(recv: quinn::RecvStream) -> Self {
        Self {
            recv,
            decoder: FrameDecoder::new(MAX_FRAME_BODY),
        }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, StreamError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            match self.recv.read_chunk(MAX_FRAME_BODY, true).await? {
                Some(chunk) => self.decoder.push(&chunk.bytes),
                None => {
                    if self.decoder.buffered() > 0 {
                        return Err(StreamError::Wire(WireError::Truncated));
                    }
                    return Ok(None);
                }
            }
        }
    }
}

/// Owns the send half of a control stream: writes queued frames in order;
/// on [`Outbound::Close`] writes the `ERROR` frame, gives the peer
/// [`CLOSE_GRACE`] to close first, then closes with the frame's code, which
/// it also leaves in `closed_with`.
pub async fn run_control_writer(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<Outbound>,
    conn: quinn::Connection,
    closed_with: Arc<OnceLock<ErrorCode>>,
) {
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
pub async fn close_with(
    send: &mut quinn::SendStream,
    conn: &quinn::Connection,
    error: &ErrorFrame,
    buf: &mut BytesMut,
) {
    buf.clear();
    Frame::Error(error.clone()).encode(buf);
    let _ = send.write_all(buf).await;
    let _ = send.finish();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn.closed()).await;
    let code = quinn::VarInt::from_u64(error.code).unwrap_or(quinn::VarInt::from_u32(0));
    let reason = error.error_code().map(ErrorCode::name).unwrap_or("ERROR");
    conn.close(code, reason.as_bytes());
}
