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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use georelay::client::Target;
use georelay::ids::AppId;
use georelay::loadgen::{LoadSpec, Summary};
use georelay::relay::policy::Policy;
use georelay::tls::FleetPki;

/// The largest media payload at the initial 1,200-byte QUIC MTU: with the
/// media header and QUIC overhead each UDP datagram is about 1,200 bytes.
const PAYLOAD: usize = 1138;
const NODE: &str = "bench-1";
const APP: &str = "bench-app";

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

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (duration, rates): (Duration, &[u32]) = if full {
        (Duration::from_secs(5), &[1000, 3000, 6000])
    } else {
        (Duration::from_millis(500), &[200])
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let config = dir.path().join("regions.toml");
    let ip = unique_ip();
    std::fs::write(&config, config_text(ip)).unwrap_or_else(|e| panic!("write config: {e}"));
    let relay = start_relay(&config);
    let pid = relay.0.id();
    wait_ready(
        SocketAddr::new(ip, 9090),
        &dir.path().join("data").join("dev-ca.pem"),
    );

    let policy = Policy::load(&config).unwrap_or_else(|e| panic!("bench config: {e}"));
    let app = AppId::new(APP);
    let key = policy
        .keyring
        .key(&app)
        .unwrap_or_else(|| panic!("{APP} has a key"));
    let roots = FleetPki::load_roots(&dir.path().join("data").join("dev-ca.pem"))
        .unwrap_or_else(|e| panic!("dev CA: {e}"));
    let target = Target {
        node: NODE.into(),
        addr: SocketAddr::new(ip, 4433),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));

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
    let mut results = Vec::new();
    for scenario in &scenarios {
        let mut spec = LoadSpec::new(
            app.clone(),
            key.clone(),
            Arc::new(roots.clone()),
            target.clone(),
        );
        spec.subscribers = scenario.subscribers;
        spec.rate_pps = scenario.rate_pps;
        spec.payload_size = PAYLOAD;
        spec.duration = duration;
        let relay_before = process_cpu(pid);
        let self_before = process_cpu(std::process::id());
        let summary = runtime
            .block_on(georelay::loadgen::run(&spec))
            .unwrap_or_else(|e| panic!("{}: {e}", scenario.name));
        let measured = Measured {
            summary,
            relay_cpu: process_cpu(pid).saturating_sub(relay_before),
            loadgen_cpu: process_cpu(std::process::id()).saturating_sub(self_before),
        };
        assert!(
            measured.summary.received > 0,
            "{}: nothing delivered: {:?}",
            scenario.name,
            measured.summary
        );
        results.push(measured);
    }
    drop(relay);

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
    println!(
        "| scenario | rate/pub | sent | delivered/expected | loss | delivered pkt/s | p50 / p99 / max latency | relay CPU | relay µs/delivered pkt | loadgen CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (scenario, m) in scenarios.iter().zip(&results) {
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

fn config_text(ip: IpAddr) -> String {
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
enabled = false
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
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "relay not ready within 30 s");
        if ca.exists()
            && let Ok(mut stream) = std::net::TcpStream::connect(admin)
        {
            let _ = stream
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            if response.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
