//! `georelay loadgen`: synthetic SDK clients against a running fleet.
//!
//! Maps the flags of DESIGN.md's contract onto a [`LoadSpec`], runs
//! [`crate::loadgen::run`] and prints the [`Summary`]: one JSON object with
//! `--json`, a short human summary otherwise. Refused clients do not fail
//! the command; they are counted in the summary's `errors`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{CliError, CliResult, ConfigArg};
use crate::ids::AppId;
use crate::loadgen::{LoadSpec, Summary};
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
    /// Node the publishers connect to (default: --node).
    #[arg(long)]
    pub_node: Option<String>,
    /// Node the subscribers connect to (default: --node).
    #[arg(long)]
    sub_node: Option<String>,
    /// Channels the clients are spread over, round robin.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Publishers, one track each.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscribers, each in one channel.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Packets per second, per publisher.
    #[arg(long, value_name = "PPS", default_value_t = 50)]
    rate: u32,
    /// Media payload bytes per packet, including the 20-byte timing header.
    #[arg(long, value_name = "BYTES", default_value_t = 200)]
    size: usize,
    /// How long the publishers send, in seconds (fractions allowed).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,
    /// The longest wait for in-flight packets after the publishers stop, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    drain_ms: u64,
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
    /// Print one JSON object instead of a human summary.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: LoadgenArgs) -> CliResult {
    let spec = build_spec(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(e.into()))?;
    let summary = runtime
        .block_on(crate::loadgen::run(&spec))
        .map_err(|err| match err {
            crate::loadgen::LoadError::Histogram(_) => CliError::Runtime(err.into()),
            other => CliError::Invalid(other.to_string()),
        })?;
    if args.json {
        let text = serde_json::to_string(&summary).map_err(|e| CliError::Runtime(e.into()))?;
        println!("{text}");
    } else {
        print_human(&summary);
    }
    Ok(())
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
    let target = |node: &Option<String>| {
        let node = node.as_deref().unwrap_or(&default_node);
        crate::loadgen::node_target(&policy.fleet, node).ok_or_else(|| {
            CliError::Invalid(format!("{}: no node {node:?} in [nodes]", path.display()))
        })
    };
    let publish_to = target(&args.pub_node)?;
    let subscribe_to = target(&args.sub_node)?;

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

    let mut spec = LoadSpec::new(app, token_key, Arc::new(roots), publish_to);
    spec.subscribe_to = subscribe_to;
    spec.bind = args.bind;
    spec.channels = args.channels;
    spec.publishers = args.publishers;
    spec.subscribers = args.subscribers;
    spec.rate_pps = args.rate;
    spec.payload_size = args.size;
    spec.duration = Duration::from_secs_f64(args.duration);
    spec.drain = Duration::from_millis(args.drain_ms);
    spec.payload_text = args.payload_text.clone();
    spec.validate()
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    Ok(spec)
}

fn print_human(s: &Summary) {
    println!(
        "app {}: {} publisher(s) on {} -> {} subscriber(s) on {}, {} channel(s), {} pps x {} B for {:.2} s",
        s.app,
        s.publishers,
        s.pub_node,
        s.subscribers,
        s.sub_node,
        s.channels,
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
