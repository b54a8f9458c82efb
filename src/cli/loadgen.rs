//! `georelay loadgen`: synthetic SDK clients against a running fleet, and
//! the hidden `georelay baseline-forwarder` that `--baseline` starts.
//!
//! Maps the flags of DESIGN.md's contract onto a [`LoadSpec`], runs
//! [`crate::loadgen::run`] (then [`crate::loadgen::run_baseline`] with
//! `--baseline`) and prints the [`Summary`]: one JSON object with `--json`,
//! a short human summary otherwise. On a terminal (and without `--json`) a
//! progress line is redrawn on stderr once a second; `--series FILE` writes
//! the same snapshots as JSON lines. Refused clients do not fail the
//! command; they are counted in the summary's `errors`.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;

use super::{CliError, CliResult, ConfigArg};
use crate::client::Target;
use crate::ids::AppId;
use crate::loadgen::{LoadSpec, Observer, Profile, Snapshot, Summary};
use crate::relay::policy::{Policy, PolicyError};
use crate::tls::FleetPki;

/// Arguments of `georelay loadgen`.
#[derive(Debug, Args)]
pub(crate) struct LoadgenArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The app whose clients are simulated (tokens are minted from its secret).
    #[arg(long)]
    app: String,
    /// Node for publishers and subscribers alike (default: the first node the app allows).
    #[arg(long)]
    node: Option<String>,
    /// Nodes the publishers (and room participants) connect to, round robin
    /// (comma-separated or repeated; default: --node).
    #[arg(long, value_name = "ID,...", value_delimiter = ',')]
    pub_node: Vec<String>,
    /// Nodes the subscribers connect to, round robin (default: --node).
    #[arg(long, value_name = "ID,...", value_delimiter = ',')]
    sub_node: Vec<String>,
    /// Traffic profile: audio (50 pps x 160 B), video (30 fps, ~1.5 Mbit/s
    /// in 1,100 B packets, a 10x keyframe burst every 2 s), data (reliable
    /// messages at --rate x --size), raw (datagrams at --rate x --size).
    #[arg(long, default_value = "raw", value_parser = parse_profile)]
    profile: Profile,
    /// Channels the clients are spread over, round robin.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Publishers, one track each.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscribers, each in one channel.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// K rooms of --room-size participants who each publish and hear the
    /// others (replaces --channels/--publishers/--subscribers).
    #[arg(long, value_name = "K", default_value_t = 0)]
    rooms: usize,
    /// Participants per room.
    #[arg(long, value_name = "N", default_value_t = 10)]
    room_size: usize,
    /// Admitted idle sessions held open during the run.
    #[arg(long, value_name = "N", default_value_t = 0)]
    idle: usize,
    /// Packets per second, per publisher (raw and data; default 50).
    #[arg(long, value_name = "PPS")]
    rate: Option<u32>,
    /// Payload bytes per packet, including the 20-byte timing header (raw
    /// and data; default 200).
    #[arg(long, value_name = "BYTES")]
    size: Option<usize>,
    /// How long the publishers send, in seconds (fractions allowed).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,
    /// The longest wait for in-flight packets after the publishers stop, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    drain_ms: u64,
    /// The longest wait for one connection and for track announcements, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    setup_timeout: u64,
    /// Local address of every client socket (so clients appear to come from its country).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Text repeated after the timing header to fill each payload.
    #[arg(long, value_name = "S", default_value = "georelay-loadgen ")]
    payload_text: String,
    /// CA certificate (PEM) of the relays; default: `[tls] ca`, or the dev CA
    /// that `serve` writes to `data/dev-ca.pem` next to the config.
    #[arg(long, value_name = "PATH")]
    ca: Option<PathBuf>,
    /// Nodes whose process cost is read besides those the clients were
    /// admitted to (transit nodes of a multi-process fleet).
    #[arg(long, value_name = "ID,...", value_delimiter = ',')]
    measure_node: Vec<String>,
    /// Do not read the relays' /metrics (no relay_cpu_* figures).
    #[arg(long)]
    no_relay_cost: bool,
    /// Also run the same traffic through a bare quinn forwarder (a child
    /// process) and report `baseline` and `ratio_cpu_per_packet`.
    #[arg(long)]
    baseline: bool,
    /// Append one JSON object per second of the run to FILE.
    #[arg(long, value_name = "FILE")]
    series: Option<PathBuf>,
    /// Print one JSON object instead of a human summary (and no progress line).
    #[arg(long)]
    json: bool,
}

/// Arguments of the hidden `georelay baseline-forwarder`.
#[derive(Debug, Args)]
pub(crate) struct ForwarderArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long)]
    listen: SocketAddr,
}

fn parse_profile(name: &str) -> Result<Profile, String> {
    Profile::from_name(name)
        .ok_or_else(|| format!("unknown profile {name:?}: use audio, video, data or raw"))
}

pub(super) fn run(args: LoadgenArgs) -> CliResult {
    let spec = build_spec(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(e.into()))?;
    let series = match &args.series {
        Some(path) => Some(Arc::new(Mutex::new(
            std::fs::File::create(path)
                .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))?,
        ))),
        None => None,
    };
    let progress = !args.json && std::io::stderr().is_terminal();
    let observer = |through: &'static str| -> Option<Observer> {
        if series.is_none() && !progress {
            return None;
        }
        let series = series.clone();
        Some(Box::new(move |snapshot: &Snapshot| {
            if let Some(file) = &series {
                write_series_line(file, through, snapshot);
            }
            if progress {
                print_progress(through, snapshot);
            }
        }))
    };
    let result = runtime.block_on(async {
        let summary = crate::loadgen::run_observed(&spec, observer("georelay")).await?;
        if progress {
            eprintln!();
        }
        if !args.baseline {
            return Ok(summary);
        }
        let exe = std::env::current_exe()
            .map_err(|e| crate::loadgen::LoadError::Baseline(e.to_string()))?;
        let baseline = crate::loadgen::run_baseline(&spec, exe, observer("baseline")).await?;
        if progress {
            eprintln!();
        }
        Ok(summary.with_baseline(baseline))
    });
    let summary = result.map_err(|err| match err {
        crate::loadgen::LoadError::Histogram(_)
        | crate::loadgen::LoadError::Baseline(_)
        | crate::loadgen::LoadError::IdleSockets(_) => CliError::Runtime(err.into()),
        other => CliError::Invalid(other.to_string()),
    })?;
    if args.json {
        let text = serde_json::to_string(&summary).map_err(|e| CliError::Runtime(e.into()))?;
        println!("{text}");
    } else {
        print_human(&summary);
        if let Some(baseline) = &summary.baseline {
            println!("-- the same traffic through the bare quinn baseline:");
            print_human(baseline);
            if let Some(ratio) = summary.ratio_cpu_per_packet {
                println!("relay CPU per delivered packet, georelay / baseline: {ratio:.3}");
            }
        }
    }
    Ok(())
}

/// `georelay baseline-forwarder`: the bare quinn forwarder of `--baseline`.
pub(super) fn run_forwarder(args: ForwarderArgs) -> CliResult {
    crate::loadgen::baseline::forwarder_main(args.listen)
        .map_err(|e| CliError::Runtime(anyhow::anyhow!(e)))
}

fn write_series_line(file: &Mutex<std::fs::File>, through: &str, snapshot: &Snapshot) {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(snapshot) else {
        return;
    };
    let mut line = serde_json::Map::new();
    line.insert("through".into(), through.into());
    line.extend(fields);
    let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
    // A full disk loses series lines, never the run.
    let _ = writeln!(file, "{}", serde_json::Value::Object(line));
}

fn print_progress(through: &str, s: &Snapshot) {
    let ms = |v: Option<u64>| {
        v.map_or_else(
            || "-".to_string(),
            |us| format!("{:.2} ms", us as f64 / 1000.0),
        )
    };
    eprint!(
        "\r{through} {:>5.1}s  sent {}  received {}  loss {:.3}%  p99 {}  (last second: {} received, p99 {})\x1b[K",
        s.t_s,
        s.sent,
        s.received,
        s.loss_ratio * 100.0,
        ms(s.p99_us),
        s.interval_received,
        ms(s.interval_latency_us.p99),
    );
    let _ = std::io::stderr().flush();
}

fn build_spec(args: &LoadgenArgs) -> Result<LoadSpec, CliError> {
    let path = &args.config.config;
    let policy = Policy::load(path).map_err(|err| match err {
        PolicyError::Config(errors) => CliError::Invalid(errors.to_string()),
        PolicyError::Secret(err) => CliError::Invalid(err.to_string()),
        PolicyError::Geo(err) => CliError::Invalid(err.to_string()),
    })?;
    let app = AppId::new(args.app.as_str());
    let token_key = policy.keyring.key(&app).ok_or_else(|| {
        CliError::Invalid(format!(
            "{}: no app {:?} in [apps]",
            path.display(),
            args.app
        ))
    })?;
    let default_node = match &args.node {
        Some(node) => node.clone(),
        None => crate::loadgen::first_allowed_node(&policy, &app)
            .ok_or_else(|| {
                CliError::Invalid(format!(
                    "{}: app {:?} is allowed on no node",
                    path.display(),
                    args.app
                ))
            })?
            .to_string(),
    };
    let target = |node: &str| {
        crate::loadgen::node_target(&policy.fleet, node).ok_or_else(|| {
            CliError::Invalid(format!("{}: no node {node:?} in [nodes]", path.display()))
        })
    };
    let targets = |nodes: &[String]| -> Result<Vec<Target>, CliError> {
        if nodes.is_empty() {
            return Ok(vec![target(&default_node)?]);
        }
        nodes.iter().map(|n| target(n)).collect()
    };
    let mut publish_to = targets(&args.pub_node)?;
    let mut subscribe_to = targets(&args.sub_node)?;
    for node in &args.measure_node {
        target(node)?;
    }
    if !args.profile.takes_rate_and_size() && (args.rate.is_some() || args.size.is_some()) {
        return Err(CliError::Invalid(format!(
            "--rate and --size apply to --profile raw and data; {} has its own shape",
            args.profile.name()
        )));
    }

    let ca = match (&args.ca, &policy.fleet.tls.ca) {
        (Some(ca), _) => ca.clone(),
        (None, Some(ca)) => ca.clone(),
        (None, None) => super::serve::dev_ca_cert_path(path),
    };
    if !ca.exists() {
        return Err(CliError::Invalid(format!(
            "CA certificate {} not found: start the fleet with `georelay serve` (it writes the dev CA there), or pass --ca",
            ca.display()
        )));
    }
    let roots = FleetPki::load_roots(&ca).map_err(|e| CliError::Invalid(e.to_string()))?;
    if !args.duration.is_finite() || args.duration <= 0.0 || args.duration > 86_400.0 {
        return Err(CliError::Invalid(
            "--duration must be more than 0 and at most 86400 seconds".into(),
        ));
    }
    if args.setup_timeout == 0 || args.setup_timeout > 600 {
        return Err(CliError::Invalid(
            "--setup-timeout must be 1 to 600 seconds".into(),
        ));
    }

    let first = publish_to.remove(0);
    let mut spec = LoadSpec::new(app, token_key, Arc::new(roots), first);
    spec.more_pub_nodes = publish_to;
    spec.subscribe_to = subscribe_to.remove(0);
    spec.more_sub_nodes = subscribe_to;
    spec.bind = args.bind;
    spec.profile = args.profile;
    spec.channels = args.channels;
    spec.publishers = args.publishers;
    spec.subscribers = args.subscribers;
    if args.rooms > 0 {
        spec.rooms = args.rooms;
        spec.room_size = args.room_size;
    }
    spec.idle = args.idle;
    spec.rate_pps = args.rate.unwrap_or(spec.rate_pps);
    spec.payload_size = args.size.unwrap_or(spec.payload_size);
    spec.duration = Duration::from_secs_f64(args.duration);
    spec.drain = Duration::from_millis(args.drain_ms);
    spec.setup_timeout = Duration::from_secs(args.setup_timeout);
    spec.payload_text = args.payload_text.clone();
    if !args.no_relay_cost {
        spec.admin = crate::loadgen::admin_addresses(&policy.fleet);
        spec.measure_nodes = args.measure_node.clone();
    }
    spec.validate()
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    Ok(spec)
}

fn print_human(s: &Summary) {
    println!(
        "{} app {}: {} publisher(s) on {} -> {} subscriber(s) on {}, {} channel(s), profile {} at {:.1} pps x {} B for {:.2} s",
        s.through,
        s.app,
        s.publishers,
        s.pub_node,
        s.subscribers,
        s.sub_node,
        s.channels,
        s.profile,
        s.rate_pps,
        s.payload_bytes,
        s.duration_s
    );
    println!(
        "sent {} (planned {}), expected {}, received {}, lost {} ({:.4}%), duplicates {}, late {}",
        s.sent,
        s.planned,
        s.expected,
        s.received,
        s.lost,
        s.loss_ratio * 100.0,
        s.duplicates,
        s.late
    );
    let ms = |v: Option<u64>| {
        v.map_or_else(
            || "-".to_string(),
            |us| format!("{:.3} ms", us as f64 / 1000.0),
        )
    };
    println!(
        "latency p50 {}, p99 {}, p99.9 {}, max {}; throughput {:.0} packets/s delivered",
        ms(s.latency_us.p50),
        ms(s.latency_us.p99),
        ms(s.latency_us.p999),
        ms(s.latency_us.max),
        s.throughput_pps
    );
    if let Some(k) = &s.keyframes {
        println!(
            "keyframe bursts: expected {}, received {}, lost {} ({:.4}%), p99 {}",
            k.expected,
            k.received,
            k.lost,
            k.loss_ratio * 100.0,
            ms(k.latency_us.p99)
        );
    }
    if let Some(idle) = &s.idle {
        println!(
            "idle sessions: {} of {} admitted in {:.2} s ({:.0} handshakes/s){}",
            idle.admitted,
            idle.asked,
            idle.setup_s,
            idle.handshakes_per_s,
            idle.relay_rss_bytes_per_session
                .map_or_else(String::new, |b| format!(
                    ", relay RSS {:.1} KiB per session",
                    b / 1024.0
                ))
        );
    }
    if let (Some(cpu), Some(per_packet)) = (s.relay_cpu_s, s.relay_cpu_us_per_packet) {
        println!(
            "relay ({}): CPU {:.2} s, {:.2} µs per delivered packet, {:.2} Gbit/s per core, RSS {:.1} MiB",
            s.relay_nodes.join(","),
            cpu,
            per_packet,
            s.gbps_per_relay_core.unwrap_or(0.0),
            s.relay_rss_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0)
        );
    }
    if let Some(error) = &s.relay_cost_error {
        println!("relay cost not measured: {error}");
    }
    if s.redirects > 0
        || !s.errors.is_empty()
        || !s.failures.is_empty()
        || s.unready_subscribers > 0
    {
        let list = |m: &std::collections::BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "redirects {}, errors [{}], failures [{}], unready subscribers {}",
            s.redirects,
            list(&s.errors),
            list(&s.failures),
            s.unready_subscribers
        );
    }
}
