//! `georelay loadgen --json` against `georelay serve --all` in a child
//! process, on a test fleet at a random `127.a.b.*` prefix: the issue's
//! acceptance run (1 publisher → 3 subscribers, 5 s at 200 pps, nothing
//! lost), redirects counted, and a client from a denied country counted as
//! `GEOFENCE_DENIED`.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fleet::{COUNTRIES, FleetSpec, NODES, config_text, http_request};

const BIN: &str = env!("CARGO_BIN_EXE_georelay");

/// Kills the server child when dropped, also when a test panics.
struct ChildGuard {
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct ServedFleet {
    dir: tempfile::TempDir,
    prefix: (u8, u8),
    server: ChildGuard,
}

impl ServedFleet {
    fn config(&self) -> PathBuf {
        self.dir.path().join("regions.toml")
    }

    fn admin(&self, node_index: usize) -> SocketAddr {
        SocketAddr::new(self.ip(10 + node_index as u8), 9090)
    }

    fn ip(&self, last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.prefix.0, self.prefix.1, last))
    }

    /// A client address that the config's overrides map to `country`.
    fn client_ip(&self, country: &str) -> IpAddr {
        let i = COUNTRIES
            .iter()
            .position(|c| *c == country)
            .unwrap_or_else(|| panic!("no test country {country}"));
        self.ip(100 + i as u8)
    }
}

fn unique_prefix() -> (u8, u8) {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 2];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("randomness");
    // Stay clear of the example fleet (127.10-127.40) and of the in-process
    // test fleets (127.100-127.239).
    (41 + bytes[0] % 50, bytes[1])
}

/// Starts `serve --all` and waits until every node answers `/readyz` 200.
async fn start_fleet() -> ServedFleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = unique_prefix();
    std::fs::write(
        dir.path().join("regions.toml"),
        config_text(prefix, &FleetSpec::default()),
    )
    .expect("write config");
    let log = dir.path().join("serve.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(BIN)
        .args(["serve", "--all", "--config"])
        .arg(dir.path().join("regions.toml"))
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .spawn()
        .expect("spawn georelay serve");
    let fleet = ServedFleet {
        dir,
        prefix,
        server: ChildGuard { child, log },
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for (node, name) in NODES.iter().enumerate() {
        loop {
            assert!(
                Instant::now() < deadline,
                "{} not ready within 30 s; serve log:\n{}",
                name,
                fleet.server.log_text()
            );
            if tokio::net::TcpStream::connect(fleet.admin(node))
                .await
                .is_ok()
                && http_request(fleet.admin(node), "GET", "/readyz").await.0 == 200
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    fleet
}

/// Runs `georelay loadgen --json` with `args` and parses its one JSON line.
async fn loadgen(config: &Path, args: &[String]) -> Value {
    let mut command = Command::new(BIN);
    command
        .args(["loadgen", "--json", "--app", "acme-health", "--config"])
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || {
        let child = command.spawn().expect("spawn georelay loadgen");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(output) => output.expect("loadgen output"),
            Err(_) => {
                let _ = Command::new("kill").arg(pid.to_string()).status();
                panic!("loadgen did not finish within 60 s");
            }
        }
    })
    .await
    .expect("loadgen task");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "--json prints one object: {stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

fn count(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {field} in {summary}"))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_counts_exactly_against_a_served_fleet() {
    let fleet = start_fleet().await;
    let nl = fleet.client_ip("NL").to_string();

    // The acceptance run: 1 publisher -> 3 subscribers on one node, 5 s at 200 pps.
    let summary = loadgen(
        &fleet.config(),
        &args(&[
            "--node",
            "eu-fra-1",
            "--publishers",
            "1",
            "--subscribers",
            "3",
            "--rate",
            "200",
            "--duration",
            "5",
            "--bind",
            &nl,
        ]),
    )
    .await;
    assert_eq!(count(&summary, "publishers"), 1, "{summary}");
    assert_eq!(count(&summary, "subscribers"), 3, "{summary}");
    let sent = count(&summary, "sent");
    assert!(
        (500..=1000).contains(&sent),
        "200 pps for 5 s sends at most 1000: {summary}"
    );
    assert_eq!(count(&summary, "expected"), 3 * sent, "{summary}");
    assert_eq!(
        count(&summary, "received"),
        count(&summary, "expected"),
        "{summary}"
    );
    assert_eq!(count(&summary, "lost"), 0, "{summary}");
    assert_eq!(summary["loss_ratio"].as_f64(), Some(0.0), "{summary}");
    assert_eq!(count(&summary, "duplicates"), 0, "{summary}");
    assert_eq!(
        summary["errors"].as_object().map(|e| e.len()),
        Some(0),
        "{summary}"
    );
    assert_eq!(count(&summary, "redirects"), 0, "{summary}");
    let latency = &summary["latency_us"];
    let [p50, p99, p999, max] = ["p50", "p99", "p999", "max"].map(|p| count(latency, p));
    assert!(
        0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{latency}"
    );
    assert!(
        max < 5_000_000,
        "one-way latency on loopback under 5 s: {latency}"
    );
    assert_eq!(
        count(latency, "samples"),
        count(&summary, "received"),
        "{latency}"
    );
    let throughput = summary["throughput_pps"].as_f64().expect("throughput_pps");
    let duration = summary["duration_s"].as_f64().expect("duration_s");
    assert!((4.5..6.0).contains(&duration), "{summary}");
    assert!(
        (throughput - 3.0 * sent as f64 / duration).abs() < 1.0,
        "{summary}"
    );

    // acme-health is EU-only: clients sent to the UK node are redirected.
    let summary = loadgen(
        &fleet.config(),
        &args(&[
            "--node",
            "uk-lon-1",
            "--subscribers",
            "2",
            "--duration",
            "1",
            "--bind",
            &nl,
        ]),
    )
    .await;
    assert_eq!(count(&summary, "redirects"), 3, "{summary}");
    assert!(count(&summary, "sent") > 0, "{summary}");
    assert_eq!(
        count(&summary, "received"),
        count(&summary, "expected"),
        "{summary}"
    );

    // acme-health denies clients from RU: every client is refused, counted, and the run completes.
    let ru = fleet.client_ip("RU").to_string();
    let summary = loadgen(
        &fleet.config(),
        &args(&[
            "--node",
            "eu-fra-1",
            "--subscribers",
            "2",
            "--duration",
            "1",
            "--bind",
            &ru,
        ]),
    )
    .await;
    assert_eq!(
        summary["errors"]["GEOFENCE_DENIED"].as_u64(),
        Some(3),
        "{summary}"
    );
    assert_eq!(count(&summary, "publishers"), 0, "{summary}");
    assert_eq!(count(&summary, "sent"), 0, "{summary}");
    assert_eq!(count(&summary, "expected"), 0, "{summary}");
    drop(fleet);
}
