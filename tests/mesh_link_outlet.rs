//! A mesh link's media outlet over real QUIC with the mesh transport
//! (`[limits] mesh_datagram_send_buffer_bytes`): two links from one node to
//! a peer, one of them through a UDP proxy that stops forwarding. The
//! stalled link drops its oldest datagrams and counts every one of them,
//! exactly, against itself and the node; the other link, fed by the same
//! loop, gets its stream and drops nothing; the sender never waits.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use georelay::config::Limits;
use georelay::relay::fanout::{AppCounters, DatagramQueue, DropCounters, DropReason, FlowCounters};
use georelay::tls::{DevCa, mesh_client_config, mesh_transport_config, server_config};
use quinn::{Connection, Endpoint};
use rustls::RootCertStore;
use support::udp_proxy::UdpProxy;

const SEND_BUFFER: usize = 64 << 10;
const PACKETS: u64 = 1_000;
const PAYLOAD: usize = 1_000;

/// Counts the datagrams `conn` receives until it closes.
fn count_received(conn: Connection) -> Arc<AtomicU64> {
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    tokio::spawn(async move {
        while conn.read_datagram().await.is_ok() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_mesh_link_drops_and_counts_while_the_other_link_keeps_its_stream() {
    georelay::tls::install_default_provider();
    let ca = DevCa::generate().expect("dev CA");
    let peer = ca
        .issue_node(&georelay::ids::NodeId::new("node-a"))
        .expect("peer identity");
    let me = ca
        .issue_node(&georelay::ids::NodeId::new("node-b"))
        .expect("own identity");
    let mut roots = RootCertStore::empty();
    roots.add(ca.ca_cert().clone()).expect("root");
    let roots = Arc::new(roots);
    let limits = Limits {
        mesh_datagram_send_buffer_bytes: SEND_BUFFER,
        ..Limits::default()
    };
    let transport = Arc::new(mesh_transport_config(&limits));
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let server = Endpoint::server(
        server_config(&peer, Arc::clone(&roots), Arc::clone(&transport)).expect("server"),
        SocketAddr::new(localhost, 0),
    )
    .expect("bind peer");
    let peer_addr = server.local_addr().expect("peer address");
    let proxy = UdpProxy::start(localhost, peer_addr, localhost)
        .await
        .expect("proxy");
    let mut dialer = Endpoint::client(SocketAddr::new(localhost, 0)).expect("bind node");
    dialer.set_default_client_config(mesh_client_config(&me, roots, transport).expect("mesh"));

    let mut links = Vec::new();
    let mut received = Vec::new();
    for target in [peer_addr, proxy.addr()] {
        let dial = dialer.connect(target, "node-a").expect("dial");
        let accept = async { server.accept().await.expect("incoming").await };
        let (dialed, accepted) = tokio::join!(dial, accept);
        let accepted = accepted.expect("accepted");
        received.push(count_received(accepted));
        links.push(dialed.expect("link up"));
    }

    let node_drops = Arc::new(DropCounters::default());
    let outlets: Vec<DatagramQueue> = links
        .iter()
        .map(|link| DatagramQueue::direct(Box::new(link.clone()), Arc::clone(&node_drops)))
        .collect();
    let app = Arc::new(AppCounters::default());
    let flow = Arc::new(FlowCounters::new(Arc::clone(&app), None));
    proxy.pause();
    let started = georelay::clock::monotonic_now();
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    for burst in 0..PACKETS / 10 {
        ticks.tick().await;
        for seq in burst * 10..burst * 10 + 10 {
            let mut datagram = vec![0x5a; PAYLOAD];
            datagram[..8].copy_from_slice(&seq.to_be_bytes());
            let datagram = Bytes::from(datagram);
            for outlet in &outlets {
                outlet.push(datagram.clone(), &flow);
            }
        }
    }
    let sending = started.elapsed();
    assert!(
        sending < Duration::from_secs(4),
        "the sender never waited for the stalled link: {sending:?}"
    );

    let (fast, slow) = (&outlets[0], &outlets[1]);
    let deadline = georelay::clock::monotonic_now() + Duration::from_secs(5);
    while received[0].load(Ordering::Relaxed) < PACKETS
        && georelay::clock::monotonic_now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fast_got = received[0].load(Ordering::Relaxed);
    assert!(
        fast_got * 100 >= PACKETS * 99,
        "the healthy link got {fast_got} of {PACKETS} while the other stalled"
    );
    assert_eq!(fast.drops.get(DropReason::QueueFull), 0, "no drop on it");
    assert_eq!(fast.sent.snapshot().packets_out, PACKETS);

    let slow_dropped = slow.drops.get(DropReason::QueueFull);
    let slow_sent = slow.sent.snapshot().packets_out;
    assert!(slow_dropped > 0, "the stalled link overflowed and dropped");
    assert_eq!(
        slow_sent + slow_dropped,
        PACKETS,
        "every datagram counted once, as sent or dropped"
    );
    assert!(
        slow_sent * (PAYLOAD as u64) < 2 * SEND_BUFFER as u64 + 64 * 1024,
        "what the stalled link holds is bounded by its send buffer (and the \
         congestion window): {slow_sent} datagrams"
    );
    assert_eq!(
        node_drops.get(DropReason::QueueFull),
        slow_dropped,
        "the node counts the link's drops"
    );
    assert_eq!(app.snapshot().packets_out, PACKETS + slow_sent);
    assert!(proxy.dropped_while_paused() > 0, "the link really stalled");
    assert_eq!(
        received[1].load(Ordering::Relaxed),
        0,
        "nothing crossed the stalled link"
    );
}
