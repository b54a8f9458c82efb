//! A userspace UDP forwarder on loopback between one client and one node,
//! for impairing a single QUIC connection: [`UdpProxy::pause`] silently drops
//! every packet in both directions (a client that stops reading and
//! acknowledging), [`UdpProxy::set_delay`] adds one-way delay, and
//! [`UdpProxy::set_reorder`] holds back a random share of packets by an
//! extra delay so that later packets overtake them (reordering). The kernel
//! here has no `netem`, so delay and reordering live in userspace; random
//! loss and partitions are nftables rules (`faults::netns`).
//!
//! Each direction sends its packets in the order of their due time, not of
//! arrival, so a held-back packet does not delay the ones behind it. The
//! random choice is a seeded xorshift: a run is reproducible.
//!
//! The client sends to [`UdpProxy::addr`]; the proxy forwards from its own
//! upstream socket, so the node sees the proxy's upstream address as the
//! client's source (bind it where the client should appear to come from).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest UDP payload the proxy relays (QUIC never sends more on loopback).
const MAX_PACKET: usize = 65_535;

/// Packets that may wait out their added delay per direction; more are
/// dropped, as a full router queue would.
const DELAY_QUEUE: usize = 8192;

/// What the proxy did with the packets it saw.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    forwarded: AtomicU64,
    dropped_paused: AtomicU64,
    dropped_queue_full: AtomicU64,
    held_back: AtomicU64,
}

/// The shared switches and counters of a running proxy.
#[derive(Debug, Default)]
struct Shared {
    paused: AtomicBool,
    delay_us: AtomicU64,
    /// Per mille of packets held back (0..=1000).
    reorder_per_mille: AtomicU64,
    reorder_extra_us: AtomicU64,
    counters: ProxyCounters,
}

/// A running proxy; dropping it stops the forwarding tasks.
#[derive(Debug)]
pub struct UdpProxy {
    addr: SocketAddr,
    upstream_local: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// A packet waiting for its send time: due, arrival number (ties keep
/// arrival order), bytes, destination.
type Delayed = (Instant, u64, Vec<u8>, Option<SocketAddr>);

impl UdpProxy {
    /// Listens on `listen_ip` (port chosen by the OS) and forwards to
    /// `upstream` from a socket bound to `upstream_bind_ip`.
    pub async fn start(
        listen_ip: IpAddr,
        upstream: SocketAddr,
        upstream_bind_ip: IpAddr,
    ) -> io::Result<UdpProxy> {
        let front = Arc::new(UdpSocket::bind(SocketAddr::new(listen_ip, 0)).await?);
        let back = Arc::new(UdpSocket::bind(SocketAddr::new(upstream_bind_ip, 0)).await?);
        back.connect(upstream).await?;
        let addr = front.local_addr()?;
        let upstream_local = back.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (to_node_tx, to_node_rx) = mpsc::channel::<Delayed>(DELAY_QUEUE);
        let (to_client_tx, to_client_rx) = mpsc::channel::<Delayed>(DELAY_QUEUE);
        let tasks = vec![
            tokio::spawn(pump(
                Arc::clone(&front),
                Arc::clone(&back),
                Arc::clone(&shared),
                to_node_tx,
                to_client_tx,
            )),
            tokio::spawn(send_delayed(Arc::clone(&back), to_node_rx)),
            tokio::spawn(send_delayed(Arc::clone(&front), to_client_rx)),
        ];
        Ok(UdpProxy {
            addr,
            upstream_local,
            shared,
            tasks,
        })
    }

    /// Where the client must send (its target address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the node sees the proxied client come from.
    pub fn upstream_local_addr(&self) -> SocketAddr {
        self.upstream_local
    }

    /// From now on, silently drops every packet in both directions.
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Forwards packets again.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Adds `delay` to every packet forwarded from now on, each direction.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(micros, Ordering::SeqCst);
    }

    /// From now on holds back `share` (0.0 to 1.0) of the packets, chosen at
    /// random in each direction, by `extra` on top of the delay, so that
    /// packets sent after them arrive first.
    pub fn set_reorder(&self, share: f64, extra: Duration) {
        let per_mille = (share.clamp(0.0, 1.0) * 1000.0).round() as u64;
        let micros = u64::try_from(extra.as_micros()).unwrap_or(u64::MAX);
        self.shared.reorder_extra_us.store(micros, Ordering::SeqCst);
        self.shared
            .reorder_per_mille
            .store(per_mille, Ordering::SeqCst);
    }

    /// Packets held back for reordering (both directions).
    pub fn held_back(&self) -> u64 {
        self.shared.counters.held_back.load(Ordering::SeqCst)
    }

    /// Packets forwarded (both directions).
    pub fn forwarded(&self) -> u64 {
        self.shared.counters.forwarded.load(Ordering::SeqCst)
    }

    /// Packets dropped because the proxy was paused (both directions).
    pub fn dropped_while_paused(&self) -> u64 {
        self.shared.counters.dropped_paused.load(Ordering::SeqCst)
    }

    /// Packets dropped because the delay queue was full.
    pub fn dropped_queue_full(&self) -> u64 {
        self.shared
            .counters
            .dropped_queue_full
            .load(Ordering::SeqCst)
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Receives from both sides and hands each packet to its direction's
/// sender, or drops it while paused. The client is whoever last sent to the
/// front socket.
async fn pump(
    front: Arc<UdpSocket>,
    back: Arc<UdpSocket>,
    shared: Arc<Shared>,
    to_node: mpsc::Sender<Delayed>,
    to_client: mpsc::Sender<Delayed>,
) {
    let mut client: Option<SocketAddr> = None;
    let mut random = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut arrivals = 0u64;
    let mut front_buf = vec![0u8; MAX_PACKET];
    let mut back_buf = vec![0u8; MAX_PACKET];
    loop {
        let (packet, destination, queue) = tokio::select! {
            received = front.recv_from(&mut front_buf) => {
                let Ok((len, from)) = received else { return };
                client = Some(from);
                (front_buf[..len].to_vec(), None, &to_node)
            }
            received = back.recv(&mut back_buf) => {
                let Ok(len) = received else { return };
                let Some(client) = client else { continue };
                (back_buf[..len].to_vec(), Some(client), &to_client)
            }
        };
        if shared.paused.load(Ordering::SeqCst) {
            shared
                .counters
                .dropped_paused
                .fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let mut delay_us = shared.delay_us.load(Ordering::SeqCst);
        if random.below(1000) < shared.reorder_per_mille.load(Ordering::SeqCst) {
            delay_us += shared.reorder_extra_us.load(Ordering::SeqCst);
            shared.counters.held_back.fetch_add(1, Ordering::SeqCst);
        }
        let due = georelay::clock::timer_now() + Duration::from_micros(delay_us);
        arrivals += 1;
        if queue
            .try_send((due, arrivals, packet, destination))
            .is_err()
        {
            shared
                .counters
                .dropped_queue_full
                .fetch_add(1, Ordering::SeqCst);
            continue;
        }
        shared.counters.forwarded.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sends each packet of one direction at its due time, earliest due first
/// (a held-back packet lets later ones pass). `None` as the destination
/// means the socket's connected peer.
async fn send_delayed(socket: Arc<UdpSocket>, mut queue: mpsc::Receiver<Delayed>) {
    let mut waiting: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        let next_due = waiting.peek().map(|Reverse((due, ..))| *due);
        tokio::select! {
            received = queue.recv(), if open => match received {
                Some(packet) => waiting.push(Reverse(packet)),
                None => open = false,
            },
            () = sleep_until_or_forever(next_due) => {
                let Some(Reverse((_, _, packet, destination))) = waiting.pop() else {
                    continue;
                };
                // UDP send errors (e.g. ICMP unreachable) are a lost packet,
                // as on a real network.
                let _ = match destination {
                    Some(to) => socket.send_to(&packet, to).await,
                    None => socket.send(&packet).await,
                };
            }
        }
    }
}

async fn sleep_until_or_forever(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// A seeded xorshift64 generator: reproducible impairment.
struct XorShift(u64);

impl XorShift {
    /// A number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}
