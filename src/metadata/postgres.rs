//! The fleet store: every node's metadata in one PostgreSQL table,
//! partitioned by UTC day.
//!
//! The parent table (default `georelay_events`) is declared
//! `PARTITION BY RANGE (at_ms)`; each day is a partition named
//! `<table>_YYYYMMDD` covering `[day start, next day start)` in Unix ms,
//! created on demand before the first insert into it. Retention drops whole
//! partitions older than the fleet retention and deletes younger rows of
//! apps with a shorter retention (PostgreSQL has no `secure_delete`: deleted
//! tuples stay in the partition's files until vacuumed and overwritten, see
//! `docs/PRIVACY.md`; dropped partitions are unlinked at once).
//!
//! Inserts are multi-row `INSERT` statements inside one transaction per
//! batch. [`PostgresSink`] keeps a bounded buffer in front of the
//! connection and reconnects with exponential backoff; when the buffer is
//! full, new events are dropped and counted. Delivery is at least once: a
//! batch whose commit succeeded but whose acknowledgement was lost is sent
//! again after reconnecting.
//!
//! Connections use `NoTls`: point the DSN at a loopback server or a local
//! TLS-terminating proxy.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::clock::SharedClock;
use crate::error::ErrorCode;
use crate::ids::AppId;
use crate::metadata::audit::{
    AuditInputs, AuditQuery, COVERAGE_TOLERANCE_MS, FlowTotals, Island, ViolatingFlow, Violation,
};
use crate::metadata::day::{DAY_MS, UtcDay};
use crate::metadata::event::{DecodeError, Event};
use crate::metadata::report::{GroupBy, GroupPartial, ReportPartial, ReportQuery};
use crate::metadata::retention::{RetentionPolicy, SweepReport};

/// The default parent table name.
pub const DEFAULT_TABLE: &str = "georelay_events";
/// Rows per `INSERT` statement (8 parameters each, far below the 65535 limit).
const ROWS_PER_INSERT: usize = 1000;
/// Events taken from the sink's buffer per transaction.
const EVENTS_PER_TRANSACTION: usize = 5000;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a shutting-down sink keeps trying to deliver its buffer.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A failure of the PostgreSQL store.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The server or the connection failed.
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// The table name is not a plain lowercase SQL identifier.
    #[error("postgres table name {0:?} must match [a-z_][a-z0-9_]{{0,39}}")]
    TableName(String),
    /// An event could not be encoded.
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    /// A stored row could not be read back.
    #[error("postgres row: {0}")]
    Decode(#[from] DecodeError),
}

/// A connection to the fleet store.
pub struct PostgresStore {
    client: Client,
    table: String,
    partitions: BTreeSet<UtcDay>,
    connection: JoinHandle<()>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl PostgresStore {
    /// Connects and creates the parent table and its indexes if missing.
    pub async fn connect(dsn: &str, table: &str) -> Result<Self, PgError> {
        if !is_plain_identifier(table) {
            return Err(PgError::TableName(table.to_owned()));
        }
        let (client, connection) = tokio_postgres::connect(dsn, NoTls).await?;
        let connection = tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %err, "metadata postgres connection ended");
            }
        });
        let mut store = Self {
            client,
            table: table.to_owned(),
            partitions: BTreeSet::new(),
            connection,
        };
        store.create_schema().await?;
        store.partitions = store.partitions().await?.into_iter().collect();
        Ok(store)
    }

    /// The parent table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    async fn create_schema(&self) -> Result<(), PgError> {
        let table = &self.table;
        let statements = format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                at_ms       BIGINT NOT NULL,
                node        TEXT   NOT NULL,
                region      TEXT   NOT NULL,
                app         TEXT,
                kind        TEXT   NOT NULL,
                session_id  BIGINT,
                client_ip   TEXT,
                detail      JSONB  NOT NULL
            ) PARTITION BY RANGE (at_ms);
            CREATE INDEX IF NOT EXISTS {table}_app_at ON {table} (app, at_ms);
            CREATE INDEX IF NOT EXISTS {table}_kind_at ON {table} (kind, at_ms);
            CREATE INDEX IF NOT EXISTS {table}_session ON {table} (session_id);"
        );
        tolerate_concurrent_creation(self.client.batch_execute(&statements).await)
    }

    /// The days that have a partition, oldest first.
    pub async fn partitions(&self) -> Result<Vec<UtcDay>, PgError> {
        let rows = self
            .client
            .query(
                "SELECT c.relname FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = to_regclass($1)",
                &[&self.table],
            )
            .await?;
        let prefix = format!("{}_", self.table);
        let mut days: Vec<UtcDay> = rows
            .iter()
            .filter_map(|row| {
                let name: String = row.get(0);
                UtcDay::parse_compact(name.strip_prefix(&prefix)?)
            })
            .collect();
        days.sort_unstable();
        Ok(days)
    }

    fn partition_name(&self, day: UtcDay) -> String {
        format!("{}_{}", self.table, day.compact())
    }

    async fn ensure_partition(&mut self, day: UtcDay) -> Result<(), PgError> {
        if self.partitions.contains(&day) {
            return Ok(());
        }
        let statement = format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})",
            self.partition_name(day),
            self.table,
            day.start_ms(),
            day.end_ms()
        );
        tolerate_concurrent_creation(self.client.batch_execute(&statement).await)?;
        self.partitions.insert(day);
        Ok(())
    }

    /// Inserts events in one transaction, creating partitions as needed.
    /// Returns the number of rows written.
    pub async fn write_batch(&mut self, events: &[Event]) -> Result<usize, PgError> {
        let days: BTreeSet<UtcDay> = events
            .iter()
            .map(|event| UtcDay::of_unix_ms(event.at_ms))
            .collect();
        for day in days {
            self.ensure_partition(day).await?;
        }
        let rows = events
            .iter()
            .map(Event::to_row)
            .collect::<Result<Vec<_>, _>>()?;
        let transaction = self.client.transaction().await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut sql = format!(
                "INSERT INTO {} (at_ms, node, region, app, kind, session_id, client_ip, detail) VALUES ",
                self.table
            );
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 8);
            for (index, row) in chunk.iter().enumerate() {
                let base = index * 8;
                if index > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(${},${},${},${},${},${},${},(${}::text)::jsonb)",
                    base + 1,
                    base + 2,
                    base + 3,
                    base + 4,
                    base + 5,
                    base + 6,
                    base + 7,
                    base + 8
                ));
                params.extend_from_slice(&[
                    &row.at_ms,
                    &row.node,
                    &row.region,
                    &row.app,
                    &row.kind,
                    &row.session_id,
                    &row.client_ip,
                    &row.detail,
                ]);
            }
            transaction.execute(sql.as_str(), &params).await?;
        }
        transaction.commit().await?;
        Ok(rows.len())
    }

    /// Every stored event at or after `since_ms` (of `app`, if given), in
    /// time order.
    pub async fn read_events(
        &self,
        since_ms: u64,
        app: Option<&AppId>,
    ) -> Result<Vec<Event>, PgError> {
        let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
        let app = app.map(|app| app.as_str().to_owned());
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT at_ms, node, region, app, client_ip, detail::text FROM {}
                     WHERE at_ms >= $1 AND ($2::text IS NULL OR app = $2)
                     ORDER BY at_ms",
                    self.table
                ),
                &[&since, &app],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let app: Option<String> = row.get(3);
                let client_ip: Option<String> = row.get(4);
                let detail: String = row.get(5);
                Event::from_columns(
                    row.get(0),
                    row.get::<_, &str>(1),
                    row.get::<_, &str>(2),
                    app.as_deref(),
                    client_ip.as_deref(),
                    &detail,
                )
                .map_err(PgError::from)
            })
            .collect()
    }

    /// Applies `policy` at `now_ms`: drops partitions wholly older than the
    /// fleet retention, deletes expired rows from younger ones (per app) and
    /// removes client addresses older than the IP retention.
    pub async fn sweep(
        &mut self,
        now_ms: u64,
        policy: &RetentionPolicy,
    ) -> Result<SweepReport, PgError> {
        let mut report = SweepReport::default();
        let fleet_cutoff = policy.fleet_cutoff_ms(now_ms);
        for day in self.partitions().await? {
            if day.end_ms() <= fleet_cutoff {
                let statement = format!("DROP TABLE IF EXISTS {}", self.partition_name(day));
                self.client.batch_execute(&statement).await?;
                self.partitions.remove(&day);
                report.days_dropped.push(day);
            }
        }
        let table = &self.table;
        let transaction = self.client.transaction().await?;
        report.rows_deleted += transaction
            .execute(
                &format!("DELETE FROM {table} WHERE at_ms < $1"),
                &[&as_i64(fleet_cutoff)],
            )
            .await?;
        for (app, cutoff) in policy.shorter_app_cutoffs(now_ms) {
            report.rows_deleted += transaction
                .execute(
                    &format!("DELETE FROM {table} WHERE app = $1 AND at_ms < $2"),
                    &[&app.as_str(), &as_i64(cutoff)],
                )
                .await?;
        }
        report.addresses_removed += transaction
            .execute(
                &format!(
                    "UPDATE {table} SET client_ip = NULL WHERE client_ip IS NOT NULL AND at_ms < $1"
                ),
                &[&as_i64(policy.ip_cutoff_ms(now_ms))],
            )
            .await?;
        transaction.commit().await?;
        Ok(report)
    }
}

impl PostgresStore {
    /// The report's figures for `query`, computed by the server: sums,
    /// counts and sample value counts per group, never a row.
    pub async fn report_partial(&self, query: &ReportQuery) -> Result<ReportPartial, PgError> {
        let key = match query.by {
            GroupBy::Day => "(at_ms / 86400000)::text",
            GroupBy::Region => "region",
            GroupBy::Node => "node",
        };
        let from = format!(
            "FROM {} WHERE at_ms >= $1 AND ($2::text IS NULL OR app = $2)",
            self.table
        );
        let since = as_i64(query.since_ms);
        let app = query.app.as_ref().map(|app| app.as_str().to_owned());
        let client = &self.client;
        let run = |sql: String| {
            let app = app.clone();
            async move { client.query(&sql, &[&since, &app]).await }
        };
        let mut partial = ReportPartial::default();
        let by = query.by;
        for row in run(format!("SELECT DISTINCT {key} {from}")).await? {
            group_of(&mut partial, by, row.get(0))?;
        }
        for row in run(format!(
            "SELECT {key}, count(*) {from} AND kind = 'session_opened' GROUP BY 1"
        ))
        .await?
        {
            group_of(&mut partial, by, row.get(0))?.sessions = as_u64(row.get(1));
        }
        for row in run(format!(
            "SELECT {key}, sum((detail->>'duration_ms')::bigint)::bigint,
                    sum((detail->>'bytes_in')::bigint)::bigint,
                    sum((detail->>'bytes_out')::bigint)::bigint
             {from} AND kind = 'session_closed' GROUP BY 1"
        ))
        .await?
        {
            let figures = group_of(&mut partial, by, row.get(0))?;
            figures.duration_ms = as_u64(row.get(1));
            figures.bytes_in = as_u64(row.get(2));
            figures.bytes_out = as_u64(row.get(3));
        }
        for row in run(format!(
            "SELECT {key}, detail->>'close_code', count(*)
             {from} AND kind = 'session_closed' AND detail->>'close_code' IS NOT NULL
             GROUP BY 1, 2"
        ))
        .await?
        {
            group_of(&mut partial, by, row.get(0))?
                .close_codes
                .insert(row.get(1), as_u64(row.get(2)));
        }
        for (field, is_loss) in [("loss_ratio", true), ("rtt_ms", false)] {
            for row in run(format!(
                "SELECT {key}, (detail->>'{field}')::float8, count(*)
                 {from} AND kind = 'quality_sample' GROUP BY 1, 2"
            ))
            .await?
            {
                let figures = group_of(&mut partial, by, row.get(0))?;
                let samples = if is_loss {
                    &mut figures.losses
                } else {
                    &mut figures.rtts
                };
                samples.add(row.get(1), as_u64(row.get(2)));
            }
        }
        let refusal = format!(
            "CASE detail->'decision'->>'decision'
                 WHEN 'denied' THEN detail->'decision'->>'code'
                 WHEN 'redirected' THEN '{}'
                 WHEN 'route_unavailable' THEN '{}'
                 WHEN 'revoked' THEN '{}'
             END",
            ErrorCode::GeofenceRedirect.name(),
            ErrorCode::RouteUnavailable.name(),
            ErrorCode::GeofenceRevoked.name()
        );
        for row in run(format!(
            "SELECT group_key, code, count(*) FROM (
                 SELECT {key} AS group_key, {refusal} AS code {from} AND kind = 'geofence'
             ) AS decisions WHERE code IS NOT NULL GROUP BY 1, 2"
        ))
        .await?
        {
            group_of(&mut partial, by, row.get(0))?
                .refusals
                .insert(row.get(1), as_u64(row.get(2)));
        }
        Ok(partial)
    }

    /// The audit's aggregates, computed by the server: no row leaves the
    /// database, only sums per flow and the spans each node reported.
    pub async fn audit_inputs(&self, query: &AuditQuery) -> Result<AuditInputs, PgError> {
        let table = &self.table;
        let app = query.app.as_str();
        let (since, until) = (as_i64(query.since_ms), as_i64(query.until_ms));
        let policies = self
            .client
            .query(
                &format!(
                    "SELECT DISTINCT ON (detail->>'version') detail->>'version', (detail->'policy')::text
                     FROM {table} WHERE kind = 'policy' AND at_ms >= $1 AND at_ms < $2"
                ),
                &[&as_i64(query.policies_since_ms()), &until],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let flows = self
            .client
            .query(
                &format!(
                    "SELECT node, region, detail->>'policy_version', detail->>'direction',
                            detail->>'peer', sum((detail->>'packets')::bigint)::bigint,
                            sum((detail->>'bytes')::bigint)::bigint
                     FROM {table}
                     WHERE kind = 'traffic' AND app = $1 AND at_ms >= $2 AND at_ms < $3
                     GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
                ),
                &[&app, &since, &until],
            )
            .await?
            .iter()
            .map(|row| FlowTotals {
                node: row.get(0),
                region: row.get(1),
                policy_version: row.get(2),
                direction: row.get(3),
                peer: row.get(4),
                packets: as_u64(row.get(5)),
                bytes: as_u64(row.get(6)),
            })
            .collect();
        // Gaps and islands: an interval starting more than the tolerance
        // after the previous one ended starts a new island.
        let islands = self
            .client
            .query(
                &format!(
                    "SELECT node, min(region), min(at_ms), max(end_ms) FROM (
                         SELECT node, region, at_ms, end_ms,
                                sum(starts_island) OVER (PARTITION BY node ORDER BY at_ms, end_ms) AS island
                         FROM (
                             SELECT node, region, at_ms, end_ms,
                                    CASE WHEN at_ms <= max(end_ms) OVER (
                                             PARTITION BY node ORDER BY at_ms, end_ms
                                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) + $3
                                         THEN 0 ELSE 1 END AS starts_island
                             FROM (SELECT node, region, at_ms,
                                          at_ms + (detail->>'interval_ms')::bigint AS end_ms
                                   FROM {table}
                                   WHERE kind = 'traffic_interval' AND at_ms >= $1 AND at_ms < $2) AS markers
                         ) AS flagged
                     ) AS numbered
                     GROUP BY node, island ORDER BY node, 3"
                ),
                &[&since, &until, &as_i64(COVERAGE_TOLERANCE_MS)],
            )
            .await?
            .iter()
            .map(|row| Island {
                node: row.get(0),
                region: row.get(1),
                start_ms: as_u64(row.get(2)),
                end_ms: as_u64(row.get(3)),
            })
            .collect();
        Ok(AuditInputs {
            policies,
            flows,
            islands,
        })
    }

    /// The violating flows' records summed per interval, by the server.
    pub async fn audit_violations(
        &self,
        query: &AuditQuery,
        violating: &[ViolatingFlow],
    ) -> Result<Vec<Violation>, PgError> {
        let statement = format!(
            "SELECT region, at_ms, sum((detail->>'packets')::bigint)::bigint,
                    sum((detail->>'bytes')::bigint)::bigint
             FROM {}
             WHERE kind = 'traffic' AND app = $1 AND at_ms >= $2 AND at_ms < $3 AND node = $4
               AND detail->>'policy_version' = $5 AND detail->>'direction' = $6
               AND detail->>'peer' = $7
             GROUP BY region, at_ms ORDER BY at_ms",
            self.table
        );
        let (since, until) = (as_i64(query.since_ms), as_i64(query.until_ms));
        let mut violations = Vec::new();
        for flow in violating {
            let rows = self
                .client
                .query(
                    &statement,
                    &[
                        &query.app.as_str(),
                        &since,
                        &until,
                        &flow.node,
                        &flow.policy_version,
                        &flow.direction,
                        &flow.peer,
                    ],
                )
                .await?;
            violations.extend(rows.iter().map(|row| Violation {
                node: flow.node.clone(),
                region: row.get(0),
                interval_start_ms: as_u64(row.get(1)),
                packets: as_u64(row.get(2)),
                bytes: as_u64(row.get(3)),
                policy_version: flow.policy_version.clone(),
                direction: flow.direction.clone(),
                peer: flow.peer.clone(),
                reason: flow.reason.clone(),
            }));
        }
        Ok(violations)
    }
}

/// The group a store's key (a day number for [`GroupBy::Day`]) stands for.
fn group_of(
    partial: &mut ReportPartial,
    by: GroupBy,
    key: String,
) -> Result<&mut GroupPartial, PgError> {
    let key = match by {
        GroupBy::Day => key
            .parse::<u64>()
            .map(|day| UtcDay::of_unix_ms(day * DAY_MS).to_string())
            .map_err(|_| DecodeError::OutOfRange("at_ms"))?,
        GroupBy::Region | GroupBy::Node => key,
    };
    Ok(partial.groups.entry(key).or_default())
}

fn as_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// `CREATE ... IF NOT EXISTS` can still fail when two nodes create the same
/// object at the same moment; the object exists either way.
fn tolerate_concurrent_creation(result: Result<(), tokio_postgres::Error>) -> Result<(), PgError> {
    match result {
        Err(err)
            if matches!(
                err.code(),
                Some(&SqlState::DUPLICATE_TABLE)
                    | Some(&SqlState::UNIQUE_VIOLATION)
                    | Some(&SqlState::DUPLICATE_OBJECT)
            ) =>
        {
            Ok(())
        }
        other => other.map_err(PgError::from),
    }
}

fn is_plain_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && name.len() <= 40
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

fn as_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Counters of a [`PostgresSink`].
#[derive(Debug, Default)]
pub(crate) struct SinkCounters {
    pub(crate) enqueued: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

/// The bounded buffer between the writer and the PostgreSQL task.
pub(crate) struct SinkQueue {
    buffer: Mutex<VecDeque<Event>>,
    capacity: usize,
    notify: Notify,
    pub(crate) counters: SinkCounters,
}

impl SinkQueue {
    /// Queues events; those that do not fit are dropped and counted.
    pub(crate) fn enqueue(&self, events: &[Event]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let room = self.capacity.saturating_sub(buffer.len());
        let accepted = events.len().min(room);
        buffer.extend(events[..accepted].iter().cloned());
        drop(buffer);
        self.counters
            .enqueued
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let dropped = (events.len() - accepted) as u64;
        if dropped > 0 {
            self.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
            metrics::counter!("georelay_metadata_postgres_dropped_total").increment(dropped);
        }
        self.notify.notify_one();
    }

    fn take(&self, limit: usize) -> Vec<Event> {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let count = buffer.len().min(limit);
        buffer.drain(..count).collect()
    }

    /// Puts an undelivered batch back at the front, keeping order.
    fn put_back(&self, events: Vec<Event>) {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        for event in events.into_iter().rev() {
            buffer.push_front(event);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The background task that delivers queued events to PostgreSQL and runs
/// the fleet store's retention sweep.
pub(crate) struct PostgresSink {
    pub(crate) queue: Arc<SinkQueue>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What the sink task needs.
pub(crate) struct SinkSettings {
    pub(crate) dsn: String,
    pub(crate) table: String,
    pub(crate) capacity: usize,
    pub(crate) sweep_interval: Duration,
    pub(crate) clock: SharedClock,
    pub(crate) policy: Arc<std::sync::RwLock<RetentionPolicy>>,
}

impl PostgresSink {
    pub(crate) fn spawn(settings: SinkSettings) -> Self {
        let queue = Arc::new(SinkQueue {
            buffer: Mutex::new(VecDeque::new()),
            capacity: settings.capacity,
            notify: Notify::new(),
            counters: SinkCounters::default(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(run_sink(settings, Arc::clone(&queue), shutdown_rx));
        Self {
            queue,
            shutdown,
            task,
        }
    }

    /// Stops the task after it has tried, for at most [`SHUTDOWN_GRACE`],
    /// to deliver everything queued. Returns the number of events that were
    /// queued but not delivered.
    pub(crate) async fn shutdown(self) -> u64 {
        self.shutdown.send_replace(true);
        let abort = self.task.abort_handle();
        match tokio::time::timeout(SHUTDOWN_GRACE, self.task).await {
            Err(_) => {
                abort.abort();
                tracing::warn!("metadata postgres sink did not drain in time");
            }
            Ok(Err(err)) => tracing::error!(error = %err, "metadata postgres task failed"),
            Ok(Ok(())) => {}
        }
        let counters = &self.queue.counters;
        counters
            .enqueued
            .load(Ordering::Relaxed)
            .saturating_sub(counters.sent.load(Ordering::Relaxed))
            .saturating_sub(counters.dropped.load(Ordering::Relaxed))
    }
}

async fn run_sink(
    settings: SinkSettings,
    queue: Arc<SinkQueue>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_START;
    let mut give_up_at = None;
    loop {
        if stopping(&shutdown) {
            let deadline =
                *give_up_at.get_or_insert_with(|| crate::clock::timer_now() + SHUTDOWN_GRACE);
            if queue.len() == 0 {
                return;
            }
            if crate::clock::timer_now() >= deadline {
                tracing::warn!(unsent = queue.len(), "metadata postgres sink gave up");
                return;
            }
        }
        let connect = PostgresStore::connect(&settings.dsn, &settings.table);
        let failure = match tokio::time::timeout(BACKOFF_MAX, connect).await {
            Ok(Ok(store)) => {
                backoff = BACKOFF_START;
                match deliver(store, &settings, &queue, &mut shutdown).await {
                    Ok(()) => continue,
                    Err(err) => err.to_string(),
                }
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => "connect timed out".to_owned(),
        };
        tracing::warn!(
            error = %failure,
            retry_in_ms = backoff.as_millis() as u64,
            "metadata postgres unavailable"
        );
        if stopping(&shutdown) {
            tokio::time::sleep(backoff).await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => {}
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Delivers queued events and sweeps until shutdown (buffer drained) or an
/// error.
async fn deliver(
    mut store: PostgresStore,
    settings: &SinkSettings,
    queue: &SinkQueue,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), PgError> {
    let mut sweep_timer = tokio::time::interval(settings.sweep_interval);
    sweep_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        loop {
            let batch = queue.take(EVENTS_PER_TRANSACTION);
            if batch.is_empty() {
                break;
            }
            match store.write_batch(&batch).await {
                Ok(written) => {
                    queue
                        .counters
                        .sent
                        .fetch_add(written as u64, Ordering::Relaxed);
                }
                Err(err) => {
                    queue.put_back(batch);
                    return Err(err);
                }
            }
        }
        if stopping(shutdown) {
            return Ok(());
        }
        tokio::select! {
            _ = queue.notify.notified() => {}
            _ = shutdown.changed() => {}
            _ = sweep_timer.tick() => {
                let now_ms = settings.clock.now_unix_ms();
                let policy = settings
                    .policy
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let report = store.sweep(now_ms, &policy).await?;
                tracing::debug!(?report, "metadata postgres sweep");
            }
        }
    }
}

/// Whether the sink was told to stop, or its owner is gone.
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        assert!(is_plain_identifier("georelay_events"));
        assert!(is_plain_identifier("_t1"));
        assert!(!is_plain_identifier("1t"));
        assert!(!is_plain_identifier("t; DROP TABLE x"));
        assert!(!is_plain_identifier("Events"));
        assert!(!is_plain_identifier(""));
        assert!(!is_plain_identifier(&"a".repeat(41)));
    }
}
