//! A QUIC handshake flood: real client Initials (made by quinn-proto client
//! connections that are never driven further) sent raw from many loopback
//! source addresses, with every byte the server sends back counted per
//! packet kind. A flood client never answers, so each Initial costs the
//! server whatever it chooses to spend on an address it has not validated.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;

/// What the flood sent and what came back.
#[derive(Debug, Default)]
pub struct FloodReport {
    /// Initials sent.
    pub initials: u64,
    /// UDP bytes sent.
    pub bytes_out: u64,
    /// UDP bytes the server sent back.
    pub bytes_in: u64,
    /// Retry packets received (long header, type 3).
    pub retries: u64,
    /// Other packets received (Initial/Handshake flights, refusals).
    pub other_packets: u64,
    /// Distinct source addresses used.
    pub sources: usize,
    /// How long sending took.
    pub elapsed: Duration,
}

impl FloodReport {
    /// Bytes back per byte sent (RFC 9000 §8.1 allows at most 3 before the
    /// address is validated).
    pub fn amplification(&self) -> f64 {
        self.bytes_in as f64 / self.bytes_out.max(1) as f64
    }

    /// What was sent and what came back, for a test's printed figure.
    pub fn summary(&self) -> String {
        format!(
            "{} Initials from {} addresses in {:?}: {} Retries, {} other replies, \
             {} B out, {} B back (amplification {:.3})",
            self.initials,
            self.sources,
            self.elapsed,
            self.retries,
            self.other_packets,
            self.bytes_out,
            self.bytes_in,
            self.amplification(),
        )
    }
}

#[derive(Default)]
struct Replies {
    bytes: AtomicU64,
    retries: AtomicU64,
    other: AtomicU64,
}

/// Sends `initials` Initials to `target` (server name `server_name`, TLS
/// config `client`) from `sources` addresses `127.<a>.<b>.<1..=sources>`,
/// then counts replies until none arrived for 200 ms, or `linger` passed.
pub async fn flood(
    target: SocketAddr,
    server_name: &str,
    client: quinn::ClientConfig,
    prefix: (u8, u8),
    sources: u8,
    initials: u64,
    linger: Duration,
) -> FloodReport {
    let mut sockets = Vec::new();
    for host in 1..=sources {
        let ip = IpAddr::V4(Ipv4Addr::new(127, prefix.0, prefix.1, host));
        sockets.push(Arc::new(
            UdpSocket::bind(SocketAddr::new(ip, 0))
                .await
                .expect("bind a flood source"),
        ));
    }
    let replies = Arc::new(Replies::default());
    let receivers: Vec<_> = sockets
        .iter()
        .map(|socket| {
            let socket = Arc::clone(socket);
            let replies = Arc::clone(&replies);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_535];
                while let Ok(len) = socket.recv(&mut buf).await {
                    replies.bytes.fetch_add(len as u64, Ordering::Relaxed);
                    // Long header (bit 7), QUIC v1 packet type in bits 4-5.
                    let retry = len > 0 && buf[0] & 0x80 != 0 && (buf[0] >> 4) & 0x03 == 3;
                    if retry {
                        replies.retries.fetch_add(1, Ordering::Relaxed);
                    } else {
                        replies.other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let mut report = FloodReport {
        sources: sockets.len(),
        ..FloodReport::default()
    };
    let started = georelay::clock::monotonic_now();
    let mut datagram = Vec::with_capacity(1500);
    for n in 0..initials {
        let now = georelay::clock::monotonic_now();
        let (_, mut conn) = endpoint
            .connect(now, client.clone(), target, server_name)
            .expect("a client connection");
        datagram.clear();
        let Some(transmit) = conn.poll_transmit(now, 1, &mut datagram) else {
            continue;
        };
        let socket = &sockets[(n % sockets.len() as u64) as usize];
        socket
            .send_to(&datagram[..transmit.size], target)
            .await
            .expect("send an Initial");
        report.initials += 1;
        report.bytes_out += transmit.size as u64;
        // The client connection is dropped undriven: it never answers.
        if n % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    report.elapsed = started.elapsed();
    let answered = async {
        let mut seen = u64::MAX;
        loop {
            let now =
                replies.retries.load(Ordering::Relaxed) + replies.other.load(Ordering::Relaxed);
            if now == seen {
                return;
            }
            seen = now;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(linger, answered).await;
    for receiver in receivers {
        receiver.abort();
    }
    report.bytes_in = replies.bytes.load(Ordering::Relaxed);
    report.retries = replies.retries.load(Ordering::Relaxed);
    report.other_packets = replies.other.load(Ordering::Relaxed);
    report
}

/// The process's peak resident set (VmHWM), bytes.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}
