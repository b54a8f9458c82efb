//! Instructions the metadata side of traffic records adds per delivered
//! packet, counted by callgrind (see `benches/traffic_meter.sh`).
//!
//! The shape is the one the issue asks about: 1,000 packets per second from
//! one publisher, delivered to 10 subscribers on the node. Per published
//! packet the relay counts it once in (`app, in, clients`) and once per
//! subscriber out (`app, out, clients`): 11 [`TrafficCounter::add`] calls
//! per 10 deliveries, through handles it keeps. Every 1,000 packets (one
//! second at that rate; the default interval is 60 s, so this overstates
//! the per-interval cost 60 times) it snapshots the meter and records an
//! interval into a recorder channel (drained at the end).
//!
//!     benches/traffic_meter.sh
//!
//! Modes: `meter PACKETS` does the above; `baseline PACKETS` runs the same
//! loop without counting or recording. Without arguments (as `cargo bench`
//! and `cargo test --benches` run it) it runs both briefly and checks the
//! recorded totals.

use std::hint::black_box;
use std::path::Path;

use georelay::config::Fleet;
use georelay::ids::{AppId, NodeId};
use georelay::metadata::{
    Direction, EventKind, Recorder, TrafficKey, TrafficMeter, TrafficPeer, TrafficRecorder,
};

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
"#;
const SUBSCRIBERS: u64 = 10;
const PACKET_BYTES: usize = 1200;
const PACKETS_PER_INTERVAL: u64 = 1000;

/// Runs `packets` published packets; returns the recorded packet totals
/// (in, out) or zeros for the baseline.
fn run(meter_on: bool, packets: u64) -> (u64, u64) {
    let fleet = Fleet::parse(CONFIG, Path::new("bench.toml")).expect("bench config");
    let (recorder, mut events) = Recorder::channel(1 << 20);
    let meter = TrafficMeter::default();
    let key = |direction| TrafficKey {
        app: AppId::from("bench"),
        direction,
        peer: TrafficPeer::Clients,
    };
    let counter_in = meter.counter(key(Direction::In));
    let counter_out = meter.counter(key(Direction::Out));
    let mut traffic =
        TrafficRecorder::start(recorder, &fleet, &NodeId::from("bench-1"), 0).expect("node");
    let mut now_ms = 0;
    for packet in 0..packets {
        let bytes = black_box(PACKET_BYTES);
        if meter_on {
            counter_in.add(bytes);
        }
        for _ in 0..SUBSCRIBERS {
            if meter_on {
                counter_out.add(black_box(bytes));
            }
            black_box(bytes);
        }
        if meter_on && (packet + 1) % PACKETS_PER_INTERVAL == 0 {
            now_ms += 1000;
            traffic.record_interval(now_ms, &meter.snapshot());
        }
    }
    let (mut packets_in, mut packets_out) = (0, 0);
    while let Ok(event) = events.try_recv() {
        if let EventKind::Traffic {
            direction, packets, ..
        } = event.kind
        {
            match direction {
                Direction::In => packets_in += packets,
                Direction::Out => packets_out += packets,
            }
        }
    }
    (packets_in, packets_out)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode, packets] if mode == "meter" || mode == "baseline" => {
            let packets: u64 = packets.parse().expect("packet count");
            black_box(run(mode == "meter", packets));
        }
        _ => {
            let packets = 10 * PACKETS_PER_INTERVAL;
            assert_eq!(run(true, packets), (packets, SUBSCRIBERS * packets));
            assert_eq!(run(false, packets), (0, 0));
            println!("traffic_meter: {packets} packets counted and recorded");
        }
    }
}
