//! The accept gate ([`georelay::gate`]) driving a real quinn endpoint on
//! loopback, the way the relay's accept loop will: Retry before accepting an
//! unvalidated address, the per-address cap refusing the (K+1)th
//! connection while other addresses still get in, and a flood of 5,000
//! Initials from 250 addresses answered with Retries beyond the threshold.

mod faults;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use georelay::config::Limits;
use georelay::gate::{AcceptGate, GateLimits, IncomingDecision};
use georelay::ids::NodeId;
use georelay::tls::{
    FleetPki, NodeTls, apply_handshake_limits, client_config, client_transport_config,
};
use quinn::{ConnectionError, Endpoint};

const STEP: Duration = Duration::from_secs(10);

/// What the loop did, by decision.
#[derive(Default)]
struct Decisions {
    accepted: AtomicUsize,
    retried: AtomicUsize,
    refused: AtomicUsize,
}

/// A node endpoint whose accept loop asks `gate`; accepted connections are
/// kept open (with their slots) until the endpoint is dropped.
fn serve(pki: &FleetPki, limits: &Limits, gate: AcceptGate) -> (Endpoint, Arc<Decisions>) {
    let tls = NodeTls::new(&NodeId::new("node-a"), pki).expect("node TLS");
    let mut config = tls
        .server_config(Arc::new(client_transport_config(limits)))
        .expect("server config");
    apply_handshake_limits(&mut config, limits);
    let endpoint =
        Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind server");
    let decisions = Arc::new(Decisions::default());
    let accept_loop = endpoint.clone();
    let seen = Arc::clone(&decisions);
    tokio::spawn(async move {
        while let Some(incoming) = accept_loop.accept().await {
            match gate.on_incoming(
                incoming.remote_address(),
                incoming.remote_address_validated(),
            ) {
                IncomingDecision::Retry => {
                    seen.retried.fetch_add(1, Ordering::SeqCst);
                    incoming
                        .retry()
                        .expect("an unvalidated incoming can be retried");
                }
                IncomingDecision::Refuse(_) => {
                    seen.refused.fetch_add(1, Ordering::SeqCst);
                    incoming.refuse();
                }
                IncomingDecision::Accept(mut slot) => {
                    seen.accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let conn = incoming.await;
                        slot.handshake_done();
                        if let Ok(conn) = conn {
                            let _ = conn.closed().await;
                        }
                        drop(slot);
                    });
                }
            }
        }
    });
    (endpoint, decisions)
}

async fn dial(
    pki: &FleetPki,
    server: SocketAddr,
    from: [u8; 4],
) -> Result<quinn::Connection, ConnectionError> {
    let mut client = Endpoint::client(SocketAddr::from((from, 0))).expect("bind client");
    let transport = Arc::new(client_transport_config(&Limits::default()));
    client.set_default_client_config(client_config(pki.roots.clone(), transport).expect("config"));
    let connecting = client.connect(server, "node-a").expect("connect");
    tokio::time::timeout(STEP, connecting)
        .await
        .expect("handshake ends in time")
}

fn pki() -> FleetPki {
    FleetPki::generate([(NodeId::new("node-a"), None)]).expect("pki")
}

#[tokio::test]
async fn retry_always_validates_the_address_before_the_handshake() {
    let pki = pki();
    let limits = Limits {
        retry_always: true,
        ..Limits::default()
    };
    let gate = AcceptGate::new(GateLimits::from_limits(&limits));
    let (server, decisions) = serve(&pki, &limits, gate.clone());
    let conn = dial(&pki, server.local_addr().expect("addr"), [127, 0, 0, 1])
        .await
        .expect("connected after a Retry");
    assert_eq!(decisions.retried.load(Ordering::SeqCst), 1);
    assert_eq!(decisions.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(
        gate.stats().unvalidated_handshakes,
        0,
        "validated by the Retry"
    );
    assert_eq!(gate.stats().connections, 1);
    drop(conn);
}

#[tokio::test]
async fn the_per_address_cap_refuses_the_k_plus_first_connection() {
    let pki = pki();
    let limits = Limits {
        max_connections_per_address: 3,
        ..Limits::default()
    };
    let gate = AcceptGate::new(GateLimits::from_limits(&limits));
    let (server, decisions) = serve(&pki, &limits, gate.clone());
    let addr = server.local_addr().expect("addr");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            dial(&pki, addr, [127, 0, 0, 1])
                .await
                .expect("within the cap"),
        );
    }
    let refused = dial(&pki, addr, [127, 0, 0, 1]).await;
    assert!(
        matches!(refused, Err(ConnectionError::ConnectionClosed(_))),
        "refused with CONNECTION_REFUSED: {refused:?}"
    );
    assert_eq!(decisions.refused.load(Ordering::SeqCst), 1);
    let other = dial(&pki, addr, [127, 0, 0, 2])
        .await
        .expect("another address gets in");
    assert_eq!(gate.stats().sources, 2);

    // When one connection ends, its address may connect again.
    let first = held.remove(0);
    first.close(0u32.into(), b"bye");
    let freed = async {
        while gate.stats().connections > 3 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(STEP, freed)
        .await
        .expect("slot released");
    held.push(
        dial(&pki, addr, [127, 0, 0, 1])
            .await
            .expect("a slot was freed"),
    );
    drop((held, other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_initials_gets_retries_beyond_the_threshold_and_clients_still_connect() {
    let pki = pki();
    let limits = Limits::default();
    let gate = AcceptGate::new(GateLimits::from_limits(&limits));
    let (server, decisions) = serve(&pki, &limits, gate.clone());
    let addr = server.local_addr().expect("addr");
    let rss_before = faults::flood::peak_rss_bytes();

    // Sample the handshakes from unvalidated addresses while flooding.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let gate = gate.clone();
        let sampling = Arc::clone(&sampling);
        tokio::spawn(async move {
            let mut most = 0;
            while sampling.load(Ordering::SeqCst) {
                most = most.max(gate.stats().unvalidated_handshakes);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            most
        })
    };
    let transport = Arc::new(client_transport_config(&limits));
    let client = client_config(pki.roots.clone(), transport).expect("client config");
    let octet = 240 + (std::process::id() % 16) as u8;
    let report = faults::flood::flood(
        addr,
        "node-a",
        client,
        (octet, 7),
        250,
        5000,
        Duration::from_secs(5),
    )
    .await;
    // A real client during the backlog of unanswered handshakes.
    let started = georelay::clock::monotonic_now();
    let conn = dial(&pki, addr, [127, 0, 0, 1])
        .await
        .expect("a real client connects");
    let connect_time = started.elapsed();
    sampling.store(false, Ordering::SeqCst);
    let most_unvalidated = sampler.await.expect("sampler");
    let rss_after = faults::flood::peak_rss_bytes();
    println!(
        "flood: {}; unvalidated handshakes at most {} \
         (threshold {}); the gate saw {} and retried {}, accepted {}; a real client connected \
         in {:?}; peak RSS {} -> {} MiB",
        report.summary(),
        most_unvalidated,
        limits.retry_threshold,
        decisions.accepted.load(Ordering::SeqCst)
            + decisions.retried.load(Ordering::SeqCst)
            + decisions.refused.load(Ordering::SeqCst),
        decisions.retried.load(Ordering::SeqCst),
        decisions.accepted.load(Ordering::SeqCst),
        connect_time,
        rss_before >> 20,
        rss_after >> 20,
    );
    assert_eq!(report.initials, 5000);
    assert!(
        most_unvalidated <= limits.retry_threshold,
        "{most_unvalidated}"
    );
    // Beyond the threshold the gate answers with Retry only; loopback UDP
    // under a flood may drop a few datagrams on the way, nothing more.
    let retried = decisions.retried.load(Ordering::SeqCst) as u64;
    assert_eq!(
        decisions.accepted.load(Ordering::SeqCst) as u64,
        limits.retry_threshold as u64 + 1,
        "only the threshold's worth of flood handshakes, and the real client"
    );
    assert_eq!(decisions.refused.load(Ordering::SeqCst), 0);
    assert!(retried >= 4500, "most Initials reached the gate: {retried}");
    assert!(
        report.retries * 100 >= retried * 98,
        "{report:?} vs {retried}"
    );
    assert!(report.amplification() <= 3.0, "RFC 9000 8.1: {report:?}");
    drop(conn);
}

/// A server clock the test moves.
struct SteppedTime {
    offset_secs: std::sync::atomic::AtomicU64,
}

impl quinn_proto::TimeSource for SteppedTime {
    fn now(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH
            + Duration::from_secs(1_800_000_000 + self.offset_secs.load(Ordering::SeqCst))
    }
}

/// What the server endpoint made of one datagram.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// A new connection attempt, with whether its address was validated.
    Incoming {
        validated: bool,
    },
    /// A stateless answer (Retry, or a close such as INVALID_TOKEN) and no
    /// connection state.
    StatelessAnswer,
    Nothing,
}

#[test]
fn retry_tokens_are_refused_once_expired_or_from_another_address() {
    let pki = pki();
    let limits = Limits {
        retry_always: true,
        retry_token_lifetime_ms: 5000,
        ..Limits::default()
    };
    let gate = AcceptGate::new(GateLimits::from_limits(&limits));
    let clock = Arc::new(SteppedTime {
        offset_secs: std::sync::atomic::AtomicU64::new(0),
    });
    let tls = NodeTls::new(&NodeId::new("node-a"), &pki).expect("node TLS");
    let mut server_config = tls
        .server_config(Arc::new(client_transport_config(&limits)))
        .expect("server config");
    apply_handshake_limits(&mut server_config, &limits);
    server_config.time_source(clock.clone());
    let mut server = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        Some(Arc::new(server_config)),
        false,
        None,
    );
    let server_addr: SocketAddr = "127.0.0.1:4433".parse().expect("addr");
    let client_addr: SocketAddr = "127.0.0.1:50000".parse().expect("addr");
    let thief_addr: SocketAddr = "127.0.0.2:50000".parse().expect("addr");
    let now = georelay::clock::monotonic_now();
    let mut buf = Vec::new();

    // Every datagram is handed to the server endpoint as it would arrive.
    let deliver = |server: &mut quinn_proto::Endpoint, from: SocketAddr, datagram: &[u8]| {
        let mut out = Vec::new();
        match server.handle(now, from, None, None, datagram.into(), &mut out) {
            Some(quinn_proto::DatagramEvent::NewConnection(incoming)) => {
                let validated = incoming.remote_address_validated();
                match gate.on_incoming(from, validated) {
                    IncomingDecision::Retry => {
                        let retry = server.retry(incoming, &mut out).expect("retry");
                        (Outcome::Incoming { validated }, out[..retry.size].to_vec())
                    }
                    decision => {
                        server.ignore(incoming);
                        drop(decision);
                        (Outcome::Incoming { validated }, Vec::new())
                    }
                }
            }
            Some(quinn_proto::DatagramEvent::Response(_)) => (Outcome::StatelessAnswer, out),
            _ => (Outcome::Nothing, out),
        }
    };

    let mut client = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let config = client_config(
        pki.roots.clone(),
        Arc::new(client_transport_config(&limits)),
    )
    .expect("client config");
    let (handle, mut conn) = client
        .connect(now, config, server_addr, "node-a")
        .expect("connect");
    let transmit = conn.poll_transmit(now, 1, &mut buf).expect("Initial");
    let first = buf[..transmit.size].to_vec();
    let (outcome, retry) = deliver(&mut server, client_addr, &first);
    assert_eq!(outcome, Outcome::Incoming { validated: false });
    assert!(!retry.is_empty() && (retry[0] >> 4) & 0x03 == 3, "a Retry");

    // The client follows the Retry: its next Initial carries the token.
    match client.handle(
        now,
        server_addr,
        None,
        None,
        retry.as_slice().into(),
        &mut buf,
    ) {
        Some(quinn_proto::DatagramEvent::ConnectionEvent(h, event)) if h == handle => {
            conn.handle_event(event);
        }
        _ => panic!("the client takes the Retry"),
    }
    buf.clear();
    let transmit = conn
        .poll_transmit(now, 1, &mut buf)
        .expect("Initial with token");
    let with_token = buf[..transmit.size].to_vec();

    // Replayed from another address: refused, no connection state.
    let (outcome, _) = deliver(&mut server, thief_addr, &with_token);
    assert_eq!(
        outcome,
        Outcome::StatelessAnswer,
        "token bound to the address"
    );
    // After its lifetime: refused.
    clock.offset_secs.store(6, Ordering::SeqCst);
    let (outcome, _) = deliver(&mut server, client_addr, &with_token);
    assert_eq!(outcome, Outcome::StatelessAnswer, "expired token");
    // Within its lifetime, from its address: a validated connection attempt.
    clock.offset_secs.store(4, Ordering::SeqCst);
    let (outcome, _) = deliver(&mut server, client_addr, &with_token);
    assert_eq!(outcome, Outcome::Incoming { validated: true });
    println!(
        "Retry token: refused from another address and after 6 s (lifetime 5 s); accepted at 4 s"
    );
}
