//! The node's QUIC endpoints on its listen address: one by default, or
//! several sharing the port with `SO_REUSEPORT` (`[limits] quic_endpoints`),
//! each a UDP socket with its own quinn endpoint driver, so that receiving
//! and connection event handling, which quinn serialises per endpoint, can
//! run on more than one core.
//!
//! - Every socket asks for a [`UDP_RECEIVE_BUFFER_BYTES`] receive buffer
//!   (the kernel caps it at `net.core.rmem_max`): with the default (about
//!   208 KiB) a burst of handshakes overflows it and drops established
//!   sessions' media along with the Initials.
//! - With several endpoints the kernel picks the socket of each incoming
//!   datagram by a hash of its 4-tuple, so every datagram of a connection
//!   reaches the endpoint that accepted it. All endpoints share one
//!   [`quinn::EndpointConfig`] (one stateless-reset key) and one server
//!   config (one Retry token key), so a Retry issued by one is honoured by
//!   whichever endpoint the retried Initial lands on. A client whose address
//!   changes mid-connection (NAT rebinding, migration) may hash to another
//!   endpoint, which does not know the connection: it is lost, as a real
//!   limit of plain `SO_REUSEPORT`.
//! - Outgoing mesh dials cannot share the listening sockets then (the
//!   peer's answers would hash to any of them): each dialer gets its own
//!   socket on the listen address, `connect`ed to its peer, which the kernel
//!   prefers over the unconnected group for that peer's datagrams. Its
//!   source address is still the listen address, which is how the peer
//!   recognises a mesh dial.

use std::net::SocketAddr;
use std::sync::Arc;

/// The receive buffer each of the node's UDP sockets asks for.
pub(super) const UDP_RECEIVE_BUFFER_BYTES: usize = 8 << 20;

/// Binds `count` (at least 1) endpoints with `server` on `addr`; with more
/// than one they share its port through `SO_REUSEPORT` (a port 0 in `addr`
/// is resolved by the first).
pub(super) fn bind_listen_endpoints(
    addr: SocketAddr,
    server: quinn::ServerConfig,
    count: usize,
) -> std::io::Result<Vec<quinn::Endpoint>> {
    let config = quinn::EndpointConfig::default();
    let reuse_port = count > 1;
    let first = udp_socket(addr, reuse_port)?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(udp_socket(addr, reuse_port)?);
    }
    sockets
        .into_iter()
        .map(|socket| {
            quinn::Endpoint::new(
                config.clone(),
                Some(server.clone()),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
        })
        .collect()
}

/// A client-only endpoint on `listen` (shared with the listening endpoints
/// through `SO_REUSEPORT`) whose socket is connected to `peer`, for dialing
/// a mesh peer when the node has several listening endpoints.
pub(super) fn bind_dial_endpoint(
    listen: SocketAddr,
    peer: SocketAddr,
) -> std::io::Result<quinn::Endpoint> {
    let socket = udp_socket(listen, true)?;
    socket.connect(peer)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(err) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER_BYTES) {
        tracing::warn!(%err, "cannot enlarge the UDP receive buffer");
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> quinn::ServerConfig {
        crate::tls::install_default_provider();
        let node = crate::ids::NodeId::new("solo");
        let pki = crate::tls::FleetPki::generate([(node.clone(), None)]).expect("dev PKI");
        let tls = crate::tls::NodeTls::new(&node, &pki).expect("node TLS");
        tls.server_config(Arc::new(crate::tls::transport_config(
            crate::tls::TransportKind::Client,
        )))
        .expect("server config")
    }

    #[tokio::test]
    async fn several_endpoints_share_one_port() {
        let endpoints =
            bind_listen_endpoints("127.0.0.1:0".parse().unwrap(), server(), 3).expect("bound");
        assert_eq!(endpoints.len(), 3);
        let port = endpoints[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for endpoint in &endpoints {
            assert_eq!(endpoint.local_addr().unwrap().port(), port);
        }
    }

    #[tokio::test]
    async fn one_endpoint_keeps_its_port_to_itself() {
        let endpoints =
            bind_listen_endpoints("127.0.0.1:0".parse().unwrap(), server(), 1).expect("bound");
        let addr = endpoints[0].local_addr().unwrap();
        assert!(
            udp_socket(addr, true).is_err(),
            "without SO_REUSEPORT on the listener, nothing else binds its port"
        );
    }
}
