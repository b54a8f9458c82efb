//! `georelay serve`: run one node or the whole fleet in one process.
//!
//! Before anything else it disables core dumps (a core file would hold media
//! in flight); it refuses to start if it cannot. SIGHUP re-reads the
//! configuration; SIGTERM or ctrl-c drains and exits.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::{CliError, CliResult, ConfigArg};
use crate::clock::{SharedClock, SystemClock};
use crate::ids::NodeId;
use crate::relay::policy::{Policy, PolicyError};
use crate::relay::reload::ReloadSource;
use crate::tls::FleetPki;

/// Arguments of `georelay serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The node to run (a key of `[nodes.*]`).
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    node: Option<String>,
    /// Run every node of the file in this process (dev/demo).
    #[arg(long)]
    all: bool,
}

/// Where `serve` writes the dev CA's certificate (public; its key stays in
/// memory) so that SDK clients and `loadgen` in other processes can verify
/// the nodes.
pub(crate) fn dev_ca_cert_path(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("data")
        .join("dev-ca.pem")
}

pub(super) fn run(args: ServeArgs) -> CliResult {
    init_tracing();
    disable_core_dumps().map_err(|err| {
        CliError::Runtime(anyhow::anyhow!(
            "cannot disable core dumps, refusing to start: {err}"
        ))
    })?;
    let policy = Policy::load(&args.config.config).map_err(policy_error)?;
    let ids: Vec<NodeId> = match &args.node {
        Some(id) => {
            let node = policy.fleet.node(id).ok_or_else(|| {
                CliError::Invalid(format!(
                    "{}: no node {id:?} in [nodes]",
                    args.config.config.display()
                ))
            })?;
            vec![node.id.clone()]
        }
        None => Vec::new(),
    };
    crate::admin::check_admin_exposure(&policy.fleet, &ids)
        .map_err(|err| CliError::Invalid(err.to_string()))?;
    if policy.fleet.metadata.mlock {
        rustix::mm::mlockall(rustix::mm::MlockAllFlags::CURRENT | rustix::mm::MlockAllFlags::FUTURE).map_err(|err| {
            CliError::Runtime(anyhow::anyhow!(
                "[metadata] mlock = true but mlockall failed ({err}); raise RLIMIT_MEMLOCK (ulimit -l) or set mlock = false"
            ))
        })?;
    }
    let pki = match ids.as_slice() {
        [one] if policy.fleet.tls.ca.is_some() => FleetPki::from_fleet_for(&policy.fleet, one),
        _ => FleetPki::from_fleet(&policy.fleet),
    }
    .map_err(|err| CliError::Runtime(err.into()))?;
    if let Some(ca) = pki.dev_ca() {
        let path = dev_ca_cert_path(&args.config.config);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| CliError::Runtime(e.into()))?;
        }
        std::fs::write(&path, ca.ca_pem()).map_err(|e| CliError::Runtime(e.into()))?;
        println!(
            "dev CA generated in memory (fingerprint SHA-256 {}); its certificate is in {} (the key never leaves this process)",
            pki.ca_fingerprint,
            path.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(e.into()))?;
    runtime.block_on(serve(
        args.config.config,
        Arc::new(policy),
        Arc::new(pki),
        ids,
    ))
}

async fn serve(
    path: PathBuf,
    policy: Arc<Policy>,
    pki: Arc<FleetPki>,
    ids: Vec<NodeId>,
) -> CliResult {
    let metrics = crate::admin::install_metrics_recorder();
    let clock: SharedClock = Arc::new(SystemClock);
    // Residency: this process writes only to the stores of its nodes'
    // regions (`[metadata.region_stores]`), or the fleet store.
    let regions: std::collections::BTreeSet<crate::ids::RegionId> = policy
        .fleet
        .nodes
        .values()
        .filter(|node| ids.is_empty() || ids.contains(&node.id))
        .map(|node| node.region.clone())
        .collect();
    let (recorder, metadata) = crate::metadata::start_for_regions(
        &policy.fleet.metadata,
        &regions,
        crate::metadata::app_retention_days(&policy.fleet),
        clock.clone(),
    )
    .await
    .map_err(|e| CliError::Runtime(anyhow::anyhow!("{e}")))?;
    if recorder.is_enabled() {
        println!("metadata: {}", policy.fleet.metadata.dir.display());
    }
    let fleet = crate::relay::Fleet::start(path, policy, pki, ids, clock, recorder, metrics)
        .await
        .map_err(|e| CliError::Runtime(e.into()))?;
    let set_retention = metadata.retention_setter();
    fleet.reloader().on_applied(move |policy| {
        set_retention(crate::metadata::RetentionPolicy::from_fleet(&policy.fleet));
    });
    for node in &fleet.nodes {
        println!(
            "node {} ({}) listening on quic://{} admin http://{}",
            node.hub.me(),
            node.hub.region(),
            node.listen,
            node.admin
        );
        print_browser_addresses(node);
    }
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| CliError::Runtime(e.into()))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Runtime(e.into()))?;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                match Arc::clone(fleet.reloader()).reload(ReloadSource::ConfigFile).await {
                    Ok(report) => println!("{}", report.message),
                    Err(errors) => eprintln!("reload rejected, the old policy stays in force:\n{errors}"),
                }
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("draining");
    fleet.shutdown().await;
    match metadata.shutdown().await {
        Ok(stats) => println!("metadata flushed: {stats:?}"),
        Err(err) => eprintln!("metadata: {err}"),
    }
    Ok(())
}

/// `serve`'s line about a node's browser endpoints: the WebTransport URL,
/// the fallback's and the development certificate's hash.
fn print_browser_addresses(node: &crate::relay::RunningNode) {
    let mut line = format!(
        "node {} browsers: https://{}{}",
        node.hub.me(),
        node.listen,
        crate::browser::webtransport::WEBTRANSPORT_PATH
    );
    if let Some(ws) = node.websocket {
        line.push_str(&format!(
            " wss://{ws}{}",
            crate::browser::websocket::WS_PATH
        ));
    }
    if let Some(store) = &node.browser.cert {
        line.push_str(&format!(
            " (dev certificate sha256 {}: http://{}/certificate.sha256)",
            store.current().sha256_hex,
            node.admin
        ));
    }
    println!("{line}");
}

fn policy_error(err: PolicyError) -> CliError {
    match err {
        PolicyError::Config(errors) => CliError::Invalid(errors.to_string()),
        PolicyError::Secret(err) => CliError::Invalid(err.to_string()),
        PolicyError::Geo(err) => CliError::Invalid(err.to_string()),
    }
}

/// `RUST_LOG` controls levels; noisy dependencies are quiet by default.
/// Colours only on a terminal: a log file or the journal gets plain text.
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,quinn=warn,quinn_proto=warn,rustls=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
}

/// `PR_SET_DUMPABLE` 0 and `RLIMIT_CORE` 0: no core file can hold media.
pub(crate) fn disable_core_dumps() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    Ok(())
}
