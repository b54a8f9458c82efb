//! QUIC transport parameters for the two kinds of connection: SDK clients and
//! mesh links between nodes, and the endpoint's handshake backlog. Every
//! buffer is bounded (quinn's default connection receive window is
//! unbounded). Client connections take their limits from `[limits]`
//! ([`TransportLimits::for_clients`]); mesh links use fixed limits.

use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::config::Limits;

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
    /// The limits of `kind`, clients with the default `[limits]`.
    ///
    /// Clients: see [`TransportLimits::for_clients`].
    ///
    /// Mesh: a link multiplexes every app and channel between two nodes, so
    /// windows are 4x larger and stream counts higher; 250 ms keep-alives and
    /// a 2 s idle timeout detect a dead node fast enough for failover.
    pub fn of(kind: TransportKind) -> TransportLimits {
        match kind {
            TransportKind::Client => TransportLimits::for_clients(&Limits::default()),
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

    /// The limits of mesh links under `[limits]`: those of
    /// [`TransportKind::Mesh`] with the configured datagram send buffer
    /// (`mesh_datagram_send_buffer_bytes`), which is a link's whole media
    /// queue: the relay sends each datagram straight into it and counts
    /// what it displaces.
    pub fn for_mesh(limits: &Limits) -> TransportLimits {
        TransportLimits {
            datagram_send_buffer: limits.mesh_datagram_send_buffer_bytes,
            ..TransportLimits::of(TransportKind::Mesh)
        }
    }

    /// The limits of client connections under `[limits]`: windows, stream
    /// counts, datagram buffers, idle timeout and keep-alive as configured.
    ///
    /// The defaults: a control stream and one message stream (two of each
    /// kind more under WebTransport's HTTP/3); 256 KiB of datagrams is about
    /// 200 packets of 1,200 bytes, one second of video at 200 pps, beyond
    /// which stale media is worth less than fresh. A 10 s idle timeout with
    /// 1 s keep-alives tolerates a lossy mobile link.
    pub fn for_clients(limits: &Limits) -> TransportLimits {
        TransportLimits {
            stream_receive_window: limits.stream_receive_window_bytes,
            receive_window: limits.connection_receive_window_bytes,
            send_window: u64::from(limits.send_window_bytes),
            max_bidi_streams: limits.max_bidi_streams,
            max_uni_streams: limits.max_uni_streams,
            datagram_receive_buffer: limits.datagram_receive_buffer_bytes,
            datagram_send_buffer: limits.datagram_send_buffer_bytes,
            keep_alive: Duration::from_millis(limits.keep_alive_ms),
            idle_timeout: Duration::from_millis(limits.idle_timeout_ms),
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

/// The quinn transport config of client connections under `limits`.
pub fn client_transport_config(limits: &Limits) -> TransportConfig {
    TransportLimits::for_clients(limits).to_transport_config()
}

/// The quinn transport config of mesh links under `limits` (see
/// [`TransportLimits::for_mesh`]).
pub fn mesh_transport_config(limits: &Limits) -> TransportConfig {
    TransportLimits::for_mesh(limits).to_transport_config()
}

/// Bounds the handshake backlog of a node's server config: handshakes held
/// before the accept loop decides on them (`max_incoming`), bytes buffered
/// per pending handshake and in total, and the Retry token lifetime.
/// Address validation itself (when to send a Retry) is the accept loop's
/// decision: see `crate::gate`.
pub fn apply_handshake_limits(config: &mut quinn::ServerConfig, limits: &Limits) {
    config
        .max_incoming(limits.max_incoming)
        .incoming_buffer_size(limits.incoming_buffer_size)
        .incoming_buffer_size_total(limits.incoming_buffer_size_total)
        .retry_token_lifetime(Duration::from_millis(limits.retry_token_lifetime_ms));
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

    fn configured() -> Limits {
        Limits {
            stream_receive_window_bytes: 100_000,
            connection_receive_window_bytes: 300_000,
            send_window_bytes: 400_000,
            max_bidi_streams: 1,
            max_uni_streams: 3,
            datagram_receive_buffer_bytes: 50_000,
            datagram_send_buffer_bytes: 60_000,
            idle_timeout_ms: 7000,
            keep_alive_ms: 700,
            max_incoming: 77,
            incoming_buffer_size: 12_345,
            incoming_buffer_size_total: 678_910,
            retry_token_lifetime_ms: 3000,
            ..Limits::default()
        }
    }

    #[test]
    fn the_mesh_transport_config_carries_the_configured_send_buffer() {
        let limits = Limits {
            mesh_datagram_send_buffer_bytes: 123_456,
            ..Limits::default()
        };
        let mesh = TransportLimits::for_mesh(&limits);
        assert_eq!(mesh.datagram_send_buffer, 123_456);
        assert_eq!(
            TransportLimits {
                datagram_send_buffer: 1 << 20,
                ..mesh
            },
            TransportLimits::of(TransportKind::Mesh),
            "only the send buffer comes from [limits]"
        );
        let printed = format!("{:?}", mesh_transport_config(&limits));
        assert!(
            printed.contains("datagram_send_buffer_size: 123456,"),
            "{printed}"
        );
    }

    #[test]
    fn the_client_transport_config_carries_the_configured_limits() {
        // quinn keeps its fields private; its Debug output names each one.
        let printed = format!("{:?}", client_transport_config(&configured()));
        for expected in [
            "max_concurrent_bidi_streams: 1,",
            "max_concurrent_uni_streams: 3,",
            "max_idle_timeout: Some(7000)",
            "stream_receive_window: 100000,",
            "receive_window: 300000,",
            "send_window: 400000,",
            "keep_alive_interval: Some(700ms)",
            "datagram_receive_buffer_size: Some(50000)",
            "datagram_send_buffer_size: 60000,",
        ] {
            assert!(printed.contains(expected), "{expected} in {printed}");
        }
    }

    #[test]
    fn the_default_client_limits_grant_only_the_streams_the_protocol_uses() {
        let limits = TransportLimits::of(TransportKind::Client);
        assert_eq!((limits.max_bidi_streams, limits.max_uni_streams), (2, 4));
        assert_eq!(limits.receive_window, 1 << 20);
        assert_eq!(limits, TransportLimits::for_clients(&Limits::default()));
    }

    #[test]
    fn the_server_config_carries_the_handshake_backlog_limits() {
        let pki = crate::tls::FleetPki::generate([(crate::ids::NodeId::new("node-a"), None)])
            .expect("pki");
        let identity = pki
            .identity(&crate::ids::NodeId::new("node-a"))
            .expect("identity");
        let limits = configured();
        let mut config = crate::tls::server_config(
            &identity,
            pki.roots.clone(),
            std::sync::Arc::new(client_transport_config(&limits)),
        )
        .expect("server config");
        apply_handshake_limits(&mut config, &limits);
        let printed = format!("{config:?}");
        for expected in [
            "retry_token_lifetime: 3s",
            "max_incoming: 77,",
            "incoming_buffer_size: 12345,",
            "incoming_buffer_size_total: 678910",
            "max_concurrent_uni_streams: 3,",
        ] {
            assert!(printed.contains(expected), "{expected} in {printed}");
        }
    }
}
