//! Fan-out on one node: one publisher to 10 subscribers, full-size media
//! datagrams, measured as packets/s delivered and relay CPU per delivered
//! packet, against a baseline of one publisher to one subscriber measured
//! in the same run (the ratio is what survives a noisy machine).
//!
//! The relay runs as its own process (`georelay serve --node bench-1`, built
//! with the bench profile), so its CPU time is read from `/proc/PID/stat`
//! (utime + stime) before and after each load; the load comes from
//! [`georelay::loadgen::run`] in this process, whose own CPU time is
//! reported too. Run with `cargo bench --bench fanout`; without `--bench`
//! (as `cargo test --benches` runs it) it does one short smoke pass.
//!
//! Metadata overhead: a second relay, identical but with `[metadata]
//! enabled = true` (SQLite store, default 1 s flush, quality samples every
//! 1 s instead of the default 10 s, so every session is sampled several
//! times), carries the same load (1 publisher × 1,000 pps × 10 subscribers)
//! as the metadata-off relay, in interleaved rounds (off/on, then on/off, ...)
//! so that drift in the machine's load hits both alike. Each run's CPU is
//! read after a settle of one flush interval, so the writer's last flush is
//! counted. It prints relay CPU per delivered packet with metadata on ÷ off.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use georelay::client::Target;
use georelay::ids::AppId;
use georelay::loadgen::{LoadSpec, Summary};
use georelay::metadata::{EventKind, SqliteStore};
use georelay::relay::policy::Policy;
use georelay::tls::FleetPki;

/// The largest media payload at the initial 1,200-byte QUIC MTU: with the
/// media header and QUIC overhead each UDP datagram is about 1,200 bytes.
const PAYLOAD: usize = 1138;
const NODE: &str = "bench-1";
const APP: &str = "bench-app";
/// The metadata-overhead load: 1 publisher at this rate to 10 subscribers.
const OVERHEAD_RATE_PPS: u32 = 1000;
const OVERHEAD_SUBSCRIBERS: usize = 10;
/// The metadata writer's flush interval (the default) plus a margin: each
/// overhead run's CPU is read this long after the load stops.
const SETTLE: Duration = Duration::from_millis(1200);

/// Kills the relay when dropped, also on panic.
struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Scenario {
    name: &'static str,
    subscribers: usize,
    rate_pps: u32,
}

struct Measured {
    summary: Summary,
    relay_cpu: Duration,
    loadgen_cpu: Duration,
}

impl Measured {
    fn relay_ns_per_delivered(&self) -> f64 {
        self.relay_cpu.as_nanos() as f64 / self.summary.received.max(1) as f64
    }
}

/// One relay process in its own directory, and what the loadgen needs to
/// reach it.
struct BenchRelay {
    dir: tempfile::TempDir,
    relay: Relay,
    spec: LoadSpec,
}

impl BenchRelay {
    /// Starts `serve --node bench-1` on a fresh address, metadata on or off,
    /// and waits until it is ready.
    fn start(metadata: bool) -> BenchRelay {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = dir.path().join("regions.toml");
        let ip = unique_ip();
        std::fs::write(&config, config_text(ip, metadata))
            .unwrap_or_else(|e| panic!("write config: {e}"));
        let relay = start_relay(&config);
        let ca = dir.path().join("data").join("dev-ca.pem");
        wait_ready(SocketAddr::new(ip, 9090), &ca);
        let policy = Policy::load(&config).unwrap_or_else(|e| panic!("bench config: {e}"));
        let app = AppId::new(APP);
        let key = policy
            .keyring
            .key(&app)
            .unwrap_or_else(|| panic!("{APP} has a key"));
        let roots = FleetPki::load_roots(&ca).unwrap_or_else(|e| panic!("dev CA: {e}"));
        let target = Target {
            node: NODE.into(),
            addr: SocketAddr::new(ip, 4433),
        };
        let mut spec = LoadSpec::new(app, key, Arc::new(roots), target);
        spec.payload_size = PAYLOAD;
        BenchRelay { dir, relay, spec }
    }

    fn pid(&self) -> u32 {
        self.relay.0.id()
    }

    fn admin(&self) -> SocketAddr {
        SocketAddr::new(self.spec.publish_to.addr.ip(), 9090)
    }

    /// Runs one load against this relay; the relay's CPU is read `settle`
    /// after the load ends.
    fn measure(
        &self,
        runtime: &tokio::runtime::Runtime,
        scenario: &Scenario,
        duration: Duration,
        settle: Duration,
    ) -> Measured {
        let mut spec = self.spec.clone();
        spec.subscribers = scenario.subscribers;
        spec.rate_pps = scenario.rate_pps;
        spec.duration = duration;
        let relay_before = process_cpu(self.pid());
        let self_before = process_cpu(std::process::id());
        let summary = runtime
            .block_on(georelay::loadgen::run(&spec))
            .unwrap_or_else(|e| panic!("{}: {e}", scenario.name));
        std::thread::sleep(settle);
        let measured = Measured {
            summary,
            relay_cpu: process_cpu(self.pid()).saturating_sub(relay_before),
            loadgen_cpu: process_cpu(std::process::id()).saturating_sub(self_before),
        };
        assert!(
            measured.summary.received > 0,
            "{}: nothing delivered: {:?}",
            scenario.name,
            measured.summary
        );
        measured
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (duration, rates, overhead_rounds): (Duration, &[u32], usize) = if full {
        (Duration::from_secs(5), &[1000, 3000, 6000], 5)
    } else {
        (Duration::from_millis(500), &[200], 1)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let metadata_off = BenchRelay::start(false);

    let mut scenarios = Vec::new();
    for &rate_pps in rates {
        scenarios.push(Scenario {
            name: "baseline_1_subscriber",
            subscribers: 1,
            rate_pps,
        });
        scenarios.push(Scenario {
            name: "fanout_10_subscribers",
            subscribers: 10,
            rate_pps,
        });
    }
    let results: Vec<Measured> = scenarios
        .iter()
        .map(|scenario| metadata_off.measure(&runtime, scenario, duration, Duration::ZERO))
        .collect();

    let metadata_on = BenchRelay::start(true);
    let overhead = Scenario {
        name: "metadata_overhead_1_to_10",
        subscribers: OVERHEAD_SUBSCRIBERS,
        rate_pps: OVERHEAD_RATE_PPS,
    };
    // (off, on) per round; odd rounds run `on` first.
    let mut rounds = Vec::new();
    for round in 0..overhead_rounds {
        let measure = |relay: &BenchRelay| relay.measure(&runtime, &overhead, duration, SETTLE);
        let pair = if round % 2 == 0 {
            let off = measure(&metadata_off);
            (off, measure(&metadata_on))
        } else {
            let on = measure(&metadata_on);
            (measure(&metadata_off), on)
        };
        rounds.push(pair);
    }
    let recorded = recorded_events(&metadata_on);
    let metrics = http_get(metadata_on.admin(), "/metrics");
    let written = metric_total(&metrics, "georelay_metadata_events_written_total");
    let dropped = metric_total(&metrics, "georelay_metadata_events_dropped_total");
    drop(metadata_on);
    drop(metadata_off);

    println!("{}", machine());
    println!(
        "payload {PAYLOAD} B, {} s per run, relay = `georelay serve --node {NODE}` ({}, metadata off)",
        duration.as_secs_f64(),
        if full {
            "bench profile"
        } else {
            "smoke pass, test profile"
        }
    );
    println!();
    print_table(scenarios.iter().zip(&results));
    println!();
    for pair in results.chunks(2) {
        if let [baseline, fanout] = pair {
            println!(
                "rate {}: fan-out/baseline delivered pkt/s {:.2}x, relay CPU per delivered packet {:.2}x",
                fanout.summary.rate_pps,
                fanout.summary.throughput_pps
                    / baseline.summary.throughput_pps.max(f64::MIN_POSITIVE),
                fanout.relay_ns_per_delivered()
                    / baseline.relay_ns_per_delivered().max(f64::MIN_POSITIVE),
            );
            let extra_packets = fanout
                .summary
                .received
                .saturating_sub(baseline.summary.received)
                .max(1);
            let extra_cpu = fanout.relay_cpu.saturating_sub(baseline.relay_cpu);
            println!(
                "rate {}: marginal relay CPU per extra delivered packet {:.2} µs",
                fanout.summary.rate_pps,
                extra_cpu.as_nanos() as f64 / extra_packets as f64 / 1000.0,
            );
        }
    }

    println!();
    println!(
        "metadata overhead: 1 publisher x {OVERHEAD_RATE_PPS} pps x {OVERHEAD_SUBSCRIBERS} subscribers, {overhead_rounds} interleaved rounds, CPU read {} ms after each run; on = [metadata] enabled, flush 1000 ms (default), quality_interval_secs = 1",
        SETTLE.as_millis()
    );
    let off_name = Scenario {
        name: "metadata_off",
        ..overhead
    };
    let on_name = Scenario {
        name: "metadata_on",
        ..off_name
    };
    print_table(
        rounds
            .iter()
            .flat_map(|(off, on)| [(&off_name, off), (&on_name, on)]),
    );
    println!();
    for (round, (off, on)) in rounds.iter().enumerate() {
        println!(
            "round {}: relay µs/delivered pkt off {:.3}, on {:.3}, on/off {:.3}",
            round + 1,
            off.relay_ns_per_delivered() / 1000.0,
            on.relay_ns_per_delivered() / 1000.0,
            on.relay_ns_per_delivered() / off.relay_ns_per_delivered().max(f64::MIN_POSITIVE),
        );
    }
    let total = |pick: fn(&(Measured, Measured)) -> &Measured| {
        let cpu: Duration = rounds.iter().map(|r| pick(r).relay_cpu).sum();
        let delivered: u64 = rounds.iter().map(|r| pick(r).summary.received).sum();
        (cpu, delivered)
    };
    let (off_cpu, off_delivered) = total(|r| &r.0);
    let (on_cpu, on_delivered) = total(|r| &r.1);
    let off_ns = off_cpu.as_nanos() as f64 / off_delivered.max(1) as f64;
    let on_ns = on_cpu.as_nanos() as f64 / on_delivered.max(1) as f64;
    println!(
        "all rounds: off {:.2} s CPU / {off_delivered} delivered = {:.3} µs/pkt; on {:.2} s CPU / {on_delivered} delivered = {:.3} µs/pkt",
        off_cpu.as_secs_f64(),
        off_ns / 1000.0,
        on_cpu.as_secs_f64(),
        on_ns / 1000.0,
    );
    println!(
        "metadata on/off relay CPU per delivered packet: {:.3} ({:+.1}%)",
        on_ns / off_ns.max(f64::MIN_POSITIVE),
        (on_ns / off_ns.max(f64::MIN_POSITIVE) - 1.0) * 100.0
    );
    println!(
        "metadata recorded by the on relay: {recorded}; events written {written}, dropped {dropped} (/metrics)"
    );
}

fn print_table<'a>(rows: impl Iterator<Item = (&'a Scenario, &'a Measured)>) {
    println!(
        "| scenario | rate/pub | sent | delivered/expected | loss | delivered pkt/s | p50 / p99 / max latency | relay CPU | relay µs/delivered pkt | loadgen CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (scenario, m) in rows {
        let s = &m.summary;
        let ms = |v: Option<u64>| {
            v.map_or_else(|| "-".into(), |us| format!("{:.2}", us as f64 / 1000.0))
        };
        println!(
            "| {} | {} | {} | {}/{} | {:.4}% | {:.0} | {} / {} / {} ms | {:.2} s | {:.2} | {:.2} s |",
            scenario.name,
            scenario.rate_pps,
            s.sent,
            s.received,
            s.expected,
            s.loss_ratio * 100.0,
            s.throughput_pps,
            ms(s.latency_us.p50),
            ms(s.latency_us.p99),
            ms(s.latency_us.max),
            m.relay_cpu.as_secs_f64(),
            m.relay_ns_per_delivered() / 1000.0,
            m.loadgen_cpu.as_secs_f64(),
        );
    }
}

/// Sessions opened and quality samples in the relay's SQLite store.
fn recorded_events(relay: &BenchRelay) -> String {
    let store = match SqliteStore::open_existing(relay.dir.path().join("metadata")) {
        Ok(store) => store,
        Err(e) => return format!("store unreadable ({e})"),
    };
    match store.read_events(0, None) {
        Ok(events) => {
            let sessions = events
                .iter()
                .filter(|e| matches!(e.kind, EventKind::SessionOpened { .. }))
                .count();
            let samples = events
                .iter()
                .filter(|e| matches!(e.kind, EventKind::QualitySample { .. }))
                .count();
            format!(
                "{} events, {sessions} sessions opened, {samples} quality samples",
                events.len()
            )
        }
        Err(e) => format!("store unreadable ({e})"),
    }
}

/// The sum of every series of a Prometheus counter in `text`.
fn metric_total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |total, value| total + value)
}

/// A random `127.a.b.c` for the node, away from the example fleet and tests.
fn unique_ip() -> IpAddr {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 3];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .unwrap_or_else(|_| panic!("randomness"));
    IpAddr::V4(Ipv4Addr::new(
        127,
        91 + bytes[0] % 8,
        bytes[1],
        1 + bytes[2] % 250,
    ))
}

fn config_text(ip: IpAddr, metadata: bool) -> String {
    let metadata = if metadata {
        "enabled = true\ndir = \"metadata\"\nquality_interval_secs = 1"
    } else {
        "enabled = false"
    };
    format!(
        r#"[regions.eu]
countries = ["DE", "NL"]

[nodes.{NODE}]
region = "eu"
listen = "{ip}:4433"
admin = "{ip}:9090"

[apps.{APP}]
secret = "bench-secret"
allow_regions = ["eu"]

[metadata]
{metadata}
"#
    )
}

fn start_relay(config: &Path) -> Relay {
    let child = Command::new(env!("CARGO_BIN_EXE_georelay"))
        .args(["serve", "--node", NODE, "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn georelay serve: {e}"));
    Relay(child)
}

/// Waits (at most 30 s) for the dev CA file and `/readyz` 200.
fn wait_ready(admin: SocketAddr, ca: &Path) {
    let deadline = georelay::clock::monotonic_now() + Duration::from_secs(30);
    loop {
        assert!(
            georelay::clock::monotonic_now() < deadline,
            "relay not ready within 30 s"
        );
        if ca.exists() && http_get(admin, "/readyz").starts_with("HTTP/1.1 200") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.1 GET on the admin address: the whole response, or an
/// empty string if the relay does not answer.
fn http_get(admin: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(admin) else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes());
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// utime + stime of a process, from `/proc/PID/stat`.
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("machine: {cores} cores (nproc), {model}")
}
