//! QUIC transport parameters for the two kinds of connection: SDK clients and
//! mesh links between nodes. Every buffer is bounded (quinn's default
//! connection receive window is unbounded).

use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

/// Which side of the relay a connection serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// An SDK client (publisher or subscriber) and its node.
    Client,
    /// A mesh link between two nodes; carries many apps' media at once.
    Mesh,
}

/// The transport limits of one connection kind, all in one place so that
/// docs, tests and configs agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportLimits {
    /// Bytes a peer may have in flight on one stream before it must wait.
    pub stream_receive_window: u32,
    /// Bytes a peer may have in flight on all streams of the connection.
    pub receive_window: u32,
    /// Bytes this side keeps unacknowledged across all its streams.
    pub send_window: u64,
    /// Streams the peer may open in each direction (bidirectional).
    pub max_bidi_streams: u32,
    /// Unidirectional streams the peer may open.
    pub max_uni_streams: u32,
    /// Bytes of received datagrams waiting for the application; more are
    /// dropped, oldest first.
    pub datagram_receive_buffer: usize,
    /// Bytes of datagrams waiting to be sent; when full, quinn drops the
    /// oldest queued datagram, so real-time media is dropped, not delayed.
    pub datagram_send_buffer: usize,
    /// A PING is sent after this much silence, to keep NAT bindings and
    /// detect a dead peer early.
    pub keep_alive: Duration,
    /// The connection is closed after this long without hearing the peer.
    pub idle_timeout: Duration,
}

impl TransportLimits {
    /// The limits of `kind`.
    ///
    /// Clients: one control stream plus a few message streams; 256 KiB of
    /// datagrams is about 200 packets of 1,200 bytes, one second of video at
    /// 200 pps, beyond which stale media is worth less than fresh. A 10 s idle
    /// timeout with 1 s keep-alives tolerates a lossy mobile link.
    ///
    /// Mesh: a link multiplexes every app and channel between two nodes, so
    /// windows are 4x larger and stream counts higher; 250 ms keep-alives and
    /// a 2 s idle timeout detect a dead node fast enough for failover.
    pub const fn of(kind: TransportKind) -> TransportLimits {
        match kind {
            TransportKind::Client => TransportLimits {
                stream_receive_window: 1 << 20,
                receive_window: 4 << 20,
                send_window: 4 << 20,
                max_bidi_streams: 16,
                max_uni_streams: 64,
                datagram_receive_buffer: 256 << 10,
                datagram_send_buffer: 256 << 10,
                keep_alive: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(10),
            },
            TransportKind::Mesh => TransportLimits {
                stream_receive_window: 4 << 20,
                receive_window: 16 << 20,
                send_window: 16 << 20,
                max_bidi_streams: 1024,
                max_uni_streams: 1024,
                datagram_receive_buffer: 1 << 20,
                datagram_send_buffer: 1 << 20,
                keep_alive: Duration::from_millis(250),
                idle_timeout: Duration::from_secs(2),
            },
        }
    }

    /// The quinn transport config enforcing these limits.
    pub fn to_transport_config(&self) -> TransportConfig {
        let mut config = TransportConfig::default();
        config
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.receive_window))
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_uni_streams))
            .datagram_receive_buffer_size(Some(self.datagram_receive_buffer))
            .datagram_send_buffer_size(self.datagram_send_buffer)
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(idle_timeout(self.idle_timeout)));
        config
    }
}

/// The quinn transport config of `kind` (see [`TransportLimits::of`]).
pub fn transport_config(kind: TransportKind) -> TransportConfig {
    TransportLimits::of(kind).to_transport_config()
}

fn idle_timeout(timeout: Duration) -> IdleTimeout {
    let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    IdleTimeout::from(VarInt::from_u32(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_window_is_bounded_and_mesh_fails_over_faster() {
        let client = TransportLimits::of(TransportKind::Client);
        let mesh = TransportLimits::of(TransportKind::Mesh);
        for limits in [client, mesh] {
            assert!(limits.stream_receive_window <= limits.receive_window);
            assert!(u64::from(limits.receive_window) <= 64 << 20);
            assert!(limits.datagram_send_buffer <= 4 << 20);
            assert!(limits.datagram_receive_buffer <= 4 << 20);
            assert!(limits.keep_alive * 4 <= limits.idle_timeout);
        }
        assert!(mesh.idle_timeout < client.idle_timeout);
        assert!(mesh.keep_alive < client.keep_alive);
    }
}
