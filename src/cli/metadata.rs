//! `georelay metadata report` and `georelay metadata audit`.
//!
//! Both read one store or several: the local SQLite store (the config's
//! `[metadata] dir`, or `--dir`), PostgreSQL stores given with `--dsn`
//! (repeatable), or the config's fleet stores: one per region
//! (`[metadata.regions.<id>]`) plus the fleet store (`[metadata.postgres]`),
//! or the fleet store alone when `local_store = false`. Each PostgreSQL
//! store computes its own aggregates (sums, counts, value counts, per-flow
//! totals) and only those are merged here, so no row leaves its region's
//! database. `report` then takes percentiles ([`ReportPartial`]); `audit`
//! judges every flow against the policy version it was recorded under
//! ([`crate::metadata::audit`]) and exits 3 when one broke it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use super::{CliError, CliResult, ConfigArg};
use crate::clock::{Clock, SystemClock};
use crate::config::Fleet;
use crate::ids::AppId;
use crate::metadata::audit::{self, Audit, AuditInputs, AuditQuery, Violation};
use crate::metadata::postgres::DEFAULT_TABLE;
use crate::metadata::report::ReportPartial;
use crate::metadata::{Event, GroupBy, PostgresStore, ReportQuery, SqliteStore};

/// Subcommands of `georelay metadata`.
#[derive(Debug, Subcommand)]
pub(crate) enum MetadataCommand {
    /// Usage and quality summary: sessions, participant-minutes, bytes,
    /// p50/p95 loss and RTT, refusals by code.
    Report(ReportArgs),
    /// Geofence audit of one app: per region and node, what each node
    /// carried (transit included) and whether the policy in force allowed
    /// it. Exit 0: no violation; 3: a violation; 2: bad input.
    Audit(AuditArgs),
}

/// Where the metadata is read from.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Read the PostgreSQL store at this connection string instead of the
    /// config's stores; repeat it for one store per region.
    #[arg(long, conflicts_with = "dir")]
    dsn: Vec<String>,
    /// Read the SQLite store in this directory instead of the config's.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The PostgreSQL parent table.
    #[arg(long, default_value = DEFAULT_TABLE)]
    table: String,
}

/// Arguments of `georelay metadata report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    stores: StoreArgs,
    /// How far back to report, e.g. `30m`, `24h`, `7d` (units s, m, h, d).
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    since: Duration,
    /// Only this app.
    #[arg(long)]
    app: Option<String>,
    /// One row per UTC day, per region or per node.
    #[arg(long, value_enum, default_value_t = ByArg::Day)]
    by: ByArg,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `georelay metadata audit`.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    stores: StoreArgs,
    /// The app to audit.
    #[arg(long)]
    app: String,
    /// How far back to audit, e.g. `30m`, `24h`, `7d` (units s, m, h, d).
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    since: Duration,
    /// Print one JSON object instead of the auditor's report.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ByArg {
    Day,
    Region,
    Node,
}

impl From<ByArg> for GroupBy {
    fn from(by: ByArg) -> Self {
        match by {
            ByArg::Day => GroupBy::Day,
            ByArg::Region => GroupBy::Region,
            ByArg::Node => GroupBy::Node,
        }
    }
}

/// One store to read.
enum Store {
    Sqlite(PathBuf),
    Postgres {
        /// How the store is named in output (never the DSN: it may hold a
        /// password).
        label: String,
        dsn: String,
    },
}

impl Store {
    fn label(&self) -> String {
        match self {
            Store::Sqlite(dir) => format!("sqlite {}", dir.display()),
            Store::Postgres { label, .. } => label.clone(),
        }
    }
}

pub(super) fn run(command: MetadataCommand) -> CliResult {
    match command {
        MetadataCommand::Report(args) => report(args),
        MetadataCommand::Audit(args) => run_audit(args),
    }
}

fn since_ms(since: Duration, now_ms: u64) -> u64 {
    now_ms.saturating_sub(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?)
}

fn report(args: ReportArgs) -> CliResult {
    let stores = stores(&args.stores)?;
    let query = ReportQuery {
        since_ms: since_ms(args.since, SystemClock.now_unix_ms()),
        app: args.app.as_deref().map(AppId::from),
        by: args.by.into(),
    };
    let runtime = runtime()?;
    let mut merged = ReportPartial::default();
    for store in &stores {
        let partial = match store {
            Store::Sqlite(dir) => {
                let events = read_sqlite(dir, query.since_ms, query.app.as_ref())
                    .map_err(CliError::Runtime)?;
                ReportPartial::from_events(&events, &query)
            }
            Store::Postgres { label, dsn } => runtime
                .block_on(async {
                    let store = PostgresStore::connect(dsn, &args.stores.table).await?;
                    store.report_partial(&query).await
                })
                .with_context(|| format!("reading {label}"))?,
        };
        merged.merge(partial);
    }
    let report = merged.finish(&query);
    if args.json {
        let json = serde_json::to_string(&report).context("encoding the report")?;
        println!("{json}");
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn run_audit(args: AuditArgs) -> CliResult {
    let stores = stores(&args.stores)?;
    for store in &stores {
        if let Store::Sqlite(dir) = store
            && !dir.is_dir()
        {
            return Err(CliError::Invalid(format!(
                "no metadata store at {} (pass --dir DIR, --dsn DSN or --config F)",
                dir.display()
            )));
        }
    }
    let now_ms = SystemClock.now_unix_ms();
    let query = AuditQuery {
        app: AppId::from(args.app.as_str()),
        since_ms: since_ms(args.since, now_ms),
        until_ms: now_ms,
    };
    let runtime = runtime()?;
    // One pass for the aggregates, a second only for the violating flows'
    // intervals; each runs inside its store.
    let mut connections = Vec::new();
    let mut inputs = AuditInputs::default();
    for store in &stores {
        match store {
            Store::Sqlite(dir) => {
                let events = SqliteStore::open_existing(dir)
                    .and_then(|store| {
                        store.read_events_of_kinds(query.policies_since_ms(), &AUDITED_KINDS)
                    })
                    .with_context(|| format!("reading the metadata store at {}", dir.display()))?;
                inputs.merge(AuditInputs::from_events(&events, &query));
                connections.push(Source::Events(events));
            }
            Store::Postgres { label, dsn } => {
                let (store, store_inputs) = runtime
                    .block_on(async {
                        let store = PostgresStore::connect(dsn, &args.stores.table).await?;
                        let store_inputs = store.audit_inputs(&query).await?;
                        Ok::<_, crate::metadata::PgError>((store, store_inputs))
                    })
                    .with_context(|| format!("reading {label}"))?;
                inputs.merge(store_inputs);
                connections.push(Source::Postgres(store));
            }
        }
    }
    let app_known =
        inputs.knows_app(&query.app) || config_knows_app(&args.stores.config.config, &args.app);
    if !app_known {
        return Err(CliError::Invalid(format!(
            "app {:?} has no records and is in no policy of this period or of {}",
            args.app,
            args.stores.config.config.display()
        )));
    }
    let violating = audit::judge(&inputs, &query.app);
    let mut violations: Vec<Violation> = Vec::new();
    if !violating.is_empty() {
        for (source, store) in connections.iter().zip(&stores) {
            let found = match source {
                Source::Events(events) => audit::violations_from_events(events, &query, &violating),
                Source::Postgres(pg) => runtime
                    .block_on(pg.audit_violations(&query, &violating))
                    .with_context(|| format!("reading {}", store.label()))?,
            };
            violations.extend(found);
        }
    }
    let labels = stores.iter().map(Store::label).collect();
    let audit = Audit::build(&query, &inputs, violations, labels);
    if args.json {
        let json = serde_json::to_string(&audit).context("encoding the audit")?;
        println!("{json}");
    } else {
        print!("{}", audit.to_text());
    }
    if audit.has_violations() {
        return Err(CliError::Findings(format!(
            "{} violation(s) of the geofence of {}",
            audit.violations.len(),
            args.app
        )));
    }
    Ok(())
}

/// The event kinds the audit reads.
const AUDITED_KINDS: [&str; 3] = ["traffic", "traffic_interval", "policy"];

/// A store kept open between the audit's two passes.
enum Source {
    Events(Vec<Event>),
    Postgres(PostgresStore),
}

fn config_knows_app(path: &Path, app: &str) -> bool {
    Fleet::load(path).is_ok_and(|fleet| fleet.app(app).is_some())
}

/// The stores the arguments name, or the config's.
fn stores(args: &StoreArgs) -> Result<Vec<Store>, CliError> {
    if !args.dsn.is_empty() {
        return Ok(args
            .dsn
            .iter()
            .enumerate()
            .map(|(index, dsn)| Store::Postgres {
                label: format!("postgres --dsn #{}", index + 1),
                dsn: dsn.clone(),
            })
            .collect());
    }
    if let Some(dir) = &args.dir {
        return Ok(vec![Store::Sqlite(dir.clone())]);
    }
    let path = &args.config.config;
    let fleet = Fleet::load(path).map_err(|errors| CliError::Invalid(errors.to_string()))?;
    let metadata = &fleet.metadata;
    let read = |env: &str, field: String, label: String| {
        std::env::var(env)
            .map(|dsn| Store::Postgres { label, dsn })
            .map_err(|_| {
                CliError::Invalid(format!(
                    "{}: {field}: environment variable {env} is not set (or pass --dsn / --dir)",
                    path.display()
                ))
            })
    };
    let mut stores = Vec::new();
    for (region, store) in &metadata.regions {
        stores.push(read(
            &store.dsn_env,
            format!("metadata.regions.{region}.dsn_env"),
            format!("postgres store of region {region}"),
        )?);
    }
    match &metadata.postgres {
        Some(pg) if !metadata.regions.is_empty() || !pg.local_store => stores.push(read(
            &pg.dsn_env,
            "metadata.postgres.dsn_env".to_owned(),
            "postgres fleet store".to_owned(),
        )?),
        _ => {}
    }
    if stores.is_empty() {
        stores.push(Store::Sqlite(metadata.dir.clone()));
    }
    Ok(stores)
}

fn read_sqlite(dir: &Path, since_ms: u64, app: Option<&AppId>) -> anyhow::Result<Vec<Event>> {
    let store = SqliteStore::open_existing(dir)
        .with_context(|| format!("no metadata store at {}", dir.display()))?;
    store
        .read_events(since_ms, app)
        .context("reading the metadata store")
}

/// Parses `90s`, `30m`, `24h`, `7d` (a bare number is seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m, 24h or 7d"))?;
    let seconds_per_unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use s, m, h or d"
            ));
        }
    };
    value
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
