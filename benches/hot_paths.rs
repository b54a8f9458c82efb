//! The hot paths outside the relay's I/O, each a scenario measured two ways:
//! wall time with criterion (`cargo bench --bench hot_paths`), and
//! instructions under callgrind (`benches/hot_paths_callgrind.sh`), a count
//! that does not drift with the noise of a shared machine.
//!
//! | scenario | what one iteration does |
//! |----------|-------------------------|
//! | `route_1000_nodes_cheapest_path` | geofenced Dijkstra across a 1,000-node fleet (public [`Topology::cheapest_path`]) |
//! | `route_1000_nodes_link_failure_recompute_100_paths` | a link on the current paths goes down, 100 subscriber paths are recomputed, the link comes back |
//! | `wire_media_header_encode_parse` | encode and parse one media datagram header |
//! | `wire_hello_encode_decode` | encode and decode one `HELLO` control frame |
//! | `token_verify_gr1` | verify one `gr1` token (HMAC-SHA256, constant-time compare, claims) |
//! | `fanout_bytes_100_clone` | clone one 1,100-byte `Bytes` to 100 subscribers and drop the clones |
//! | `fanout_bytes_100_queue_and_wake` | the same into 100 bounded drop-oldest queues (mutex + `VecDeque`), one `Notify` wake each, then drain |
//!
//! The fan-out scenarios are a plain-`Bytes` model, not the relay's hub
//! (which is being restructured): the first is the least any fan-out does,
//! the second the per-subscriber queue and wake-up that the relay's writer
//! tasks pay today, so their difference is what sending straight from the
//! ingress path would save per delivered packet.
//!
//! `--callgrind SCENARIO ITERATIONS` runs one scenario that many times
//! without criterion, for the script.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use criterion::Criterion;
use georelay::auth::{Claims, Role, TokenKey};
use georelay::ids::{AppId, NodeId, RegionId};
use georelay::routing::{AllowedRegions, Topology};
use georelay::wire::{Frame, Hello, MediaHeader, SdkInfo};

const FLEET_NODES: usize = 1000;
const REGIONS: usize = 10;
const SUBSCRIBERS: usize = 100;
const QUEUE_PACKETS: usize = 512;

/// A deterministic 1,000-node fleet: 10 regions, a ring plus 2,000 chords
/// with costs of 5 to 204 ms (a linear congruential generator, fixed seed).
fn fleet() -> Topology {
    let id = |i: usize| NodeId::new(format!("n{i:04}"));
    let nodes = (0..FLEET_NODES).map(|i| (id(i), RegionId::new(format!("r{}", i % REGIONS))));
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let mut links = Vec::new();
    for i in 0..FLEET_NODES {
        links.push((id(i), id((i + 1) % FLEET_NODES), 5 + (next() % 200) as u32));
    }
    for _ in 0..2 * FLEET_NODES {
        let (a, b) = (next() % FLEET_NODES, next() % FLEET_NODES);
        links.push((id(a), id(b), 5 + (next() % 200) as u32));
    }
    Topology::new(nodes, links)
}

/// Every region but three: paths must avoid 30% of the fleet.
fn geofence() -> AllowedRegions {
    (0..REGIONS - 3)
        .map(|r| RegionId::new(format!("r{r}")))
        .collect()
}

struct Routing {
    topology: Topology,
    allowed: AllowedRegions,
    from: NodeId,
    to: NodeId,
    subscribers: Vec<NodeId>,
    failing: (NodeId, NodeId),
}

impl Routing {
    fn new() -> Routing {
        let topology = fleet();
        let allowed = geofence();
        let allowed_nodes: Vec<NodeId> = topology
            .nodes()
            .filter(|(_, region)| allowed.allows(region))
            .map(|(node, _)| node.clone())
            .collect();
        let from = allowed_nodes[0].clone();
        let to = allowed_nodes[allowed_nodes.len() / 2].clone();
        let subscribers: Vec<NodeId> = allowed_nodes
            .iter()
            .step_by(allowed_nodes.len() / SUBSCRIBERS)
            .take(SUBSCRIBERS)
            .cloned()
            .collect();
        let route = topology
            .cheapest_path(&allowed, &from, &to)
            .expect("the benchmark fleet connects its allowed nodes");
        let failing = (route.path[0].clone(), route.path[1].clone());
        Routing {
            topology,
            allowed,
            from,
            to,
            subscribers,
            failing,
        }
    }

    fn cheapest_path(&self) -> u64 {
        self.topology
            .cheapest_path(&self.allowed, &self.from, &self.to)
            .map_or(0, |r| r.cost_ms)
    }

    fn link_failure_recompute(&mut self) -> u64 {
        let (a, b) = &self.failing;
        self.topology.set_link_up(a, b, false);
        let total = self
            .subscribers
            .iter()
            .filter_map(|s| {
                self.topology
                    .cheapest_path(&self.allowed, &self.from, s)
                    .ok()
            })
            .map(|r| r.cost_ms)
            .sum();
        self.topology.set_link_up(a, b, true);
        total
    }
}

fn media_header_round_trip(buf: &mut BytesMut, seq: u64) -> u64 {
    buf.clear();
    MediaHeader {
        track: 0x1234,
        seq,
        timestamp_us: 1_700_000_000_000,
    }
    .encode(buf);
    MediaHeader::parse(buf).map_or(0, |(h, len)| h.seq + len as u64)
}

fn hello() -> Frame {
    Frame::Hello(Hello {
        version: georelay::wire::PROTOCOL_VERSION,
        app: "acme-health".into(),
        channel: "consult-4711".into(),
        token: "gr1.eyJhcHAiOiJhY21lLWhlYWx0aCJ9.c2lnbmF0dXJl".into(),
        sdk: SdkInfo {
            name: "georelay-rust".into(),
            version: "0.1.0".into(),
            device: "desktop".into(),
            os: "linux".into(),
            network: "wifi".into(),
        },
    })
}

fn hello_round_trip(frame: &Frame, buf: &mut BytesMut) -> usize {
    buf.clear();
    frame.encode(buf);
    georelay::wire::decode_frame(buf).map_or(0, |decoded| decoded.map_or(0, |(_, len)| len))
}

struct Tokens {
    token: String,
    key: TokenKey,
    app: AppId,
}

impl Tokens {
    fn new() -> Tokens {
        let app = AppId::new("acme-health");
        let key = TokenKey::new(b"benchmark-secret-of-32-bytes-...");
        let claims = Claims {
            app: app.clone(),
            channel: "consult-4711".into(),
            user: "patient-17".into(),
            role: Role::Subscribe,
            expires_at: 4_000_000_000,
        };
        let token = georelay::auth::mint(&claims, &key);
        Tokens { token, key, app }
    }

    fn verify(&self) -> bool {
        let key = self.key.clone();
        georelay::auth::verify(
            &self.token,
            &move |_| Some(key.clone()),
            Some(&self.app),
            1_800_000_000,
        )
        .is_ok()
    }
}

fn payload() -> Bytes {
    Bytes::from(vec![0x5a; 1100])
}

fn fanout_clone(packet: &Bytes, out: &mut Vec<Bytes>) -> usize {
    out.extend((0..SUBSCRIBERS).map(|_| packet.clone()));
    let n = black_box(&out).len();
    out.clear();
    n
}

/// A subscriber's bounded drop-oldest queue and its writer's wake-up, as
/// a relay with one writer task per subscriber needs them.
struct Subscriber {
    queue: Mutex<VecDeque<Bytes>>,
    wake: tokio::sync::Notify,
}

fn subscribers() -> Vec<Arc<Subscriber>> {
    (0..SUBSCRIBERS)
        .map(|_| {
            Arc::new(Subscriber {
                queue: Mutex::new(VecDeque::with_capacity(QUEUE_PACKETS)),
                wake: tokio::sync::Notify::new(),
            })
        })
        .collect()
}

fn fanout_queue_and_wake(packet: &Bytes, subscribers: &[Arc<Subscriber>]) -> usize {
    for s in subscribers {
        let mut queue = s.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() == QUEUE_PACKETS {
            queue.pop_front();
        }
        queue.push_back(packet.clone());
        drop(queue);
        s.wake.notify_one();
    }
    let mut drained = 0;
    for s in subscribers {
        let mut queue = s.queue.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(p) = queue.pop_front() {
            drained += black_box(p).len();
        }
    }
    drained
}

fn criterion_benches(c: &mut Criterion) {
    let mut routing = Routing::new();
    c.bench_function("route_1000_nodes_cheapest_path", |b| {
        b.iter(|| routing.cheapest_path())
    });
    c.bench_function("route_1000_nodes_link_failure_recompute_100_paths", |b| {
        b.iter(|| routing.link_failure_recompute())
    });
    let mut buf = BytesMut::with_capacity(64);
    let mut seq = 0;
    c.bench_function("wire_media_header_encode_parse", |b| {
        b.iter(|| {
            seq += 1;
            media_header_round_trip(&mut buf, seq)
        })
    });
    let frame = hello();
    c.bench_function("wire_hello_encode_decode", |b| {
        b.iter(|| hello_round_trip(&frame, &mut buf))
    });
    let tokens = Tokens::new();
    c.bench_function("token_verify_gr1", |b| b.iter(|| tokens.verify()));
    let packet = payload();
    let mut out = Vec::with_capacity(SUBSCRIBERS);
    c.bench_function("fanout_bytes_100_clone", |b| {
        b.iter(|| fanout_clone(&packet, &mut out))
    });
    let subs = subscribers();
    c.bench_function("fanout_bytes_100_queue_and_wake", |b| {
        b.iter(|| fanout_queue_and_wake(&packet, &subs))
    });
}

/// Runs `scenario` `iterations` times; the checksum keeps the work alive.
fn callgrind(scenario: &str, iterations: u64) -> Result<u64, String> {
    let mut checksum = 0u64;
    match scenario {
        "route_1000_nodes_cheapest_path" => {
            let routing = Routing::new();
            for _ in 0..iterations {
                checksum += routing.cheapest_path();
            }
        }
        "route_1000_nodes_link_failure_recompute_100_paths" => {
            let mut routing = Routing::new();
            for _ in 0..iterations {
                checksum += routing.link_failure_recompute();
            }
        }
        "wire_media_header_encode_parse" => {
            let mut buf = BytesMut::with_capacity(64);
            for seq in 0..iterations {
                checksum += media_header_round_trip(&mut buf, seq);
            }
        }
        "wire_hello_encode_decode" => {
            let (frame, mut buf) = (hello(), BytesMut::with_capacity(256));
            for _ in 0..iterations {
                checksum += hello_round_trip(&frame, &mut buf) as u64;
            }
        }
        "token_verify_gr1" => {
            let tokens = Tokens::new();
            for _ in 0..iterations {
                checksum += u64::from(tokens.verify());
            }
        }
        "fanout_bytes_100_clone" => {
            let (packet, mut out) = (payload(), Vec::with_capacity(SUBSCRIBERS));
            for _ in 0..iterations {
                checksum += fanout_clone(&packet, &mut out) as u64;
            }
        }
        "fanout_bytes_100_queue_and_wake" => {
            let (packet, subs) = (payload(), subscribers());
            for _ in 0..iterations {
                checksum += fanout_queue_and_wake(&packet, &subs) as u64;
            }
        }
        other => return Err(format!("unknown scenario {other}")),
    }
    Ok(checksum)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--callgrind") {
        let scenario = args.get(at + 1).map_or("", String::as_str);
        let iterations = args.get(at + 2).and_then(|n| n.parse().ok()).unwrap_or(1);
        match callgrind(scenario, iterations) {
            Ok(checksum) => println!("{scenario} x {iterations}: checksum {checksum}"),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
        return;
    }
    // Sanity before timing: every scenario does its work.
    for scenario in [
        "route_1000_nodes_cheapest_path",
        "route_1000_nodes_link_failure_recompute_100_paths",
        "token_verify_gr1",
        "fanout_bytes_100_queue_and_wake",
    ] {
        let checksum = callgrind(scenario, 1).unwrap_or(0);
        assert!(checksum > 0, "{scenario} did nothing");
    }
    let mut criterion = Criterion::default().configure_from_args();
    criterion_benches(&mut criterion);
    criterion.final_summary();
}
