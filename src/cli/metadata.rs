//! `georelay metadata report`: usage and quality from the metadata store.
//!
//! Reads the local SQLite store (the config's `[metadata] dir`, or `--dir`)
//! or the PostgreSQL fleet store (`--dsn`, or the config's
//! `[metadata.postgres]` when `local_store = false`), and prints one row per
//! day, region or node; both stores go through the same aggregator
//! ([`crate::metadata::build_report`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use super::{CliError, CliResult, ConfigArg};
use crate::clock::{Clock, SystemClock};
use crate::config::Fleet;
use crate::ids::AppId;
use crate::metadata::postgres::DEFAULT_TABLE;
use crate::metadata::{GroupBy, PostgresStore, ReportQuery, SqliteStore, build_report};

/// Subcommands of `georelay metadata`.
#[derive(Debug, Subcommand)]
pub(crate) enum MetadataCommand {
    /// Usage and quality summary: sessions, participant-minutes, bytes,
    /// p50/p95 loss and RTT, refusals by code.
    Report(ReportArgs),
}

/// Arguments of `georelay metadata report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    config: ConfigArg,
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
    /// Read PostgreSQL at this connection string instead of the config's store.
    #[arg(long, conflicts_with = "dir")]
    dsn: Option<String>,
    /// Read the SQLite store in this directory instead of the config's.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The PostgreSQL parent table.
    #[arg(long, default_value = DEFAULT_TABLE)]
    table: String,
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

/// Where the events are read from.
enum Source {
    Sqlite(PathBuf),
    Postgres(String),
}

pub(super) fn run(command: MetadataCommand) -> CliResult {
    match command {
        MetadataCommand::Report(args) => report(args),
    }
}

fn report(args: ReportArgs) -> CliResult {
    let source = match (&args.dsn, &args.dir) {
        (Some(dsn), _) => Source::Postgres(dsn.clone()),
        (None, Some(dir)) => Source::Sqlite(dir.clone()),
        (None, None) => source_from_config(&args.config.config)?,
    };
    let now_ms = SystemClock.now_unix_ms();
    let since_ms = now_ms.saturating_sub(u64::try_from(args.since.as_millis()).unwrap_or(u64::MAX));
    let query = ReportQuery {
        since_ms,
        app: args.app.as_deref().map(AppId::from),
        by: args.by.into(),
    };
    let events = match source {
        Source::Sqlite(dir) => read_sqlite(&dir, &query)?,
        Source::Postgres(dsn) => read_postgres(&dsn, &args.table, &query)?,
    };
    let report = build_report(&events, &query);
    if args.json {
        let json = serde_json::to_string(&report).context("encoding the report")?;
        println!("{json}");
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn source_from_config(path: &Path) -> Result<Source, CliError> {
    let fleet = Fleet::load(path).map_err(|errors| CliError::Invalid(errors.to_string()))?;
    match &fleet.metadata.postgres {
        Some(pg) if !pg.local_store => std::env::var(&pg.dsn_env)
            .map(Source::Postgres)
            .map_err(|_| {
                CliError::Invalid(format!(
                    "{}: metadata.postgres.dsn_env: environment variable {} is not set (or pass --dsn)",
                    path.display(),
                    pg.dsn_env
                ))
            }),
        _ => Ok(Source::Sqlite(fleet.metadata.dir.clone())),
    }
}

fn read_sqlite(dir: &Path, query: &ReportQuery) -> Result<Vec<crate::metadata::Event>, CliError> {
    let store = SqliteStore::open_existing(dir)
        .with_context(|| format!("no metadata store at {}", dir.display()))?;
    Ok(store
        .read_events(query.since_ms, query.app.as_ref())
        .context("reading the metadata store")?)
}

fn read_postgres(
    dsn: &str,
    table: &str,
    query: &ReportQuery,
) -> Result<Vec<crate::metadata::Event>, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let events = runtime.block_on(async {
        let store = PostgresStore::connect(dsn, table).await?;
        store.read_events(query.since_ms, query.app.as_ref()).await
    });
    Ok(events.context("reading the PostgreSQL metadata store")?)
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
