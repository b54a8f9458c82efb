//! Synthetic SDK clients against a running fleet, with exact accounting: the
//! library behind `georelay loadgen`, reused by tests and benches.
//!
//! [`run`] connects clients through the [`crate::client`] SDK (which follows
//! redirects like any SDK), paces media with a traffic [`Profile`], reads the
//! relays' process metrics around the steady window, and returns a
//! [`Summary`] whose counts are exact. [`run_baseline`] runs the same
//! traffic through a bare quinn forwarder ([`baseline`]) for a ratio
//! measured in the same run.
//!
//! # Shapes
//! - Channels: `publishers` and `subscribers` spread round robin over
//!   `channels`; every subscriber receives every publisher of its channel.
//! - Rooms (`rooms > 0`): `rooms × room_size` participants, each publishing
//!   one track and subscribing to the other `room_size − 1` of its room.
//! - Entry nodes: publishers (and room participants) spread round robin over
//!   `publish_to` then `more_pub_nodes`; subscribers over `subscribe_to` then
//!   `more_sub_nodes`.
//! - Idle sessions (`idle`): admitted sessions that neither publish nor
//!   subscribe, connected first and held open for the whole run.
//!
//! # Timing header
//! Every payload starts with [`TIMING_HEADER_LEN`] bytes, big-endian:
//!
//! | bytes  | field                                                  |
//! |--------|--------------------------------------------------------|
//! | 0..4   | publisher index (`u32`, 0-based within the run); bit 31 ([`KEYFRAME_FLAG`]) marks a keyframe-burst packet |
//! | 4..12  | sequence number of that publisher (`u64`, from 0)      |
//! | 12..20 | send time, µs on the loadgen process clock (`u64`)     |
//!
//! The rest of the payload repeats `payload_text`. The process clock
//! ([`now_us`]) is one monotonic clock shared by every client of the
//! process, so one-way latency is receive time minus send time.
//!
//! # Accounting
//! - Every subscriber subscribes, and sees a `TRACK_ADDED` for every other
//!   publisher of its channel, before any packet is sent (subscribers that
//!   fail or time out are reported in `unready_subscribers`; their packets
//!   count as lost).
//! - `sent` counts packets the SDK accepted. `expected` is, for each
//!   subscriber, what the other publishers of its channel sent; summed.
//! - `received` counts distinct `(publisher, sequence)` pairs per
//!   subscriber that arrived before the end of the drain window; repeats
//!   count as `duplicates`, packets after it as `late`. `lost = expected −
//!   received`.
//! - The drain window lasts until every subscriber has all it expects, or
//!   `drain` elapses.
//! - A refused client does not abort the run: its stable code is counted in
//!   `errors`; failures without a code in `failures`. A subscription still
//!   unavailable (`SUBSCRIPTION_STATE`) at the end counts its code once; one
//!   that was unavailable only while the mesh found the publisher does not.
//!
//! # Pacing
//! Each publisher follows its profile's [`shape`] on a `tokio::time::interval`
//! with [`MissedTickBehavior::Skip`]: `Burst` would catch up by sending a
//! backlog back to back, which no real-time source does; `Delay` would
//! stretch the run. A stalled publisher sends less, visible as
//! `sent < planned`.
//!
//! # Relay cost
//! With [`LoadSpec::admin`] set, the process metrics of every node a client
//! was admitted to (plus [`LoadSpec::measure_nodes`]) are read when the
//! clients are ready and again after the drain; each process counts once
//! ([`cost`]). `relay_cpu_us_per_packet` is relay CPU ÷ received packets,
//! `gbps_per_relay_core` received payload bits ÷ relay CPU seconds.
//!
//! # Bounds
//! At most [`MAX_CLIENTS`] clients, `duration` ≤ 24 h; every connect, the
//! readiness wait, each reliable send and the drain are bounded by
//! `setup_timeout` or `drain`.

pub mod baseline;
mod cost;
mod observe;
pub mod shape;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use rustls::RootCertStore;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use crate::auth::{Claims, Role, TokenKey};
use crate::client::{Client, ClientError, ClientOptions, Event, Join, Target};
use crate::clock::{Clock, SystemClock};
use crate::config::Fleet;
use crate::ids::{AppId, NodeId};
use crate::relay::policy::Policy;
use crate::wire::{SubscriptionStatus, TrackKind};

use self::baseline::{BareClient, Forwarder, JOIN_PUBLISH, JOIN_SUBSCRIBE};
pub use self::cost::{CostProbe, RelayCost};
use self::observe::Ticker;
pub use self::observe::{Observer, Snapshot};
pub use self::shape::{KEYFRAME_FLAG, Profile, TIMING_HEADER_LEN};
use self::shape::{MAX_PAYLOAD, Schedule, Timing, payload_template};

/// The most clients (publishers, subscribers, room participants and idle
/// sessions together) one run may open.
pub const MAX_CLIENTS: usize = 20_000;

/// Latencies above this are recorded as this value (60 s).
const MAX_LATENCY_US: u64 = 60_000_000;

/// How long the coordinator sleeps between checks of the subscribers.
const POLL: Duration = Duration::from_millis(5);

/// Connection attempts in flight at once.
const CONNECT_CONCURRENCY: usize = 64;

/// Idle sessions per channel.
const IDLE_PER_CHANNEL: usize = 100;

/// Idle sessions per client UDP socket (one quinn endpoint, its driver and
/// receive buffer shared by that many connections). Publishers and
/// subscribers each keep a socket of their own, as SDKs on devices do, so
/// the relay sees a distinct address per media client.
const IDLE_PER_SOCKET: usize = 100;

/// Numbers runs within one process, so concurrent runs use distinct channels.
static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The origin of [`now_us`], fixed at first use.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds on the loadgen process clock: monotonic, shared by every
/// publisher and subscriber of the process.
pub fn now_us() -> u64 {
    EPOCH
        .get_or_init(crate::clock::monotonic_now)
        .elapsed()
        .as_micros() as u64
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// The app whose clients are simulated.
    pub app: AppId,
    /// The app's token key; the loadgen mints its own tokens.
    pub token_key: TokenKey,
    /// Certificates the relays' chains must lead to.
    pub roots: Arc<RootCertStore>,
    /// Where publishers (and room participants) connect first.
    pub publish_to: Target,
    /// Further entry nodes for publishers, round robin after `publish_to`.
    pub more_pub_nodes: Vec<Target>,
    /// Where subscribers connect first.
    pub subscribe_to: Target,
    /// Further entry nodes for subscribers, round robin after `subscribe_to`.
    pub more_sub_nodes: Vec<Target>,
    /// Local address of every client socket.
    pub bind: IpAddr,
    /// Channels the clients are spread over (round robin); not with rooms.
    pub channels: usize,
    /// Publishers, one track each; not with rooms.
    pub publishers: usize,
    /// Subscribers, one channel each; not with rooms.
    pub subscribers: usize,
    /// Rooms of `room_size` participants who all publish and subscribe; 0: none.
    pub rooms: usize,
    /// Participants per room.
    pub room_size: usize,
    /// What each publisher sends.
    pub profile: Profile,
    /// Packets per second, per publisher (`raw` and `data`).
    pub rate_pps: u32,
    /// Payload bytes per packet, timing header included (`raw` and `data`).
    pub payload_size: usize,
    /// How long publishers send.
    pub duration: Duration,
    /// Repeated after the timing header to fill the payload.
    pub payload_text: String,
    /// The longest wait for in-flight packets after the publishers stop.
    pub drain: Duration,
    /// The longest wait for one connection, for track announcements, and
    /// for one reliable message.
    pub setup_timeout: Duration,
    /// Admitted idle sessions held open during the run.
    pub idle: usize,
    /// Admin addresses by node id, for the relay cost; empty: not measured.
    pub admin: BTreeMap<String, SocketAddr>,
    /// Nodes measured besides those the clients were admitted to (transit).
    pub measure_nodes: Vec<String>,
}

impl LoadSpec {
    /// One publisher and one subscriber on `target`, raw 50 pps of 200 bytes
    /// for 5 s, bound to 127.0.0.1, 500 ms drain, 10 s setup limit, relay
    /// cost not measured.
    pub fn new(app: AppId, token_key: TokenKey, roots: Arc<RootCertStore>, target: Target) -> Self {
        Self {
            app,
            token_key,
            roots,
            publish_to: target.clone(),
            more_pub_nodes: Vec::new(),
            subscribe_to: target,
            more_sub_nodes: Vec::new(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            channels: 1,
            publishers: 1,
            subscribers: 1,
            rooms: 0,
            room_size: 0,
            profile: Profile::Raw,
            rate_pps: 50,
            payload_size: 200,
            duration: Duration::from_secs(5),
            payload_text: "georelay-loadgen ".into(),
            drain: Duration::from_millis(500),
            setup_timeout: Duration::from_secs(10),
            idle: 0,
            admin: BTreeMap::new(),
            measure_nodes: Vec::new(),
        }
    }

    /// Checks the bounds [`run`] relies on.
    pub fn validate(&self) -> Result<(), LoadError> {
        let invalid = |msg: &str| Err(LoadError::InvalidSpec(msg.to_string()));
        if self.channels == 0 {
            return invalid("--channels must be at least 1");
        }
        if self.rooms > 0 && self.room_size < 2 {
            return invalid("--room-size must be at least 2 (each participant hears the others)");
        }
        let clients = self
            .publishers
            .saturating_add(self.subscribers)
            .saturating_add(self.rooms.saturating_mul(self.room_size))
            .saturating_add(self.idle);
        if clients > MAX_CLIENTS {
            return Err(LoadError::InvalidSpec(format!(
                "at most {MAX_CLIENTS} clients (publishers, subscribers, room participants and idle sessions) per run"
            )));
        }
        if self.rate_pps == 0 || self.rate_pps > 1_000_000 {
            return invalid("--rate must be 1 to 1000000 packets per second");
        }
        if !(TIMING_HEADER_LEN..=MAX_PAYLOAD).contains(&self.payload_size) {
            return Err(LoadError::InvalidSpec(format!(
                "--size must be {TIMING_HEADER_LEN} (the timing header) to {MAX_PAYLOAD} bytes"
            )));
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(24 * 3600) {
            return invalid("--duration must be more than 0 and at most 86400 seconds");
        }
        Ok(())
    }

    fn schedule(&self) -> Schedule {
        Schedule::new(
            self.profile,
            self.rate_pps,
            self.payload_size,
            self.duration,
        )
    }

    fn pub_targets(&self) -> Vec<Target> {
        std::iter::once(self.publish_to.clone())
            .chain(self.more_pub_nodes.iter().cloned())
            .collect()
    }

    fn sub_targets(&self) -> Vec<Target> {
        std::iter::once(self.subscribe_to.clone())
            .chain(self.more_sub_nodes.iter().cloned())
            .collect()
    }

    /// Every active client of the run: subscribers first, then publishers
    /// (or the room participants).
    fn participants(&self) -> Vec<Participant> {
        let pubs = self.pub_targets();
        let subs = self.sub_targets();
        if self.rooms > 0 {
            return (0..self.rooms * self.room_size)
                .map(|i| Participant {
                    channel: i / self.room_size,
                    publisher: Some(i as u32),
                    subscribes: true,
                    target: pubs[i % pubs.len()].clone(),
                    user: format!("loadgen-room-{i}"),
                })
                .collect();
        }
        let subscribers = (0..self.subscribers).map(|j| Participant {
            channel: j % self.channels,
            publisher: None,
            subscribes: true,
            target: subs[j % subs.len()].clone(),
            user: format!("loadgen-sub-{j}"),
        });
        let publishers = (0..self.publishers).map(|i| Participant {
            channel: i % self.channels,
            publisher: Some(i as u32),
            subscribes: false,
            target: pubs[i % pubs.len()].clone(),
            user: format!("loadgen-pub-{i}"),
        });
        subscribers.chain(publishers).collect()
    }

    fn channel_count(&self) -> usize {
        if self.rooms > 0 {
            self.rooms
        } else {
            self.channels
        }
    }

    fn publisher_count(&self) -> usize {
        if self.rooms > 0 {
            self.rooms * self.room_size
        } else {
            self.publishers
        }
    }
}

/// The target of a configured node.
pub fn node_target(fleet: &Fleet, node: &str) -> Option<Target> {
    fleet.node(node).map(|n| Target {
        node: n.id.to_string(),
        addr: n.listen,
    })
}

/// Every node's admin address, by node id.
pub fn admin_addresses(fleet: &Fleet) -> BTreeMap<String, SocketAddr> {
    fleet
        .nodes
        .iter()
        .map(|(id, node)| (id.to_string(), node.admin))
        .collect()
}

/// The first node (in id order) that the app may use.
pub fn first_allowed_node(policy: &Policy, app: &AppId) -> Option<NodeId> {
    policy
        .fleet
        .nodes
        .keys()
        .find(|node| policy.node_allowed(app, node))
        .cloned()
}

/// Why a run could not be carried out (refusals are not errors: they are
/// counted in the [`Summary`]).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A field of the [`LoadSpec`] is out of bounds.
    #[error("invalid load spec: {0}")]
    InvalidSpec(String),
    /// The relay accepts smaller media payloads than asked for.
    #[error("--size {size} exceeds the largest media payload the relay accepts ({max} bytes)")]
    PayloadTooLarge {
        /// The requested payload size.
        size: usize,
        /// The relay's limit on this connection.
        max: usize,
    },
    /// The latency histogram could not be built.
    #[error("latency histogram: {0}")]
    Histogram(String),
    /// The baseline forwarder could not be started.
    #[error("baseline forwarder: {0}")]
    Baseline(String),
    /// The client sockets of the idle sessions could not be bound.
    #[error("idle sessions' sockets: {0}")]
    IdleSockets(std::io::Error),
}

/// Latency percentiles in microseconds; `None` when nothing was received.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
    /// 99.9th percentile.
    pub p999: Option<u64>,
    /// Largest.
    pub max: Option<u64>,
    /// Mean.
    pub mean: Option<f64>,
    /// How many packets were measured (the received ones).
    pub samples: u64,
}

/// Loss and latency of the packets sent in keyframe bursts (`video`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BurstStats {
    /// Keyframe packets the publishers' SDK accepted.
    pub sent: u64,
    /// Sum over subscribers of the keyframe packets their channel sent.
    pub expected: u64,
    /// Distinct keyframe packets received in time.
    pub received: u64,
    /// `expected − received`.
    pub lost: u64,
    /// `lost / expected`.
    pub loss_ratio: f64,
    /// One-way latency of the received keyframe packets.
    pub latency_us: Latency,
}

/// The idle sessions of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IdleStats {
    /// Sessions asked for.
    pub asked: usize,
    /// Sessions admitted (WELCOME) and held.
    pub admitted: usize,
    /// How long connecting them took, in seconds.
    pub setup_s: f64,
    /// `admitted / setup_s`.
    pub handshakes_per_s: f64,
    /// Growth of the relays' resident memory while they connected ÷
    /// `admitted`, in bytes; `None` when the relay cost is not measured.
    pub relay_rss_bytes_per_session: Option<f64>,
}

/// The result of a run; see the module docs for what each count means.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// What carried the traffic: `georelay` or `baseline` (bare quinn).
    pub through: String,
    /// The app.
    pub app: String,
    /// Entry nodes of the publishers (comma-separated).
    pub pub_node: String,
    /// Entry nodes of the subscribers (comma-separated).
    pub sub_node: String,
    /// The traffic profile.
    pub profile: String,
    /// Rooms (0 without `--rooms`).
    pub rooms: usize,
    /// Participants per room.
    pub room_size: usize,
    /// Publishers that connected and announced their track.
    pub publishers: usize,
    /// Subscribers that connected and subscribed (room participants included).
    pub subscribers: usize,
    /// Subscribers that did not see every track of their channel in time.
    pub unready_subscribers: usize,
    /// Channels used (rooms count as channels).
    pub channels: usize,
    /// Packets per second per publisher, on average over the schedule.
    pub rate_pps: f64,
    /// The largest payload of the profile, timing header included.
    pub payload_bytes: usize,
    /// The send phase as measured, in seconds.
    pub duration_s: f64,
    /// What the connected publishers would send on schedule.
    pub planned: u64,
    /// Packets the publishers' SDK accepted.
    pub sent: u64,
    /// Sum over subscribers of what the other publishers of their channel sent.
    pub expected: u64,
    /// Distinct packets received in time, summed over subscribers.
    pub received: u64,
    /// Payload bytes of the received packets.
    pub received_bytes: u64,
    /// `expected − received`.
    pub lost: u64,
    /// `lost / expected` (0 when nothing was expected).
    pub loss_ratio: f64,
    /// Repeated `(publisher, sequence)` pairs.
    pub duplicates: u64,
    /// Packets that arrived after the drain window.
    pub late: u64,
    /// Payloads without a valid timing header, or from another channel.
    pub malformed: u64,
    /// Packets the SDK dropped because the subscriber task lagged.
    pub client_dropped: u64,
    /// One-way latency of the received packets.
    pub latency_us: Latency,
    /// Keyframe bursts (`video` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyframes: Option<BurstStats>,
    /// `received / duration_s`.
    pub throughput_pps: f64,
    /// Refusals and subscription failures, by stable code name.
    pub errors: BTreeMap<String, u64>,
    /// Failures without a code: `connect`, `closed`, `send`, `timeout`.
    pub failures: BTreeMap<String, u64>,
    /// Redirects followed by clients that connected.
    pub redirects: u64,
    /// How long the drain window lasted, in milliseconds.
    pub drain_ms: u64,
    /// Idle sessions (`--idle`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleStats>,
    /// The nodes (or `baseline`) whose process cost was read.
    pub relay_nodes: Vec<String>,
    /// Distinct relay processes measured.
    pub relay_processes: Option<usize>,
    /// Relay CPU seconds (user + system) in the steady window.
    pub relay_cpu_s: Option<f64>,
    /// Relay CPU µs per received packet.
    pub relay_cpu_us_per_packet: Option<f64>,
    /// Received payload Gbit per relay CPU second.
    pub gbps_per_relay_core: Option<f64>,
    /// Relay resident memory after the window (summed over processes).
    pub relay_rss_bytes: Option<u64>,
    /// Relay open file descriptors after the window, when reported.
    pub relay_open_fds: Option<u64>,
    /// Why the relay cost could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_cost_error: Option<String>,
    /// The same traffic through the bare quinn forwarder (`--baseline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Box<Summary>>,
    /// `relay_cpu_us_per_packet` ÷ the baseline's (`--baseline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_cpu_per_packet: Option<f64>,
}

impl Summary {
    /// Attaches the baseline run of the same traffic and the CPU ratio.
    pub fn with_baseline(mut self, baseline: Summary) -> Summary {
        self.ratio_cpu_per_packet = match (
            self.relay_cpu_us_per_packet,
            baseline.relay_cpu_us_per_packet,
        ) {
            (Some(relay), Some(bare)) if bare > 0.0 => Some(relay / bare),
            _ => None,
        };
        self.baseline = Some(Box::new(baseline));
        self
    }
}

/// What carries the traffic.
enum Via {
    Relay,
    Bare {
        addr: SocketAddr,
        roots: Arc<RootCertStore>,
    },
}

/// A client of either the relay or the bare forwarder.
enum LoadClient {
    Relay(Client),
    Bare(BareClient),
}

impl LoadClient {
    fn send_media(
        &self,
        track: u64,
        seq: u64,
        timestamp_us: u64,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        match self {
            LoadClient::Relay(c) => c.send_media(track, seq, timestamp_us, payload),
            LoadClient::Bare(c) => c.send_media(track, seq, timestamp_us, payload),
        }
    }

    async fn send_message(&self, track: u64, payload: &[u8]) -> Result<(), ClientError> {
        match self {
            LoadClient::Relay(c) => c.send_message(track, payload).await,
            LoadClient::Bare(_) => Err(ClientError::Closed(
                "the baseline forwards datagrams only".into(),
            )),
        }
    }

    async fn next_event(&mut self) -> Option<Event> {
        match self {
            LoadClient::Relay(c) => c.events().next().await,
            LoadClient::Bare(c) => c.next_event().await,
        }
    }

    /// An event already queued (`Some(None)`: the stream ended), or `None`.
    fn try_next_event(&mut self) -> Option<Option<Event>> {
        match self {
            LoadClient::Relay(c) => c.events().next().now_or_never(),
            LoadClient::Bare(c) => c.try_next_event(),
        }
    }

    fn dropped_events(&self) -> u64 {
        match self {
            LoadClient::Relay(c) => c.dropped_events(),
            LoadClient::Bare(c) => c.dropped_events(),
        }
    }

    fn redirects(&self) -> u64 {
        match self {
            LoadClient::Relay(c) => c.redirects() as u64,
            LoadClient::Bare(_) => 0,
        }
    }

    fn node(&self) -> Option<&str> {
        match self {
            LoadClient::Relay(c) => Some(c.node()),
            LoadClient::Bare(_) => None,
        }
    }

    fn max_media_payload(&self) -> usize {
        match self {
            LoadClient::Relay(c) => c.max_media_payload(),
            LoadClient::Bare(c) => c.max_media_payload(),
        }
    }

    async fn close(self) {
        match self {
            LoadClient::Relay(c) => c.close().await,
            LoadClient::Bare(c) => c.close().await,
        }
    }
}

/// One active client of the run.
#[derive(Clone, Debug)]
struct Participant {
    channel: usize,
    publisher: Option<u32>,
    subscribes: bool,
    target: Target,
    user: String,
}

#[derive(Default)]
struct Tally {
    errors: BTreeMap<String, u64>,
    failures: BTreeMap<String, u64>,
    redirects: u64,
}

impl Tally {
    fn refusal(&mut self, err: &ClientError) {
        match (err.code(), err) {
            (Some(code), _) => *self.errors.entry(code.name().to_string()).or_default() += 1,
            (None, ClientError::Closed(_)) => self.failure("closed", 1),
            (None, _) => self.failure("connect", 1),
        }
    }

    fn failure(&mut self, kind: &str, count: u64) {
        if count > 0 {
            *self.failures.entry(kind.to_string()).or_default() += count;
        }
    }

    fn merge_codes(&mut self, codes: &BTreeMap<String, u64>) {
        for (code, count) in codes {
            *self.errors.entry(code.clone()).or_default() += count;
        }
    }
}

/// What a subscriber shares with the coordinator while running.
#[derive(Default)]
struct Progress {
    tracks_seen: AtomicUsize,
    received: AtomicU64,
    failed: AtomicBool,
    /// Latencies since the last [`Ticker`] pass, when one runs.
    interval: Option<Mutex<Histogram<u64>>>,
}

/// Live counters of the whole run, read by the coordinator and the ticker.
struct Shared {
    /// Packets sent, by publisher index.
    sent: Vec<AtomicU64>,
    /// Keyframe-burst packets sent, by publisher index.
    keyframe_sent: Vec<AtomicU64>,
    /// Subscribers' progress, by subscriber slot.
    subscribers: Vec<Arc<Progress>>,
    /// For each subscriber slot, the publishers it expects.
    expects: Vec<Vec<u32>>,
}

impl Shared {
    fn expected(&self, slot: usize) -> u64 {
        self.expects[slot]
            .iter()
            .map(|p| self.sent[*p as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// Keyframe packets the subscribers expected, summed.
    fn keyframes_expected(&self) -> u64 {
        self.expects
            .iter()
            .flatten()
            .map(|p| self.keyframe_sent[*p as usize].load(Ordering::Relaxed))
            .sum()
    }
}

/// The coordinator's instructions to every client task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Setup,
    Send(tokio::time::Instant),
    Stop,
}

/// Packet counts and latencies of one client, or of the whole run.
struct Counts {
    sent: u64,
    keyframe_sent: u64,
    received: u64,
    received_bytes: u64,
    keyframe_received: u64,
    duplicates: u64,
    late: u64,
    malformed: u64,
    histogram: Histogram<u64>,
    keyframe_histogram: Histogram<u64>,
}

impl Counts {
    fn new() -> Result<Counts, LoadError> {
        Ok(Counts {
            sent: 0,
            keyframe_sent: 0,
            received: 0,
            received_bytes: 0,
            keyframe_received: 0,
            duplicates: 0,
            late: 0,
            malformed: 0,
            histogram: histogram()?,
            keyframe_histogram: histogram()?,
        })
    }

    fn add(&mut self, other: &Counts) -> Result<(), LoadError> {
        self.sent += other.sent;
        self.keyframe_sent += other.keyframe_sent;
        self.received += other.received;
        self.received_bytes += other.received_bytes;
        self.keyframe_received += other.keyframe_received;
        self.duplicates += other.duplicates;
        self.late += other.late;
        self.malformed += other.malformed;
        let merge = |into: &mut Histogram<u64>, from: &Histogram<u64>| {
            into.add(from)
                .map_err(|e| LoadError::Histogram(e.to_string()))
        };
        merge(&mut self.histogram, &other.histogram)?;
        merge(&mut self.keyframe_histogram, &other.keyframe_histogram)
    }
}

/// What a client task reports at the end.
struct Report {
    client: LoadClient,
    counts: Counts,
    send_failures: u64,
    errors: BTreeMap<String, u64>,
    closed: u64,
    finished_sending: Option<Instant>,
    /// The code of the subscription's last `SUBSCRIPTION_STATE`, while unavailable.
    unavailable: Option<&'static str>,
}

fn histogram() -> Result<Histogram<u64>, LoadError> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| LoadError::Histogram(e.to_string()))
}

/// Runs the load described by `spec` against the relays and accounts for
/// every packet.
pub async fn run(spec: &LoadSpec) -> Result<Summary, LoadError> {
    run_observed(spec, None).await
}

/// Like [`run`], calling `observer` once a second from the start of the
/// send phase to the end of the drain with the [`Snapshot`] so far.
pub async fn run_observed(
    spec: &LoadSpec,
    observer: Option<Observer>,
) -> Result<Summary, LoadError> {
    execute(spec, &Via::Relay, observer).await
}

/// Runs the same traffic as [`run`] through a bare quinn forwarder started
/// from `forwarder_exe` (a `georelay` binary) as a child process, measured
/// from `/proc`; see [`baseline`].
pub async fn run_baseline(
    spec: &LoadSpec,
    forwarder_exe: PathBuf,
    observer: Option<Observer>,
) -> Result<Summary, LoadError> {
    spec.validate()?;
    if spec.profile.reliable() {
        return Err(LoadError::InvalidSpec(
            "--baseline forwards datagrams only; use a datagram profile (raw, audio, video)".into(),
        ));
    }
    let ip = spec.publish_to.addr.ip();
    let forwarder = tokio::task::spawn_blocking(move || Forwarder::start(&forwarder_exe, ip))
        .await
        .map_err(|e| LoadError::Baseline(e.to_string()))?
        .map_err(LoadError::Baseline)?;
    let via = Via::Bare {
        addr: forwarder.addr,
        roots: Arc::clone(&forwarder.roots),
    };
    let mut spec = spec.clone();
    spec.admin.clear();
    let result = execute_with_probe(&spec, &via, observer, Some(forwarder.pid())).await;
    drop(forwarder);
    result
}

async fn execute(
    spec: &LoadSpec,
    via: &Via,
    observer: Option<Observer>,
) -> Result<Summary, LoadError> {
    execute_with_probe(spec, via, observer, None).await
}

/// The probe of the relay nodes in `nodes` (plus the measured extras), if
/// the spec measures cost.
fn admin_probe(spec: &LoadSpec, nodes: &BTreeSet<String>) -> Option<(CostProbe, Vec<String>)> {
    if spec.admin.is_empty() {
        return None;
    }
    let names: BTreeSet<String> = nodes
        .iter()
        .chain(&spec.measure_nodes)
        .filter(|n| spec.admin.contains_key(*n))
        .cloned()
        .collect();
    let addrs = names.iter().map(|n| spec.admin[n]).collect();
    Some((CostProbe::Admin(addrs), names.into_iter().collect()))
}

async fn execute_with_probe(
    spec: &LoadSpec,
    via: &Via,
    observer: Option<Observer>,
    bare_pid: Option<u32>,
) -> Result<Summary, LoadError> {
    spec.validate()?;
    now_us();
    let run = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    let channel_name = |c: usize| format!("loadgen-{}-{run}-{c}", std::process::id());
    let schedule = spec.schedule();
    let mut tally = Tally::default();
    raise_fd_limit();

    let entry_nodes: BTreeSet<String> = spec
        .pub_targets()
        .iter()
        .chain(spec.sub_targets().iter())
        .map(|t| t.node.clone())
        .collect();
    let probe_for = |nodes: &BTreeSet<String>| match bare_pid {
        Some(pid) => Some((CostProbe::Pid(pid), vec!["baseline".to_string()])),
        None => admin_probe(spec, nodes),
    };

    // Idle sessions first: they are part of the steady state being measured.
    let mut idle_clients = Vec::new();
    let mut idle_stats = None;
    let mut cost_error = None;
    if spec.idle > 0 {
        let probe = probe_for(&entry_nodes);
        let before = match &probe {
            Some((probe, _)) => sample(probe, &mut cost_error).await,
            None => None,
        };
        let started = crate::clock::monotonic_now();
        let idle_target = spec.sub_targets();
        let sockets = spec.idle.div_ceil(IDLE_PER_SOCKET);
        let idle_endpoints = (0..sockets)
            .map(|_| crate::client::bind_client_endpoint(spec.bind))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(LoadError::IdleSockets)?;
        let results: Vec<_> = futures_util::stream::iter(0..spec.idle)
            .map(|k| {
                let channel = format!("{}-idle-{}", channel_name(0), k / IDLE_PER_CHANNEL);
                let target = idle_target[k % idle_target.len()].clone();
                let room = u32::MAX - (k / IDLE_PER_CHANNEL) as u32;
                let endpoint = &idle_endpoints[k / IDLE_PER_SOCKET];
                async move {
                    connect(
                        spec,
                        via,
                        &channel,
                        room,
                        &format!("loadgen-idle-{k}"),
                        Role::Subscribe,
                        0,
                        &target,
                        Some(endpoint),
                    )
                    .await
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
        for result in results {
            match result {
                Ok(client) => {
                    tally.redirects += client.redirects();
                    idle_clients.push(client);
                }
                Err(err) => tally.refusal(&err),
            }
        }
        let setup_s = started.elapsed().as_secs_f64();
        let after = match &probe {
            Some((probe, _)) => sample(probe, &mut cost_error).await,
            None => None,
        };
        let admitted = idle_clients.len();
        idle_stats = Some(IdleStats {
            asked: spec.idle,
            admitted,
            setup_s,
            handshakes_per_s: if setup_s > 0.0 {
                admitted as f64 / setup_s
            } else {
                0.0
            },
            relay_rss_bytes_per_session: match (before, after) {
                (Some(before), Some(after)) if admitted > 0 => {
                    Some((cost::rss(&after) as f64 - cost::rss(&before) as f64) / admitted as f64)
                }
                _ => None,
            },
        });
    }

    // Active clients: subscribers (they subscribe before any track exists),
    // then publishers; room participants subscribe, then announce.
    let participants = spec.participants();
    let (subscribing, publishing): (Vec<_>, Vec<_>) = participants
        .iter()
        .cloned()
        .enumerate()
        .partition(|(_, p)| p.subscribes && p.publisher.is_none());
    let mut connected: Vec<Option<(LoadClient, u64)>> =
        (0..participants.len()).map(|_| None).collect();
    let mut too_large = None;
    for group in [subscribing, publishing] {
        let results: Vec<_> = futures_util::stream::iter(group)
            .map(|(index, p)| {
                let channel = channel_name(p.channel);
                async move {
                    let result = join_participant(spec, via, &channel, &p).await;
                    (index, result)
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
        for (index, result) in results {
            match result {
                Ok((client, track)) => {
                    tally.redirects += client.redirects();
                    if participants[index].publisher.is_some()
                        && schedule.max_size() > client.max_media_payload()
                        && !spec.profile.reliable()
                    {
                        too_large = Some(client.max_media_payload());
                    }
                    connected[index] = Some((client, track));
                }
                Err(err) => tally.refusal(&err),
            }
        }
    }
    if let Some(max) = too_large {
        let clients = connected.into_iter().flatten().map(|(c, _)| c);
        close_all(clients.chain(idle_clients)).await;
        return Err(LoadError::PayloadTooLarge {
            size: schedule.max_size(),
            max,
        });
    }

    // Who expects whom: every connected publisher of the channel but itself.
    let publisher_count = spec.publisher_count();
    let mut channel_publishers = vec![Vec::new(); spec.channel_count()];
    for (index, p) in participants.iter().enumerate() {
        if let (Some(publisher), Some(_)) = (p.publisher, &connected[index]) {
            channel_publishers[p.channel].push(publisher);
        }
    }
    let mut landed = BTreeSet::new();
    let mut expects = Vec::new();
    let mut slots = Vec::new();
    for (index, p) in participants.iter().enumerate() {
        let Some((client, _)) = &connected[index] else {
            continue;
        };
        landed.extend(client.node().map(str::to_string));
        if p.subscribes {
            slots.push(index);
            expects.push(
                channel_publishers[p.channel]
                    .iter()
                    .copied()
                    .filter(|q| Some(*q) != p.publisher)
                    .collect::<Vec<u32>>(),
            );
        }
    }
    let observed = observer.is_some();
    let mut progress = Vec::new();
    for _ in &slots {
        progress.push(Arc::new(Progress {
            interval: if observed {
                Some(Mutex::new(
                    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
                        .map_err(|e| LoadError::Histogram(e.to_string()))?,
                ))
            } else {
                None
            },
            ..Progress::default()
        }));
    }
    let shared = Arc::new(Shared {
        sent: (0..publisher_count).map(|_| AtomicU64::new(0)).collect(),
        keyframe_sent: (0..publisher_count).map(|_| AtomicU64::new(0)).collect(),
        subscribers: progress,
        expects,
    });

    // One task per client.
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let template = Arc::new(payload_template(schedule.max_size(), &spec.payload_text));
    let mut tasks = Vec::new();
    let mut publishers = 0;
    let mut slot_of = slots
        .iter()
        .enumerate()
        .map(|(s, i)| (*i, s))
        .collect::<BTreeMap<_, _>>();
    for (index, p) in participants.iter().enumerate() {
        let Some((client, track)) = connected[index].take() else {
            continue;
        };
        let slot = slot_of.remove(&index);
        let known: BTreeSet<u32> = slot
            .map(|s| shared.expects[s].iter().copied().collect())
            .unwrap_or_default();
        publishers += usize::from(p.publisher.is_some());
        let task = ClientTask {
            client,
            track,
            publisher: p.publisher,
            slot,
            known,
            packets_per_publisher: schedule.packets(),
            schedule,
            reliable: spec.profile.reliable(),
            send_timeout: spec.setup_timeout,
            template: Arc::clone(&template),
            shared: Arc::clone(&shared),
            phase: phase_rx.clone(),
            done: done_tx.clone(),
        };
        tasks.push(tokio::spawn(task.drive(Counts::new()?)));
    }
    drop(done_tx);

    // Every subscriber sees every other track of its channel before sending starts.
    let ready_deadline = crate::clock::monotonic_now() + spec.setup_timeout;
    let needs = |s: usize| match via {
        Via::Relay => shared.expects[s].len(),
        // The forwarder registered every client before answering its join.
        Via::Bare { .. } => 0,
    };
    let ready = || {
        shared.subscribers.iter().enumerate().all(|(s, p)| {
            p.failed.load(Ordering::Relaxed) || p.tracks_seen.load(Ordering::Relaxed) >= needs(s)
        })
    };
    while !ready() && crate::clock::monotonic_now() < ready_deadline {
        tokio::time::sleep(POLL).await;
    }
    let unready_subscribers = shared
        .subscribers
        .iter()
        .enumerate()
        .filter(|(s, p)| p.tracks_seen.load(Ordering::Relaxed) < needs(*s))
        .count();

    // The steady window: cost before, send, drain, cost after.
    let probe = probe_for(&landed.union(&entry_nodes).cloned().collect());
    let cost_before = match &probe {
        Some((probe, _)) => sample(probe, &mut cost_error).await,
        None => None,
    };
    let start = crate::clock::timer_now() + Duration::from_millis(10);
    let _ = phase_tx.send(Phase::Send(start));
    let ticker = observer.map(|observer| Ticker::spawn(Arc::clone(&shared), observer));
    let send_deadline = start.into_std() + spec.duration + spec.setup_timeout + spec.drain;
    for _ in 0..publishers {
        let remaining = send_deadline.saturating_duration_since(crate::clock::monotonic_now());
        if !matches!(
            tokio::time::timeout(remaining, done_rx.recv()).await,
            Ok(Some(()))
        ) {
            break;
        }
    }
    let drain_start = crate::clock::monotonic_now();
    let drain_end = drain_start + spec.drain;
    let drained = || {
        shared
            .subscribers
            .iter()
            .enumerate()
            .all(|(s, p)| p.received.load(Ordering::Relaxed) >= shared.expected(s))
    };
    while !drained() && crate::clock::monotonic_now() < drain_end {
        tokio::time::sleep(POLL).await;
    }
    let drain_ms = drain_start.elapsed().as_millis() as u64;
    let _ = phase_tx.send(Phase::Stop);
    if let Some(ticker) = ticker {
        ticker.finish().await;
    }
    let cost_after = match &probe {
        Some((probe, _)) => sample(probe, &mut cost_error).await,
        None => None,
    };

    // Collect.
    let mut totals = Counts::new()?;
    let mut client_dropped = 0;
    let mut last_send = start.into_std();
    let mut clients = Vec::new();
    for task in tasks {
        match task.await {
            Ok(report) => {
                totals.add(&report.counts)?;
                client_dropped += report.client.dropped_events();
                tally.failure("send", report.send_failures);
                tally.failure("closed", report.closed);
                tally.merge_codes(&report.errors);
                if let Some(finished) = report.finished_sending {
                    last_send = last_send.max(finished);
                }
                clients.push(report.client);
            }
            Err(_) => tally.failure("task", 1),
        }
    }
    close_all(clients.into_iter().chain(idle_clients)).await;

    let expected: u64 = (0..shared.subscribers.len())
        .map(|s| shared.expected(s))
        .sum();
    let keyframe_expected = shared.keyframes_expected();
    let duration_s = last_send
        .saturating_duration_since(start.into_std())
        .as_secs_f64();
    let lost = expected.saturating_sub(totals.received);
    let relay = match (&cost_before, &cost_after) {
        (Some(before), Some(after)) => Some(cost::cost(before, after)),
        _ => None,
    };
    let per_packet = relay
        .as_ref()
        .filter(|_| totals.received > 0)
        .map(|r| r.cpu_s * 1e6 / totals.received as f64);
    let gbps = relay
        .as_ref()
        .filter(|r| r.cpu_s > 0.0)
        .map(|r| totals.received_bytes as f64 * 8.0 / r.cpu_s / 1e9);
    let join_nodes = |targets: Vec<Target>| {
        targets
            .iter()
            .map(|t| t.node.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (through, pub_node, sub_node) = match via {
        Via::Relay => (
            "georelay",
            join_nodes(spec.pub_targets()),
            join_nodes(spec.sub_targets()),
        ),
        Via::Bare { .. } => ("baseline", "baseline".into(), "baseline".into()),
    };
    Ok(Summary {
        through: through.into(),
        app: spec.app.to_string(),
        pub_node,
        sub_node,
        profile: spec.profile.name().into(),
        rooms: spec.rooms,
        room_size: if spec.rooms > 0 { spec.room_size } else { 0 },
        publishers,
        subscribers: shared.subscribers.len(),
        unready_subscribers,
        channels: spec.channel_count(),
        rate_pps: schedule.packets() as f64 / spec.duration.as_secs_f64(),
        payload_bytes: schedule.max_size(),
        duration_s,
        planned: schedule.packets() * publishers as u64,
        sent: totals.sent,
        expected,
        received: totals.received,
        received_bytes: totals.received_bytes,
        lost,
        loss_ratio: ratio(lost, expected),
        duplicates: totals.duplicates,
        late: totals.late,
        malformed: totals.malformed,
        client_dropped,
        latency_us: latency(&totals.histogram),
        keyframes: (spec.profile == Profile::Video).then(|| {
            let lost = keyframe_expected.saturating_sub(totals.keyframe_received);
            BurstStats {
                sent: totals.keyframe_sent,
                expected: keyframe_expected,
                received: totals.keyframe_received,
                lost,
                loss_ratio: ratio(lost, keyframe_expected),
                latency_us: latency(&totals.keyframe_histogram),
            }
        }),
        throughput_pps: if duration_s > 0.0 {
            totals.received as f64 / duration_s
        } else {
            0.0
        },
        errors: tally.errors,
        failures: tally.failures,
        redirects: tally.redirects,
        drain_ms,
        idle: idle_stats,
        relay_nodes: probe.map(|(_, names)| names).unwrap_or_default(),
        relay_processes: relay.as_ref().map(|r| r.processes),
        relay_cpu_s: relay.as_ref().map(|r| r.cpu_s),
        relay_cpu_us_per_packet: per_packet,
        gbps_per_relay_core: gbps,
        relay_rss_bytes: relay.as_ref().map(|r| r.rss_bytes),
        relay_open_fds: relay.as_ref().and_then(|r| r.open_fds),
        relay_cost_error: cost_error,
        baseline: None,
        ratio_cpu_per_packet: None,
    })
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

async fn sample(probe: &CostProbe, error: &mut Option<String>) -> Option<cost::Samples> {
    match probe.sample().await {
        Ok(samples) => Some(samples),
        Err(e) => {
            error.get_or_insert(e);
            None
        }
    }
}

/// Connects one participant: subscribes if it subscribes, announces its
/// track if it publishes. Returns the client and its track key.
async fn join_participant(
    spec: &LoadSpec,
    via: &Via,
    channel: &str,
    p: &Participant,
) -> Result<(LoadClient, u64), ClientError> {
    let role = if p.publisher.is_some() {
        Role::Publish
    } else {
        Role::Subscribe
    };
    let flags = if p.publisher.is_some() {
        JOIN_PUBLISH
    } else {
        0
    } | if p.subscribes { JOIN_SUBSCRIBE } else { 0 };
    let client = connect(
        spec,
        via,
        channel,
        p.channel as u32,
        &p.user,
        role,
        flags,
        &p.target,
        None,
    )
    .await?;
    let LoadClient::Relay(relay) = &client else {
        return Ok((client, 0));
    };
    if p.subscribes {
        relay.subscribe().await?;
    }
    let track = match p.publisher {
        Some(i) => {
            let kind = match spec.profile {
                Profile::Audio => TrackKind::Audio,
                Profile::Data => TrackKind::Data,
                Profile::Raw | Profile::Video => TrackKind::Video,
            };
            let name = format!("loadgen-{i}");
            let announce = relay.announce(kind, false, &name);
            match tokio::time::timeout(spec.setup_timeout, announce).await {
                Ok(result) => result?,
                Err(_) => return Err(ClientError::Connect("no ANNOUNCE_OK in time".into())),
            }
        }
        None => 0,
    };
    Ok((client, track))
}

#[allow(clippy::too_many_arguments)]
async fn connect(
    spec: &LoadSpec,
    via: &Via,
    channel: &str,
    room: u32,
    user: &str,
    role: Role,
    flags: u8,
    target: &Target,
    endpoint: Option<&quinn::Endpoint>,
) -> Result<LoadClient, ClientError> {
    let attempt = async {
        match via {
            Via::Relay => {
                let claims = Claims {
                    app: spec.app.clone(),
                    channel: channel.to_string(),
                    user: user.to_string(),
                    role,
                    expires_at: SystemClock.now_unix_secs()
                        + spec.setup_timeout.as_secs()
                        + spec.duration.as_secs()
                        + 600,
                };
                let join = Join {
                    app: spec.app.to_string(),
                    channel: channel.to_string(),
                    token: crate::auth::mint(&claims, &spec.token_key),
                };
                let mut options = ClientOptions::new(Arc::clone(&spec.roots));
                options.bind = spec.bind;
                options.endpoint = endpoint.cloned();
                Client::connect(&options, std::slice::from_ref(target), &join)
                    .await
                    .map(LoadClient::Relay)
            }
            Via::Bare { addr, roots } => {
                BareClient::connect(*addr, Arc::clone(roots), spec.bind, endpoint, room, flags)
                    .await
                    .map(LoadClient::Bare)
            }
        }
    };
    match tokio::time::timeout(spec.setup_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Connect(format!(
            "{}: no answer within {:?}",
            target.node, spec.setup_timeout
        ))),
    }
}

async fn close_all(clients: impl Iterator<Item = LoadClient>) {
    futures_util::stream::iter(clients)
        .for_each_concurrent(CONNECT_CONCURRENCY * 4, LoadClient::close)
        .await;
}

/// Lets the process open as many sockets as its hard limit allows: every
/// client has its own UDP socket.
fn raise_fd_limit() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if limit.current < limit.maximum {
        // Best effort: without it, large runs fail to connect, and say so.
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

fn record_closed(
    code: Option<crate::error::ErrorCode>,
    errors: &mut BTreeMap<String, u64>,
    closed: &mut u64,
) {
    match code {
        Some(code) => *errors.entry(code.name().to_string()).or_default() += 1,
        None => *closed += 1,
    }
}

/// Which sequence numbers of one publisher a subscriber has seen.
struct Seen {
    bits: Vec<u64>,
}

impl Seen {
    fn new(packets: u64) -> Self {
        Self {
            bits: vec![0; packets.div_ceil(64) as usize],
        }
    }

    /// Marks `seq`; `None` when it is out of range, else whether it is new.
    fn insert(&mut self, seq: u64) -> Option<bool> {
        let word = self.bits.get_mut(usize::try_from(seq / 64).ok()?)?;
        let bit = 1u64 << (seq % 64);
        let new = *word & bit == 0;
        *word |= bit;
        Some(new)
    }
}

/// One client's task: publishes on schedule (if it publishes) and accounts
/// for what it receives (if it subscribes).
struct ClientTask {
    client: LoadClient,
    track: u64,
    publisher: Option<u32>,
    slot: Option<usize>,
    known: BTreeSet<u32>,
    packets_per_publisher: u64,
    schedule: Schedule,
    reliable: bool,
    send_timeout: Duration,
    template: Arc<Vec<u8>>,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    done: mpsc::UnboundedSender<()>,
}

impl ClientTask {
    async fn drive(mut self, counts: Counts) -> Report {
        let mut report = Report {
            client: self.client,
            counts,
            send_failures: 0,
            errors: BTreeMap::new(),
            closed: 0,
            finished_sending: None,
            unavailable: None,
        };
        let mut seen: BTreeMap<u32, Seen> = self
            .known
            .iter()
            .map(|p| (*p, Seen::new(self.packets_per_publisher)))
            .collect();
        let progress = self.slot.map(|s| Arc::clone(&self.shared.subscribers[s]));
        let mut tracks = BTreeSet::new();
        let mut payload = self.template.as_ref().clone();
        let mut interval: Option<(tokio::time::Interval, tokio::time::Instant)> = None;
        let mut sending = self.publisher.is_some();
        let mut on_time = true;
        let mut ended = false;
        loop {
            let phase = *self.phase.borrow_and_update();
            match phase {
                Phase::Stop => on_time = false,
                Phase::Send(start) if sending && interval.is_none() => {
                    let mut ticks = tokio::time::interval_at(start, self.schedule.period);
                    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
                    interval = Some((ticks, start));
                }
                _ => {}
            }
            if !on_time {
                if sending {
                    report.finished_sending = Some(crate::clock::monotonic_now());
                    let _ = self.done.send(());
                }
                // After the window: count what is already queued, then stop.
                while !ended {
                    match report.client.try_next_event() {
                        Some(Some(event)) => {
                            handle_event(
                                event,
                                false,
                                &mut report,
                                &mut seen,
                                &mut tracks,
                                progress.as_deref(),
                            );
                        }
                        Some(None) => ended = true,
                        None => break,
                    }
                }
                break;
            }
            if ended && !sending {
                // Nothing more can arrive or leave: wait for the stop.
                if self.phase.changed().await.is_err() {
                    on_time = false;
                }
                continue;
            }
            if !sending && progress.is_none() {
                break;
            }
            tokio::select! {
                biased;
                changed = self.phase.changed() => {
                    if changed.is_err() {
                        on_time = false;
                    }
                }
                tick = async {
                    match interval.as_mut() {
                        Some((ticks, _)) => ticks.tick().await,
                        None => std::future::pending().await,
                    }
                }, if sending && !ended => {
                    let start = interval.as_ref().map_or(tick, |(_, s)| *s);
                    let k = (tick.duration_since(start).as_nanos() / self.schedule.period.as_nanos()) as u64;
                    if k >= self.schedule.ticks {
                        sending = false;
                        report.finished_sending = Some(crate::clock::monotonic_now());
                        let _ = self.done.send(());
                        continue;
                    }
                    let burst = self.schedule.burst(k);
                    let index = self.publisher.unwrap_or(0);
                    for _ in 0..burst.packets {
                        let sent_us = now_us();
                        let timing = Timing { publisher: index, keyframe: burst.keyframe, seq: report.counts.sent, sent_us };
                        timing.write(&mut payload);
                        let packet = &payload[..burst.size];
                        let result = if self.reliable {
                            match tokio::time::timeout(self.send_timeout, report.client.send_message(self.track, packet)).await {
                                Ok(result) => result,
                                Err(_) => Err(ClientError::Closed("message send timed out".into())),
                            }
                        } else {
                            report.client.send_media(self.track, report.counts.sent, sent_us, packet)
                        };
                        match result {
                            Ok(()) => {
                                report.counts.sent += 1;
                                report.counts.keyframe_sent += u64::from(burst.keyframe);
                                self.shared.sent[index as usize].store(report.counts.sent, Ordering::Relaxed);
                                self.shared.keyframe_sent[index as usize].store(report.counts.keyframe_sent, Ordering::Relaxed);
                            }
                            Err(_) => report.send_failures += 1,
                        }
                    }
                }
                event = report.client.next_event(), if !ended => {
                    match event {
                        Some(event) => {
                            if handle_event(event, true, &mut report, &mut seen, &mut tracks, progress.as_deref()) {
                                ended = true;
                            }
                        }
                        None => {
                            report.closed += 1;
                            ended = true;
                        }
                    }
                    if ended {
                        if let Some(p) = &progress {
                            p.failed.store(true, Ordering::Relaxed);
                        }
                        if sending {
                            sending = false;
                            report.finished_sending = Some(crate::clock::monotonic_now());
                            let _ = self.done.send(());
                        }
                    }
                }
            }
        }
        if let Some(code) = report.unavailable {
            *report.errors.entry(code.to_string()).or_default() += 1;
        }
        report
    }
}

/// Accounts for one event; true when the session is over.
fn handle_event(
    event: Event,
    on_time: bool,
    report: &mut Report,
    seen: &mut BTreeMap<u32, Seen>,
    tracks: &mut BTreeSet<u64>,
    progress: Option<&Progress>,
) -> bool {
    let payload = match event {
        Event::Media { payload, .. } => payload,
        Event::Message { payload, .. } => payload,
        Event::TrackAdded(info) => {
            tracks.insert(info.track);
            if let Some(p) = progress {
                p.tracks_seen.store(tracks.len(), Ordering::Relaxed);
            }
            return false;
        }
        Event::State(state) => {
            // A subscription may be unavailable for a moment while the mesh
            // finds the publisher; only one still unavailable at the end
            // counts as an error.
            report.unavailable = (state.state == SubscriptionStatus::Unavailable).then(|| {
                crate::error::ErrorCode::from_wire(state.code)
                    .map_or("ROUTE_UNAVAILABLE", |c| c.name())
            });
            return false;
        }
        Event::Closed { code, .. } => {
            record_closed(code, &mut report.errors, &mut report.closed);
            return true;
        }
        _ => return false,
    };
    let Some(progress) = progress else {
        report.counts.malformed += 1;
        return false;
    };
    let now = now_us();
    let fresh =
        Timing::read(&payload).and_then(|t| Some((seen.get_mut(&t.publisher)?.insert(t.seq)?, t)));
    match fresh {
        None => report.counts.malformed += 1,
        Some((false, _)) => report.counts.duplicates += 1,
        Some((true, _)) if !on_time => report.counts.late += 1,
        Some((true, timing)) => {
            report.counts.received += 1;
            report.counts.received_bytes += payload.len() as u64;
            progress
                .received
                .store(report.counts.received, Ordering::Relaxed);
            let latency = now.saturating_sub(timing.sent_us).max(1);
            report.counts.histogram.saturating_record(latency);
            if timing.keyframe {
                report.counts.keyframe_received += 1;
                report.counts.keyframe_histogram.saturating_record(latency);
            }
            if let Some(interval) = &progress.interval {
                interval
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .saturating_record(latency);
            }
        }
    }
    false
}

fn latency(histogram: &Histogram<u64>) -> Latency {
    if histogram.is_empty() {
        return Latency::default();
    }
    Latency {
        p50: Some(histogram.value_at_quantile(0.5)),
        p99: Some(histogram.value_at_quantile(0.99)),
        p999: Some(histogram.value_at_quantile(0.999)),
        max: Some(histogram.max()),
        mean: Some(histogram.mean()),
        samples: histogram.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_detects_duplicates_and_out_of_range() {
        let mut seen = Seen::new(100);
        assert_eq!(seen.insert(5), Some(true));
        assert_eq!(seen.insert(5), Some(false));
        assert_eq!(seen.insert(99), Some(true));
        assert_eq!(seen.insert(128), None);
    }

    #[test]
    fn validate_rejects_out_of_bounds() {
        assert!(test_spec().validate().is_ok());
        for bad in [
            LoadSpec {
                channels: 0,
                ..test_spec()
            },
            LoadSpec {
                rate_pps: 0,
                ..test_spec()
            },
            LoadSpec {
                payload_size: 19,
                ..test_spec()
            },
            LoadSpec {
                payload_size: 65_536,
                ..test_spec()
            },
            LoadSpec {
                duration: Duration::ZERO,
                ..test_spec()
            },
            LoadSpec {
                rooms: 3,
                room_size: 1,
                ..test_spec()
            },
            LoadSpec {
                idle: MAX_CLIENTS,
                ..test_spec()
            },
        ] {
            assert!(matches!(bad.validate(), Err(LoadError::InvalidSpec(_))));
        }
    }

    #[test]
    fn rooms_hear_everyone_but_themselves_and_spread_over_entry_nodes() {
        let mut spec = LoadSpec {
            rooms: 2,
            room_size: 3,
            ..test_spec()
        };
        spec.more_pub_nodes = vec![Target {
            node: "m".into(),
            addr: "127.0.0.2:4433".parse().unwrap_or_else(|_| unreachable!()),
        }];
        let participants = spec.participants();
        assert_eq!(participants.len(), 6);
        assert!(
            participants
                .iter()
                .all(|p| p.subscribes && p.publisher.is_some())
        );
        assert_eq!(
            participants.iter().map(|p| p.channel).collect::<Vec<_>>(),
            vec![0, 0, 0, 1, 1, 1]
        );
        assert_eq!(
            participants
                .iter()
                .map(|p| p.target.node.as_str())
                .collect::<Vec<_>>(),
            vec!["n", "m", "n", "m", "n", "m"]
        );
        let plain = LoadSpec {
            publishers: 2,
            subscribers: 3,
            channels: 2,
            ..test_spec()
        }
        .participants();
        assert_eq!(plain.iter().filter(|p| p.publisher.is_none()).count(), 3);
        assert_eq!(plain[3].publisher, Some(0));
        assert_eq!(plain[4].channel, 1);
    }

    fn test_spec() -> LoadSpec {
        LoadSpec::new(
            AppId::new("app"),
            TokenKey::new(b"secret"),
            Arc::new(RootCertStore::empty()),
            Target {
                node: "n".into(),
                addr: "127.0.0.1:4433".parse().unwrap_or_else(|_| unreachable!()),
            },
        )
    }
}
