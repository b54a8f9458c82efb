//! The writer task that drains a receiver's reliable messages onto one
//! unidirectional stream, for clients and mesh peers alike. Media datagrams
//! have no writer: client sessions and mesh links both take them straight
//! into their connection's send buffer (see [`super::fanout`]). Generic
//! over the [`SessionTransport`].

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::fanout::{AppCounters, Queued};
use super::transport::SessionTransport;

/// Writes framed messages onto one unidirectional stream, opened on the first
/// message with the message stream header; counts them in `sent` too.
pub async fn run_message_writer<T: SessionTransport>(
    mut rx: tokio::sync::mpsc::Receiver<Queued>,
    conn: T,
    sent: Arc<AppCounters>,
) {
    let mut stream: Option<T::SendStream> = None;
    while let Some((framed, app)) = rx.recv().await {
        if stream.is_none() {
            let Ok(mut opened) = conn.open_uni().await else {
                return;
            };
            let mut header = bytes::BytesMut::new();
            crate::wire::encode_message_stream_header(&mut header);
            if opened.write_all(&header).await.is_err() {
                return;
            }
            stream = Some(opened);
        }
        let Some(out) = stream.as_mut() else {
            return;
        };
        let len = framed.len();
        if out.write_all(&framed).await.is_err() {
            return;
        }
        app.count_out(len);
        sent.count_out(len);
    }
    if let Some(mut out) = stream {
        let _ = out.shutdown().await;
    }
}
