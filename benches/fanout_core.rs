//! Instructions per delivered packet of the relay's fan-out core, counted
//! by callgrind so the figure does not move with machine noise.
//!
//!     cargo bench --bench fanout_core --no-run
//!     benches/callgrind.sh
//!
//! `hub` sends datagrams through the real path of a publisher's packet at a
//! node (`Hub::client_datagram`: track lookup, ownership check, per-app
//! counters, a `Bytes` clone onto each subscriber's bounded mutex queue)
//! and drains each queue as a simulated network does (`try_pop`).
//! `direct` is the same path with direct outlets (what client sessions and
//! mesh links use):
//! the clone goes straight into each subscriber connection's send buffer,
//! here a mutex-guarded `VecDeque` as in quinn, with no queue or writer of
//! the relay's own. `direct-records` is `direct` with traffic records on
//! (an enabled metadata recorder: each packet also counts into its flow's
//! traffic counter, and an interval is recorded every 1,000 packets, one
//! second at 1,000 pps; `benches/traffic_meter.sh` compares the two).
//! `baseline` does the least any fan-out must: clone the
//! `Bytes` into each subscriber's `VecDeque` and pop it. Both run the same packet count and
//! fan-out in one process; the script divides the two instruction counts.
//! Run without arguments (as `cargo bench` and `cargo test --benches` do),
//! it runs both briefly and checks that every packet was delivered.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use georelay::clock::SystemClock;
use georelay::config::Fleet;
use georelay::ids::{AppId, NodeId};
use georelay::metadata::Recorder;
use georelay::relay::core::SessionEntry;
use georelay::relay::fanout::{DatagramQueue, DatagramSink, MessageQueue, Offer, Queued};
use georelay::relay::hub::Hub;
use georelay::relay::policy::Policy;
use georelay::relay::routes::Receiver as Queues;
use georelay::wire::stream::Outbound;
use georelay::wire::{Announce, MediaHeader, TrackKind};
use tokio::sync::mpsc::Receiver;

const CONFIG: &str = r#"
[regions.eu]
countries = ["DE"]
[nodes.bench-1]
region = "eu"
listen = "127.0.0.1:1"
admin = "127.0.0.1:2"
[apps.bench]
secret = "bench"
allow_regions = ["eu"]
[metadata]
enabled = false
"#;

/// A session's control handle without a connection behind it: frames go on
/// the bounded queue a control writer would drain.
#[derive(Debug)]
struct Unconnected(tokio::sync::mpsc::Sender<Outbound>);

impl georelay::relay::core::Control for Unconnected {
    fn send(&self, out: Outbound) -> bool {
        self.0.try_send(out).is_ok()
    }

    fn abort(&self, _code: georelay::error::ErrorCode, _reason: &str) {}

    fn connection_id(&self) -> usize {
        0
    }

    fn rtt(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// The receiving ends a session's writers would hold; kept alive for the run.
type Writers = (Receiver<Outbound>, Receiver<Queued>);

/// A connection's datagram send buffer as the relay sees it: quinn pushes
/// the datagram onto a `VecDeque` under its connection lock.
#[derive(Clone, Debug, Default)]
struct SendBuffer(Arc<std::sync::Mutex<VecDeque<Bytes>>>);

impl DatagramSink for SendBuffer {
    fn offer(&self, datagram: Bytes) -> Offer {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(datagram);
        Offer::Sent
    }
}

fn session(
    hub: &Hub,
    publish: bool,
    direct: Option<SendBuffer>,
) -> (u64, Arc<DatagramQueue>, Writers) {
    let (control, control_rx) = tokio::sync::mpsc::channel(1024);
    let queue = Arc::new(match direct {
        Some(buffer) => DatagramQueue::direct(Box::new(buffer), Arc::clone(&hub.drops)),
        None => DatagramQueue::new(1024, Arc::clone(&hub.drops)),
    });
    let (messages, messages_rx) = MessageQueue::new(16, Arc::clone(&hub.drops));
    let id = hub
        .add_session(
            SessionEntry {
                app: AppId::new("bench"),
                channel: "room".into(),
                user: if publish { "pub".into() } else { "sub".into() },
                can_publish: publish,
                client_region: None,
                client_country: None,
                control: Arc::new(Unconnected(control)),
                receiver: Queues {
                    datagrams: Arc::clone(&queue),
                    messages,
                },
            },
            usize::MAX,
        )
        .expect("session");
    (id, queue, (control_rx, messages_rx))
}

/// Runs `packets` through the hub to `fanout` subscribers, through queued
/// outlets and their writers or through `direct` ones, with traffic
/// `records` or without; returns how many were delivered.
fn hub_run(packets: u64, fanout: usize, direct: bool, records: bool) -> u64 {
    let fleet = Fleet::parse(CONFIG, Path::new("bench.toml")).expect("bench config");
    let policy = Arc::new(Policy::from_fleet(fleet).expect("policy"));
    let (recorder, _events) = if records {
        let (recorder, events) = Recorder::channel(1 << 20);
        (recorder, Some(events))
    } else {
        (Recorder::disabled(), None)
    };
    let hub = Hub::new(
        NodeId::new("bench-1"),
        policy,
        Arc::new(SystemClock),
        recorder,
    );
    assert_eq!(hub.traffic_interval().is_some(), records);
    let mut writers = Vec::new();
    let mut queues = Vec::new();
    let mut buffers = Vec::new();
    for _ in 0..fanout {
        let buffer = direct.then(SendBuffer::default);
        let (id, queue, held) = session(&hub, false, buffer.clone());
        hub.subscribe(id).expect("subscribe");
        queues.push(queue);
        buffers.extend(buffer);
        writers.push(held);
    }
    let (publisher, _, held) = session(&hub, true, None);
    writers.push(held);
    let announce = Announce {
        track_id: 1,
        kind: TrackKind::Video,
        e2ee: true,
        name: "cam".into(),
    };
    let track = hub.announce(publisher, &announce, 8).expect("announce");
    let datagram = datagram(track);
    let mut delivered = 0;
    for sent in 1..=packets {
        hub.routes()
            .client_datagram(publisher, track, datagram.clone());
        if records && sent % 1000 == 0 {
            hub.record_traffic_interval();
        }
        for queue in queues.iter().filter(|q| !q.is_direct()) {
            if queue.try_pop().is_some() {
                delivered += 1;
            }
        }
        for buffer in &buffers {
            let mut held = buffer.0.lock().unwrap_or_else(|e| e.into_inner());
            if held.pop_front().is_some() {
                delivered += 1;
            }
        }
    }
    delivered
}

/// The least work of any fan-out: a clone per subscriber, pushed and popped.
fn baseline_run(packets: u64, fanout: usize) -> u64 {
    let datagram = datagram(1);
    let mut queues: Vec<VecDeque<Bytes>> =
        (0..fanout).map(|_| VecDeque::with_capacity(1024)).collect();
    let mut delivered = 0;
    for _ in 0..packets {
        for queue in &mut queues {
            queue.push_back(std::hint::black_box(datagram.clone()));
        }
        for queue in &mut queues {
            if queue.pop_front().is_some() {
                delivered += 1;
            }
        }
    }
    delivered
}

fn datagram(track: u64) -> Bytes {
    let mut buf = bytes::BytesMut::new();
    MediaHeader {
        track,
        seq: 1,
        timestamp_us: 1,
    }
    .encode(&mut buf);
    buf.extend_from_slice(&[0u8; 1_100]);
    buf.freeze()
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let mode = args.next();
    let packets: u64 = args.next().and_then(|p| p.parse().ok()).unwrap_or(1_000);
    const FANOUT: usize = 10;
    let run = |mode: &str| match mode {
        "hub" => hub_run(packets, FANOUT, false, false),
        "direct" => hub_run(packets, FANOUT, true, false),
        "direct-records" => hub_run(packets, FANOUT, true, true),
        "baseline" => baseline_run(packets, FANOUT),
        other => panic!("unknown mode {other}: use hub, direct, direct-records or baseline"),
    };
    match mode.as_deref() {
        Some(mode) => println!(
            "{mode}: delivered {} of {}",
            run(mode),
            packets * FANOUT as u64
        ),
        None => {
            for mode in ["baseline", "hub", "direct", "direct-records"] {
                let delivered = run(mode);
                assert_eq!(
                    delivered,
                    packets * FANOUT as u64,
                    "{mode} delivers every packet"
                );
                println!("{mode}: delivered {delivered}");
            }
        }
    }
}
