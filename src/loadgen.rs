//! Synthetic SDK clients against a running fleet, with exact accounting: the
//! library behind `georelay loadgen`, reused by tests and benches.
//!
//! [`run`] connects subscribers and publishers through the [`crate::client`]
//! SDK (which follows redirects like any SDK), paces media datagrams, and
//! returns a [`Summary`] whose counts are exact.
//!
//! # Timing header
//! Every media payload starts with [`TIMING_HEADER_LEN`] bytes, big-endian:
//!
//! | bytes  | field                                                  |
//! |--------|--------------------------------------------------------|
//! | 0..4   | publisher index (`u32`, 0-based within the run)        |
//! | 4..12  | sequence number of that publisher (`u64`, from 0)      |
//! | 12..20 | send time, µs on the loadgen process clock (`u64`)     |
//!
//! The rest of the payload repeats `payload_text` up to `payload_size`
//! bytes. The process clock ([`now_us`]) is one monotonic clock shared by
//! every publisher and subscriber of the process, so one-way latency is
//! receive time minus send time with no clock skew.
//!
//! # Accounting
//! - Every subscriber subscribes, and sees a `TRACK_ADDED` for every
//!   publisher of its channel, before any packet is sent (subscribers that
//!   fail or time out are reported in `unready_subscribers`, and their
//!   packets count as lost: they were subscribed).
//! - `sent` counts datagrams the SDK accepted. `expected` is, for each
//!   subscriber, what the publishers of its channel sent; summed.
//! - `received` counts distinct `(publisher, sequence)` pairs per
//!   subscriber that arrived before the end of the drain window;
//!   repeats count as `duplicates`, packets after it as `late`, and neither
//!   counts as received. `lost = expected - received`.
//! - After the publishers stop, the drain window lasts until every
//!   subscriber has all it expects, or `drain` elapses.
//! - A refused client does not abort the run: its stable code is counted in
//!   `errors`; failures without a code (timeouts, lost connections) are
//!   counted in `failures`.
//!
//! # Pacing
//! Each publisher sends `rate_pps × duration` packets on a
//! `tokio::time::interval` with period `1/rate` (at least 1 ms, tokio's
//! timer resolution; faster rates send a few packets per tick, spread
//! evenly). Missed ticks are **skipped** ([`MissedTickBehavior::Skip`]):
//! `Burst` would catch up by sending a backlog back to back, which no
//! real-time source does and which would measure the burst, not the rate;
//! `Delay` would shift every later tick and stretch the run. With `Skip` the
//! schedule stays on its grid, a stalled publisher simply sends less, and
//! the shortfall is visible as `sent < planned`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use rustls::RootCertStore;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::auth::{Claims, Role, TokenKey};
use crate::client::{Client, ClientError, ClientOptions, Event, Join, Target};
use crate::clock::{Clock, SystemClock};
use crate::config::Fleet;
use crate::ids::{AppId, NodeId};
use crate::relay::policy::Policy;
use crate::wire::{SubscriptionStatus, TrackKind};

/// Length of the loadgen's own header at the start of every payload.
pub const TIMING_HEADER_LEN: usize = 20;

/// No QUIC datagram can carry more than a UDP datagram.
const MAX_PAYLOAD: usize = 65_535;

/// Latencies above this are recorded as this value (60 s).
const MAX_LATENCY_US: u64 = 60_000_000;

/// How long the drain poll sleeps between checks.
const POLL: Duration = Duration::from_millis(5);

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
    /// Where publishers connect.
    pub publish_to: Target,
    /// Where subscribers connect.
    pub subscribe_to: Target,
    /// Local address of every client socket.
    pub bind: IpAddr,
    /// Channels the clients are spread over (round robin).
    pub channels: usize,
    /// Publishers, one track each.
    pub publishers: usize,
    /// Subscribers, one channel each.
    pub subscribers: usize,
    /// Packets per second, per publisher.
    pub rate_pps: u32,
    /// Media payload bytes per packet, timing header included.
    pub payload_size: usize,
    /// How long publishers send.
    pub duration: Duration,
    /// Repeated after the timing header to fill the payload.
    pub payload_text: String,
    /// The longest wait for in-flight packets after the publishers stop.
    pub drain: Duration,
    /// The longest wait for connecting and for track announcements.
    pub setup_timeout: Duration,
}

impl LoadSpec {
    /// One publisher and one subscriber on `target`, 50 pps of 200 bytes
    /// for 5 s, bound to 127.0.0.1, 500 ms drain, 10 s setup limit.
    pub fn new(app: AppId, token_key: TokenKey, roots: Arc<RootCertStore>, target: Target) -> Self {
        Self {
            app,
            token_key,
            roots,
            publish_to: target.clone(),
            subscribe_to: target,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            channels: 1,
            publishers: 1,
            subscribers: 1,
            rate_pps: 50,
            payload_size: 200,
            duration: Duration::from_secs(5),
            payload_text: "georelay-loadgen ".into(),
            drain: Duration::from_millis(500),
            setup_timeout: Duration::from_secs(10),
        }
    }

    /// Checks the bounds [`run`] relies on.
    pub fn validate(&self) -> Result<(), LoadError> {
        let invalid = |msg: &str| Err(LoadError::InvalidSpec(msg.to_string()));
        if self.channels == 0 {
            return invalid("--channels must be at least 1");
        }
        if self.publishers > 10_000 || self.subscribers > 10_000 {
            return invalid("at most 10000 publishers and 10000 subscribers");
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

    fn pacing(&self) -> Pacing {
        let period = (Duration::from_secs(1) / self.rate_pps).max(Duration::from_millis(1));
        let ticks = self.duration.as_nanos().div_ceil(period.as_nanos()).max(1) as u64;
        let packets = (self.duration.as_secs_f64() * f64::from(self.rate_pps)).round() as u64;
        Pacing {
            period,
            ticks,
            packets,
        }
    }

    fn channel_of(&self, index: usize) -> usize {
        index % self.channels
    }
}

/// The target of a configured node.
pub fn node_target(fleet: &Fleet, node: &str) -> Option<Target> {
    fleet.node(node).map(|n| Target {
        node: n.id.to_string(),
        addr: n.listen,
    })
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

/// The result of a run; see the module docs for what each count means.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The app.
    pub app: String,
    /// Where publishers were sent first.
    pub pub_node: String,
    /// Where subscribers were sent first.
    pub sub_node: String,
    /// Publishers that connected and announced their track.
    pub publishers: usize,
    /// Subscribers that connected and subscribed.
    pub subscribers: usize,
    /// Subscribers that did not see every track of their channel in time.
    pub unready_subscribers: usize,
    /// Channels used.
    pub channels: usize,
    /// Packets per second per publisher, as asked.
    pub rate_pps: u32,
    /// Payload bytes per packet, timing header included.
    pub payload_bytes: usize,
    /// The send phase as measured, in seconds.
    pub duration_s: f64,
    /// What the connected publishers would send at the asked rate.
    pub planned: u64,
    /// Datagrams the publishers' SDK accepted.
    pub sent: u64,
    /// Sum over subscribers of what their channel's publishers sent.
    pub expected: u64,
    /// Distinct packets received in time, summed over subscribers.
    pub received: u64,
    /// `expected - received`.
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
}

#[derive(Clone, Copy, Debug)]
struct Pacing {
    period: Duration,
    ticks: u64,
    packets: u64,
}

impl Pacing {
    /// Packets due at tick `k`: spreads `packets` evenly over `ticks`.
    fn quota(&self, k: u64) -> u64 {
        let total = u128::from(self.packets);
        let ticks = u128::from(self.ticks);
        let k = u128::from(k);
        (total * (k + 1) / ticks - total * k / ticks) as u64
    }
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

/// What a subscriber task shares with the coordinator while running.
#[derive(Default)]
struct Progress {
    tracks_seen: AtomicUsize,
    received: AtomicU64,
    failed: AtomicBool,
}

struct SubscriberReport {
    client: Client,
    received: u64,
    duplicates: u64,
    late: u64,
    malformed: u64,
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    closed: u64,
}

struct PublisherReport {
    client: Client,
    sent: u64,
    send_failures: u64,
    errors: BTreeMap<String, u64>,
    closed: u64,
    finished_at: Instant,
}

/// Runs the load described by `spec` and accounts for every packet.
pub async fn run(spec: &LoadSpec) -> Result<Summary, LoadError> {
    spec.validate()?;
    now_us();
    let run = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    let channel_name = |c: usize| format!("loadgen-{}-{run}-{c}", std::process::id());
    let pacing = spec.pacing();
    let mut tally = Tally::default();

    // Subscribers first: they subscribe before any track exists.
    let subscriber_joins = (0..spec.subscribers).map(|j| {
        let channel = channel_name(spec.channel_of(j));
        async move { connect(spec, &channel, &format!("loadgen-sub-{j}"), Role::Subscribe).await }
    });
    let mut subscribers = Vec::new();
    for (j, result) in futures_util::future::join_all(subscriber_joins)
        .await
        .into_iter()
        .enumerate()
    {
        match result {
            Ok(client) => match client.subscribe().await {
                Ok(()) => subscribers.push((j, client)),
                Err(err) => tally.refusal(&err),
            },
            Err(err) => tally.refusal(&err),
        }
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut subscriber_tasks = Vec::new();
    for (j, client) in subscribers {
        tally.redirects += client.redirects() as u64;
        let progress = Arc::new(Progress::default());
        let histogram = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .map_err(|e| LoadError::Histogram(e.to_string()))?;
        let publishers: Vec<u32> = (0..spec.publishers)
            .filter(|i| spec.channel_of(*i) == spec.channel_of(j))
            .map(|i| i as u32)
            .collect();
        let task = tokio::spawn(subscribe_loop(
            client,
            publishers,
            pacing.packets,
            histogram,
            Arc::clone(&progress),
            stop_rx.clone(),
        ));
        subscriber_tasks.push((j, progress, task));
    }

    let publisher_joins = (0..spec.publishers).map(|i| {
        let channel = channel_name(spec.channel_of(i));
        async move {
            let client =
                connect(spec, &channel, &format!("loadgen-pub-{i}"), Role::Publish).await?;
            let track = client
                .announce(TrackKind::Video, false, &format!("loadgen-{i}"))
                .await?;
            Ok::<_, ClientError>((client, track))
        }
    });
    let mut publishers = Vec::new();
    let mut too_large = None;
    for (i, result) in futures_util::future::join_all(publisher_joins)
        .await
        .into_iter()
        .enumerate()
    {
        match result {
            Ok((client, track)) => {
                tally.redirects += client.redirects() as u64;
                if spec.payload_size > client.max_media_payload() {
                    too_large = Some(client.max_media_payload());
                }
                publishers.push((i, client, track));
            }
            Err(err) => tally.refusal(&err),
        }
    }
    let mut tracks_per_channel = vec![0usize; spec.channels];
    for (i, _, _) in &publishers {
        tracks_per_channel[spec.channel_of(*i)] += 1;
    }

    if let Some(max) = too_large {
        let _ = stop_tx.send(true);
        for (_, client, _) in publishers {
            client.close().await;
        }
        for (_, _, task) in subscriber_tasks {
            if let Ok(report) = task.await {
                report.client.close().await;
            }
        }
        return Err(LoadError::PayloadTooLarge {
            size: spec.payload_size,
            max,
        });
    }

    // Every subscriber sees every track of its channel before sending starts.
    let deadline = crate::clock::monotonic_now() + spec.setup_timeout;
    let ready = |tasks: &[(usize, Arc<Progress>, _)]| {
        tasks.iter().all(|(j, p, _)| {
            p.failed.load(Ordering::Relaxed)
                || p.tracks_seen.load(Ordering::Relaxed) >= tracks_per_channel[spec.channel_of(*j)]
        })
    };
    while !ready(&subscriber_tasks) && crate::clock::monotonic_now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let unready_subscribers = subscriber_tasks
        .iter()
        .filter(|(j, p, _)| {
            p.tracks_seen.load(Ordering::Relaxed) < tracks_per_channel[spec.channel_of(*j)]
        })
        .count();

    // Send.
    let start = crate::clock::timer_now() + Duration::from_millis(10);
    let payload = Arc::new(payload_template(spec.payload_size, &spec.payload_text));
    let publisher_tasks: Vec<_> = publishers
        .into_iter()
        .map(|(i, client, track)| {
            let task = tokio::spawn(publish_loop(
                client,
                track,
                i as u32,
                pacing,
                start,
                Arc::clone(&payload),
            ));
            (i, task)
        })
        .collect();
    let mut sent_per_channel = vec![0u64; spec.channels];
    let mut publisher_clients = Vec::new();
    let mut sent = 0;
    let mut last_send = start.into_std();
    let connected_publishers = publisher_tasks.len();
    for (i, task) in publisher_tasks {
        match task.await {
            Ok(report) => {
                sent_per_channel[spec.channel_of(i)] += report.sent;
                sent += report.sent;
                tally.failure("send", report.send_failures);
                tally.failure("closed", report.closed);
                tally.merge_codes(&report.errors);
                last_send = last_send.max(report.finished_at);
                publisher_clients.push(report.client);
            }
            Err(_) => tally.failure("task", 1),
        }
    }
    let duration = last_send.saturating_duration_since(start.into_std());

    // Drain: until every subscriber has what it expects, or the window ends.
    let drain_start = crate::clock::monotonic_now();
    let drain_end = drain_start + spec.drain;
    let drained = |tasks: &[(usize, Arc<Progress>, _)]| {
        tasks.iter().all(|(j, p, _)| {
            p.received.load(Ordering::Relaxed) >= sent_per_channel[spec.channel_of(*j)]
        })
    };
    while !drained(&subscriber_tasks) && crate::clock::monotonic_now() < drain_end {
        tokio::time::sleep(POLL).await;
    }
    let drain_ms = drain_start.elapsed().as_millis() as u64;
    let _ = stop_tx.send(true);

    let mut expected = 0;
    let mut received = 0;
    let mut duplicates = 0;
    let mut late = 0;
    let mut malformed = 0;
    let mut client_dropped = 0;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| LoadError::Histogram(e.to_string()))?;
    let subscribers = subscriber_tasks.len();
    let mut clients = publisher_clients;
    for (j, _, task) in subscriber_tasks {
        expected += sent_per_channel[spec.channel_of(j)];
        match task.await {
            Ok(report) => {
                received += report.received;
                duplicates += report.duplicates;
                late += report.late;
                malformed += report.malformed;
                client_dropped += report.client.dropped_events();
                tally.failure("closed", report.closed);
                tally.merge_codes(&report.errors);
                histogram
                    .add(&report.histogram)
                    .map_err(|e| LoadError::Histogram(e.to_string()))?;
                clients.push(report.client);
            }
            Err(_) => tally.failure("task", 1),
        }
    }
    futures_util::future::join_all(clients.into_iter().map(Client::close)).await;

    let lost = expected.saturating_sub(received);
    let duration_s = duration.as_secs_f64();
    Ok(Summary {
        app: spec.app.to_string(),
        pub_node: spec.publish_to.node.clone(),
        sub_node: spec.subscribe_to.node.clone(),
        publishers: connected_publishers,
        subscribers,
        unready_subscribers,
        channels: spec.channels,
        rate_pps: spec.rate_pps,
        payload_bytes: spec.payload_size,
        duration_s,
        planned: pacing.packets * connected_publishers as u64,
        sent,
        expected,
        received,
        lost,
        loss_ratio: if expected == 0 {
            0.0
        } else {
            lost as f64 / expected as f64
        },
        duplicates,
        late,
        malformed,
        client_dropped,
        latency_us: latency(&histogram),
        throughput_pps: if duration_s > 0.0 {
            received as f64 / duration_s
        } else {
            0.0
        },
        errors: tally.errors,
        failures: tally.failures,
        redirects: tally.redirects,
        drain_ms,
    })
}

async fn connect(
    spec: &LoadSpec,
    channel: &str,
    user: &str,
    role: Role,
) -> Result<Client, ClientError> {
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
    let target = match role {
        Role::Publish => &spec.publish_to,
        Role::Subscribe => &spec.subscribe_to,
    };
    match tokio::time::timeout(
        spec.setup_timeout,
        Client::connect(&options, std::slice::from_ref(target), &join),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(ClientError::Connect(format!(
            "{}: no answer within {:?}",
            target.node, spec.setup_timeout
        ))),
    }
}

fn payload_template(size: usize, text: &str) -> Vec<u8> {
    let mut payload = vec![0u8; TIMING_HEADER_LEN];
    let fill = if text.is_empty() { "\0" } else { text };
    payload.extend(
        fill.bytes()
            .cycle()
            .take(size.saturating_sub(TIMING_HEADER_LEN)),
    );
    payload
}

fn write_timing_header(payload: &mut [u8], publisher: u32, seq: u64, sent_us: u64) {
    payload[0..4].copy_from_slice(&publisher.to_be_bytes());
    payload[4..12].copy_from_slice(&seq.to_be_bytes());
    payload[12..20].copy_from_slice(&sent_us.to_be_bytes());
}

/// `(publisher, seq, sent_us)` of a payload, if it has a timing header.
fn read_timing_header(payload: &[u8]) -> Option<(u32, u64, u64)> {
    let publisher = u32::from_be_bytes(payload.get(0..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
    let sent_us = u64::from_be_bytes(payload.get(12..20)?.try_into().ok()?);
    Some((publisher, seq, sent_us))
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

async fn publish_loop(
    mut client: Client,
    track: u64,
    index: u32,
    pacing: Pacing,
    start: tokio::time::Instant,
    template: Arc<Vec<u8>>,
) -> PublisherReport {
    let mut payload = template.as_ref().clone();
    let mut interval = tokio::time::interval_at(start, pacing.period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut report_errors = BTreeMap::new();
    let mut closed = 0;
    let mut sent = 0u64;
    let mut send_failures = 0u64;
    loop {
        tokio::select! {
            tick = interval.tick() => {
                let k = (tick.duration_since(start).as_nanos() / pacing.period.as_nanos()) as u64;
                if k >= pacing.ticks {
                    break;
                }
                for _ in 0..pacing.quota(k) {
                    let sent_us = now_us();
                    write_timing_header(&mut payload, index, sent, sent_us);
                    match client.send_media(track, sent, sent_us, &payload) {
                        Ok(()) => sent += 1,
                        Err(_) => send_failures += 1,
                    }
                }
            }
            event = client.events().next() => match event {
                Some(Event::Closed { code, .. }) => {
                    record_closed(code, &mut report_errors, &mut closed);
                    break;
                }
                None => {
                    closed += 1;
                    break;
                }
                Some(_) => {}
            }
        }
    }
    PublisherReport {
        client,
        sent,
        send_failures,
        errors: report_errors,
        closed,
        finished_at: crate::clock::monotonic_now(),
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

async fn subscribe_loop(
    mut client: Client,
    publishers: Vec<u32>,
    packets_per_publisher: u64,
    mut histogram: Histogram<u64>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> SubscriberReport {
    let mut seen: HashMap<u32, Seen> = publishers
        .iter()
        .map(|p| (*p, Seen::new(packets_per_publisher)))
        .collect();
    let mut tracks = std::collections::HashSet::new();
    let mut errors = BTreeMap::new();
    let mut closed = 0;
    let (mut received, mut duplicates, mut late, mut malformed) = (0u64, 0u64, 0u64, 0u64);
    let mut on_time = true;
    loop {
        let event = if on_time {
            tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => {
                    on_time = false;
                    continue;
                }
                event = client.events().next() => event,
            }
        } else {
            // After the window: count what is already queued, then stop.
            match client.events().next().now_or_never() {
                Some(event) => event,
                None => break,
            }
        };
        match event {
            Some(Event::Media { payload, .. }) => {
                let now = now_us();
                let fresh = read_timing_header(&payload).and_then(|(publisher, seq, sent_us)| {
                    Some((seen.get_mut(&publisher)?.insert(seq)?, sent_us))
                });
                match fresh {
                    None => malformed += 1,
                    Some((false, _)) => duplicates += 1,
                    Some((true, _)) if !on_time => late += 1,
                    Some((true, sent_us)) => {
                        received += 1;
                        progress.received.store(received, Ordering::Relaxed);
                        histogram.saturating_record(now.saturating_sub(sent_us).max(1));
                    }
                }
            }
            Some(Event::TrackAdded(info)) => {
                tracks.insert(info.track);
                progress.tracks_seen.store(tracks.len(), Ordering::Relaxed);
            }
            Some(Event::State(state)) if state.state == SubscriptionStatus::Unavailable => {
                let name = crate::error::ErrorCode::from_wire(state.code)
                    .map_or("ROUTE_UNAVAILABLE", |c| c.name());
                *errors.entry(name.to_string()).or_default() += 1;
                progress.failed.store(true, Ordering::Relaxed);
            }
            Some(Event::Closed { code, .. }) => {
                record_closed(code, &mut errors, &mut closed);
                progress.failed.store(true, Ordering::Relaxed);
                if on_time {
                    // Nothing more can arrive; wait for the stop to report.
                    let _ = stop.wait_for(|stopped| *stopped).await;
                }
                break;
            }
            None => {
                closed += 1;
                progress.failed.store(true, Ordering::Relaxed);
                if on_time {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                }
                break;
            }
            Some(_) => {}
        }
    }
    SubscriberReport {
        client,
        received,
        duplicates,
        late,
        malformed,
        histogram,
        errors,
        closed,
    }
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
    fn pacing_spreads_exactly_the_planned_packets() {
        for (rate, secs) in [(200u32, 5u64), (300, 5), (20_000, 3), (7, 2), (1000, 1)] {
            let spec = LoadSpec {
                rate_pps: rate,
                duration: Duration::from_secs(secs),
                ..test_spec()
            };
            let pacing = spec.pacing();
            let total: u64 = (0..pacing.ticks).map(|k| pacing.quota(k)).sum();
            assert_eq!(total, u64::from(rate) * secs, "rate {rate}");
            assert!(pacing.period >= Duration::from_millis(1));
            let max = (0..pacing.ticks)
                .map(|k| pacing.quota(k))
                .max()
                .unwrap_or(0);
            assert!(
                max <= u64::from(rate).div_ceil(1000).max(1),
                "rate {rate}: bursts of {max}"
            );
        }
    }

    #[test]
    fn at_200_pps_one_packet_every_5_ms() {
        let pacing = LoadSpec {
            rate_pps: 200,
            ..test_spec()
        }
        .pacing();
        assert_eq!(pacing.period, Duration::from_millis(5));
        assert!((0..pacing.ticks).all(|k| pacing.quota(k) == 1));
    }

    #[test]
    fn timing_header_round_trips_and_payload_is_filled() {
        let mut payload = payload_template(40, "ab");
        assert_eq!(payload.len(), 40);
        assert_eq!(&payload[20..24], b"abab");
        write_timing_header(&mut payload, 7, 1234, 99_000);
        assert_eq!(read_timing_header(&payload), Some((7, 1234, 99_000)));
        assert_eq!(read_timing_header(&payload[..19]), None);
    }

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
        ] {
            assert!(matches!(bad.validate(), Err(LoadError::InvalidSpec(_))));
        }
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
