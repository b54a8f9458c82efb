//! The writer tasks that drain a receiver's queues into its connection:
//! media datagrams of a mesh link (client sessions have direct outlets and
//! no datagram writer), and reliable messages onto one unidirectional
//! stream for clients and peers alike. Generic over the
//! [`SessionTransport`].

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::fanout::{AppCounters, DatagramQueue, DropReason, Queued};
use super::transport::{DatagramError, SessionTransport};

/// Drains `queue` into `conn` as datagrams until the queue closes or the
/// connection is lost. Waiting for the transport's send buffer paces the
/// writer to the congestion controller; the bounded queue in front absorbs
/// bursts.
pub async fn run_datagram_writer<T: SessionTransport>(queue: Arc<DatagramQueue>, conn: T) {
    while let Some((datagram, app)) = queue.pop().await {
        let len = datagram.len();
        match conn.send_datagram(datagram).await {
            Ok(()) => {
                app.count_out(len);
                queue.sent.count_out(len);
            }
            Err(DatagramError::TooLarge) => queue.count_drop(DropReason::TooLarge),
            Err(DatagramError::Closed(_)) => break,
        }
    }
}

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
