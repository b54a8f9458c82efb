//! The write path: a non-blocking [`Recorder`] for the relay's hot path, and
//! the background tasks behind it.
//!
//! [`Recorder::record`] never waits: it `try_send`s into a bounded channel
//! and, when the channel is full (or metadata is shutting down), drops the
//! event and counts it (`georelay_metadata_events_dropped_total` and
//! [`Recorder::dropped`]). A writer task collects events and, every
//! `flush_interval_ms` (or when a batch reaches the channel capacity), writes
//! them to the SQLite store in one transaction per day file, on
//! `spawn_blocking`, and queues them for PostgreSQL when configured. Events
//! already past their retention are not written. A sweeper task applies the
//! retention policy at start and every `sweep_interval_secs`.
//!
//! [`MetadataHandle::shutdown`] drains the channel and flushes before
//! returning, so a clean shutdown loses nothing; a crash loses at most the
//! events of the current flush interval. Dropping the handle without calling
//! `shutdown` also makes the writer flush and stop, but nobody waits for it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::config::MetadataConfig;
use crate::ids::{AppId, RegionId};
use crate::metadata::MetadataError;
use crate::metadata::event::Event;
use crate::metadata::postgres::{DEFAULT_TABLE, PostgresSink, SinkQueue, SinkSettings};
use crate::metadata::retention::RetentionPolicy;
use crate::metadata::sqlite::SqliteStore;

/// Name of the counter of events dropped before reaching the writer.
pub const DROPPED_METRIC: &str = "georelay_metadata_events_dropped_total";
/// Name of the counter of events written to the local store.
pub const WRITTEN_METRIC: &str = "georelay_metadata_events_written_total";
/// Name of the counter of events lost to a failed local write.
pub const WRITE_FAILED_METRIC: &str = "georelay_metadata_write_failures_total";

/// The relay's handle for recording events. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Recorder {
    inner: Option<Arc<RecorderInner>>,
}

#[derive(Debug)]
struct RecorderInner {
    sender: mpsc::Sender<Event>,
    dropped: AtomicU64,
}

impl Recorder {
    /// A recorder that discards everything (metadata disabled). Discarded
    /// events are not counted as dropped.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// A recorder feeding a fresh bounded channel of `capacity` events, and
    /// the channel's receiving end (for embedding the recorder in another
    /// writer, tests and benches; [`start`] uses it with its own writer).
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Event>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let inner = RecorderInner {
            sender,
            dropped: AtomicU64::new(0),
        };
        (
            Self {
                inner: Some(Arc::new(inner)),
            },
            receiver,
        )
    }

    /// Queues an event for the store without ever waiting. When the queue is
    /// full the event is dropped and counted.
    pub fn record(&self, event: Event) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.sender.try_send(event).is_err() {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(DROPPED_METRIC).increment(1);
        }
    }

    /// Whether events go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Events dropped because the queue was full or closed.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |inner| inner.dropped.load(Ordering::Relaxed))
    }
}

/// Counters of the metadata pipeline, as of one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetadataStats {
    /// Events written to the local SQLite store.
    pub written_local: u64,
    /// Events whose local write failed (logged; they are lost locally).
    pub failed_local: u64,
    /// Events not written because they were already past their retention.
    pub expired: u64,
    /// Events dropped by [`Recorder::record`] (queue full or closed).
    pub dropped: u64,
    /// Events delivered to PostgreSQL.
    pub sent_postgres: u64,
    /// Events dropped because the PostgreSQL buffer was full.
    pub dropped_postgres: u64,
    /// Events still queued for PostgreSQL when it shut down.
    pub unsent_postgres: u64,
}

#[derive(Debug, Default)]
struct WriterCounters {
    written_local: AtomicU64,
    failed_local: AtomicU64,
    expired: AtomicU64,
}

enum Control {
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Owns the metadata tasks. Call [`MetadataHandle::shutdown`] on the way
/// out.
pub struct MetadataHandle {
    recorder: Recorder,
    running: Option<Running>,
}

struct Running {
    control: mpsc::Sender<Control>,
    writer: JoinHandle<()>,
    sweeper: Option<JoinHandle<()>>,
    postgres: Vec<PostgresSink>,
    counters: Arc<WriterCounters>,
    policy: Arc<RwLock<RetentionPolicy>>,
}

impl std::fmt::Debug for MetadataHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataHandle")
            .field("running", &self.running.is_some())
            .field("stats", &self.stats())
            .finish()
    }
}

/// The PostgreSQL connection strings of the stores a process writes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreDsns {
    /// The fleet store (`[metadata.postgres]`), for nodes of regions
    /// without their own store.
    pub fleet: Option<String>,
    /// Each region's own store (`[metadata.regions.<id>]`).
    pub regions: BTreeMap<RegionId, String>,
}

impl StoreDsns {
    /// Reads the connection strings of the stores that nodes of `regions`
    /// write to from the variables the config names. A missing variable is
    /// an error naming it.
    pub fn from_env(
        config: &MetadataConfig,
        regions: &BTreeSet<RegionId>,
    ) -> Result<Self, MetadataError> {
        let read = |env: &str| {
            std::env::var(env).map_err(|_| MetadataError::PostgresDsnMissing {
                env: env.to_owned(),
            })
        };
        let mut dsns = StoreDsns::default();
        if !config.enabled {
            return Ok(dsns);
        }
        for region in regions {
            match config.regions.get(region) {
                Some(store) => {
                    dsns.regions.insert(region.clone(), read(&store.dsn_env)?);
                }
                None => {
                    if let (Some(pg), None) = (&config.postgres, &dsns.fleet) {
                        dsns.fleet = Some(read(&pg.dsn_env)?);
                    }
                }
            }
        }
        Ok(dsns)
    }
}

/// Starts metadata collection: opens the local store (if enabled), runs a
/// first retention sweep, and spawns the writer, the periodic sweeper and the
/// PostgreSQL sinks. Must be called inside a tokio runtime.
///
/// Every configured PostgreSQL store is used (its variable must be set):
/// this suits a process that runs every node. A process that runs the
/// nodes of some regions only uses [`start_for_regions`].
///
/// `app_retention_days` is each app's `metadata_retention_days` (see
/// [`crate::metadata::app_retention_days`]).
pub async fn start(
    config: &MetadataConfig,
    app_retention_days: BTreeMap<AppId, u16>,
    clock: SharedClock,
) -> Result<(Recorder, MetadataHandle), MetadataError> {
    let mut regions: BTreeSet<RegionId> = config.regions.keys().cloned().collect();
    if config.postgres.is_some() {
        // Any region without its own store stands for "the fleet store".
        regions.insert(RegionId::from(""));
    }
    let dsns = StoreDsns::from_env(config, &regions)?;
    start_with_dsns(config, app_retention_days, clock, dsns).await
}

/// [`start`] for a process whose nodes are in `regions`: only the stores
/// those nodes write to are opened, and only their variables are read (a
/// US host needs no EU credentials).
pub async fn start_for_regions(
    config: &MetadataConfig,
    regions: &BTreeSet<RegionId>,
    app_retention_days: BTreeMap<AppId, u16>,
    clock: SharedClock,
) -> Result<(Recorder, MetadataHandle), MetadataError> {
    let dsns = StoreDsns::from_env(config, regions)?;
    start_with_dsns(config, app_retention_days, clock, dsns).await
}

/// [`start`] with the fleet store's connection string given directly
/// instead of read from the variable named by `dsn_env` (tests,
/// embedding). The DSN is used only when `config.postgres` is set.
pub async fn start_with_dsn(
    config: &MetadataConfig,
    app_retention_days: BTreeMap<AppId, u16>,
    clock: SharedClock,
    postgres_dsn: Option<String>,
) -> Result<(Recorder, MetadataHandle), MetadataError> {
    let dsns = StoreDsns {
        fleet: postgres_dsn,
        regions: BTreeMap::new(),
    };
    start_with_dsns(config, app_retention_days, clock, dsns).await
}

/// [`start`] with every connection string given directly. Events go to the
/// store of the recording node's region (`Event::region`): the region's own
/// store when `[metadata.regions.<id>]` configures one (and never the fleet
/// store then; without its DSN here they stay local only), else the fleet
/// store.
pub async fn start_with_dsns(
    config: &MetadataConfig,
    app_retention_days: BTreeMap<AppId, u16>,
    clock: SharedClock,
    dsns: StoreDsns,
) -> Result<(Recorder, MetadataHandle), MetadataError> {
    if !config.enabled {
        let recorder = Recorder::disabled();
        let handle = MetadataHandle {
            recorder: recorder.clone(),
            running: None,
        };
        return Ok((recorder, handle));
    }
    let policy = RetentionPolicy::new(
        config.retention_days,
        config.ip_retention_days,
        app_retention_days,
    );
    let store = if config.local_store() {
        let dir = config.dir.clone();
        let store = run_blocking(move || SqliteStore::open(dir)).await??;
        let (sweep_store, sweep_policy, now_ms) =
            (store.clone(), policy.clone(), clock.now_unix_ms());
        let report = run_blocking(move || sweep_store.sweep(now_ms, &sweep_policy)).await??;
        tracing::info!(?report, dir = %config.dir.display(), "metadata store opened and swept");
        Some(store)
    } else {
        None
    };
    let policy = Arc::new(RwLock::new(policy));
    let sweep_interval = Duration::from_secs(config.sweep_interval_secs.max(1));
    let spawn_sink = |dsn: String| {
        PostgresSink::spawn(SinkSettings {
            dsn,
            table: DEFAULT_TABLE.to_owned(),
            capacity: config.postgres_buffer_events(),
            sweep_interval,
            clock: Arc::clone(&clock),
            policy: Arc::clone(&policy),
        })
    };
    let fleet_sink = match (&config.postgres, dsns.fleet) {
        (Some(_), Some(dsn)) => Some(spawn_sink(dsn)),
        _ => None,
    };
    let regional_sinks: BTreeMap<RegionId, PostgresSink> = dsns
        .regions
        .into_iter()
        .filter(|(region, _)| config.regions.contains_key(region))
        .map(|(region, dsn)| (region, spawn_sink(dsn)))
        .collect();
    let routes = SinkRoutes {
        own_store: config.regions.keys().cloned().collect(),
        fleet: fleet_sink.as_ref().map(|sink| Arc::clone(&sink.queue)),
        regions: regional_sinks
            .iter()
            .map(|(region, sink)| (region.clone(), Arc::clone(&sink.queue)))
            .collect(),
    };
    let postgres: Vec<PostgresSink> = fleet_sink
        .into_iter()
        .chain(regional_sinks.into_values())
        .collect();

    let (recorder, receiver) = Recorder::channel(config.channel_capacity);
    let (control, control_rx) = mpsc::channel(4);
    let counters = Arc::new(WriterCounters::default());
    let writer = Writer {
        store: store.clone(),
        postgres: routes,
        clock: Arc::clone(&clock),
        policy: Arc::clone(&policy),
        counters: Arc::clone(&counters),
        max_batch: config.channel_capacity.max(1),
    };
    let flush_interval = Duration::from_millis(config.flush_interval_ms.max(1));
    let writer = tokio::spawn(writer.run(receiver, control_rx, flush_interval));
    let sweeper = store.map(|store| {
        tokio::spawn(sweep_periodically(
            store,
            Arc::clone(&policy),
            clock,
            sweep_interval,
        ))
    });
    let handle = MetadataHandle {
        recorder: recorder.clone(),
        running: Some(Running {
            control,
            writer,
            sweeper,
            postgres,
            counters,
            policy,
        }),
    };
    Ok((recorder, handle))
}

impl MetadataHandle {
    /// Writes everything recorded so far (by this task, or before this call
    /// in any task's program order) and waits until it is committed locally.
    pub async fn flush(&self) -> Result<(), MetadataError> {
        let Some(running) = &self.running else {
            return Ok(());
        };
        let (done, done_rx) = oneshot::channel();
        running
            .control
            .send(Control::Flush(done))
            .await
            .map_err(|_| MetadataError::WriterGone)?;
        done_rx.await.map_err(|_| MetadataError::WriterGone)
    }

    /// A handle that replaces the retention policy like
    /// [`MetadataHandle::set_retention`], for the relay's reload path.
    pub fn retention_setter(&self) -> impl Fn(RetentionPolicy) + Send + Sync + 'static {
        let shared = self.running.as_ref().map(|r| Arc::clone(&r.policy));
        move |policy| {
            if let Some(shared) = &shared {
                *shared.write().unwrap_or_else(PoisonError::into_inner) = policy;
            }
        }
    }

    /// Replaces the retention policy (after a config reload); the next sweep
    /// and the next flush use it.
    pub fn set_retention(&self, policy: RetentionPolicy) {
        if let Some(running) = &self.running {
            *running
                .policy
                .write()
                .unwrap_or_else(PoisonError::into_inner) = policy;
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> MetadataStats {
        let mut stats = MetadataStats {
            dropped: self.recorder.dropped(),
            ..MetadataStats::default()
        };
        if let Some(running) = &self.running {
            let counters = &running.counters;
            stats.written_local = counters.written_local.load(Ordering::Relaxed);
            stats.failed_local = counters.failed_local.load(Ordering::Relaxed);
            stats.expired = counters.expired.load(Ordering::Relaxed);
            for sink in &running.postgres {
                stats.sent_postgres += sink.queue.counters.sent.load(Ordering::Relaxed);
                stats.dropped_postgres += sink.queue.counters.dropped.load(Ordering::Relaxed);
            }
        }
        stats
    }

    /// Stops recording, writes every event still queued, stops the sweeper
    /// and gives PostgreSQL a bounded time to catch up. Returns the final
    /// counters. Events recorded after this starts are dropped and counted.
    pub async fn shutdown(mut self) -> Result<MetadataStats, MetadataError> {
        let Some(running) = self.running.take() else {
            return Ok(self.stats());
        };
        let (done, done_rx) = oneshot::channel();
        let sent = running.control.send(Control::Shutdown(done)).await;
        let writer_result = running.writer.await;
        if let Some(sweeper) = running.sweeper {
            sweeper.abort();
        }
        let counters = &running.counters;
        let mut stats = MetadataStats {
            written_local: counters.written_local.load(Ordering::Relaxed),
            failed_local: counters.failed_local.load(Ordering::Relaxed),
            expired: counters.expired.load(Ordering::Relaxed),
            dropped: self.recorder.dropped(),
            ..MetadataStats::default()
        };
        let sinks = running.postgres.into_iter().map(|sink| async move {
            let queue = Arc::clone(&sink.queue);
            let unsent = sink.shutdown().await;
            (unsent, queue)
        });
        for (unsent, queue) in futures_util::future::join_all(sinks).await {
            stats.unsent_postgres += unsent;
            stats.sent_postgres += queue.counters.sent.load(Ordering::Relaxed);
            stats.dropped_postgres += queue.counters.dropped.load(Ordering::Relaxed);
        }
        writer_result.map_err(|err| MetadataError::WriterFailed(err.to_string()))?;
        if sent.is_err() || done_rx.await.is_err() {
            return Err(MetadataError::WriterGone);
        }
        Ok(stats)
    }
}

impl Drop for MetadataHandle {
    fn drop(&mut self) {
        // Without `shutdown`, the writer still flushes and stops (its control
        // channel closes) and the PostgreSQL sink drains and stops (its
        // shutdown signal's sender is dropped); the sweeper must be stopped.
        if let Some(sweeper) = self
            .running
            .as_ref()
            .and_then(|running| running.sweeper.as_ref())
        {
            sweeper.abort();
        }
    }
}

/// Which PostgreSQL queue each region's events go to.
struct SinkRoutes {
    /// Regions configured with their own store: never the fleet store.
    own_store: BTreeSet<RegionId>,
    fleet: Option<Arc<SinkQueue>>,
    regions: BTreeMap<RegionId, Arc<SinkQueue>>,
}

impl SinkRoutes {
    fn queue_for(&self, region: &RegionId) -> Option<&Arc<SinkQueue>> {
        if self.own_store.contains(region) {
            self.regions.get(region)
        } else {
            self.fleet.as_ref()
        }
    }

    /// Hands each event to its region's queue.
    fn enqueue(&self, events: &[Event]) {
        if self.fleet.is_none() && self.regions.is_empty() {
            return;
        }
        // Keyed by the region whose own store it is; `None`: the fleet store.
        let mut by_queue: BTreeMap<Option<&RegionId>, (&Arc<SinkQueue>, Vec<Event>)> =
            BTreeMap::new();
        for event in events {
            if let Some(queue) = self.queue_for(&event.region) {
                let route = self.own_store.get(&event.region);
                by_queue
                    .entry(route)
                    .or_insert_with(|| (queue, Vec::new()))
                    .1
                    .push(event.clone());
            }
        }
        for (queue, events) in by_queue.into_values() {
            queue.enqueue(&events);
        }
    }
}

struct Writer {
    store: Option<SqliteStore>,
    postgres: SinkRoutes,
    clock: SharedClock,
    policy: Arc<RwLock<RetentionPolicy>>,
    counters: Arc<WriterCounters>,
    max_batch: usize,
}

impl Writer {
    async fn run(
        self,
        mut events: mpsc::Receiver<Event>,
        mut control: mpsc::Receiver<Control>,
        flush_interval: Duration,
    ) {
        let mut batch = Vec::new();
        let mut ticker = tokio::time::interval(flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let finished = loop {
            tokio::select! {
                received = events.recv_many(&mut batch, self.max_batch) => {
                    if received == 0 {
                        break None;
                    }
                    if batch.len() >= self.max_batch {
                        self.flush(&mut batch).await;
                    }
                }
                _ = ticker.tick() => self.flush(&mut batch).await,
                command = control.recv() => match command {
                    Some(Control::Flush(done)) => {
                        drain_ready(&mut events, &mut batch);
                        self.flush(&mut batch).await;
                        // The caller may have given up waiting; nothing to do then.
                        let _ = done.send(());
                    }
                    Some(Control::Shutdown(done)) => break Some(done),
                    None => break None,
                },
            }
        };
        events.close();
        drain_ready(&mut events, &mut batch);
        self.flush(&mut batch).await;
        if let Some(done) = finished {
            // The handle waits for this; if it is gone, nobody needs the signal.
            let _ = done.send(());
        }
    }

    async fn flush(&self, batch: &mut Vec<Event>) {
        if batch.is_empty() {
            return;
        }
        let now_ms = self.clock.now_unix_ms();
        let before = batch.len();
        {
            let policy = self.policy.read().unwrap_or_else(PoisonError::into_inner);
            batch.retain(|event| !policy.is_expired(event, now_ms));
        }
        let expired = (before - batch.len()) as u64;
        self.counters.expired.fetch_add(expired, Ordering::Relaxed);
        let events = std::mem::take(batch);
        self.postgres.enqueue(&events);
        let Some(store) = &self.store else {
            return;
        };
        let store = store.clone();
        let count = events.len() as u64;
        match run_blocking(move || store.write_batch(&events)).await {
            Ok(Ok(written)) => {
                self.counters
                    .written_local
                    .fetch_add(written as u64, Ordering::Relaxed);
                metrics::counter!(WRITTEN_METRIC).increment(written as u64);
            }
            Ok(Err(err)) => self.write_failed(count, &err),
            Err(err) => self.write_failed(count, &err),
        }
    }

    fn write_failed(&self, count: u64, err: &dyn std::fmt::Display) {
        tracing::error!(error = %err, events = count, "metadata write failed; events lost");
        self.counters
            .failed_local
            .fetch_add(count, Ordering::Relaxed);
        metrics::counter!(WRITE_FAILED_METRIC).increment(count);
    }
}

/// Moves every event already in the channel into `batch`, without waiting.
fn drain_ready(events: &mut mpsc::Receiver<Event>, batch: &mut Vec<Event>) {
    while let Ok(event) = events.try_recv() {
        batch.push(event);
    }
}

async fn sweep_periodically(
    store: SqliteStore,
    policy: Arc<RwLock<RetentionPolicy>>,
    clock: SharedClock,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; `start` has just swept.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now_ms = clock.now_unix_ms();
        let current = policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let store = store.clone();
        match run_blocking(move || store.sweep(now_ms, &current)).await {
            Ok(Ok(report)) => tracing::debug!(?report, "metadata sweep"),
            Ok(Err(err)) => tracing::error!(error = %err, "metadata sweep failed"),
            Err(err) => tracing::error!(error = %err, "metadata sweep failed"),
        }
    }
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, MetadataError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| MetadataError::WriterFailed(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::ids::{NodeId, RegionId};
    use crate::metadata::day::DAY_MS;
    use crate::metadata::event::EventKind;

    const NOW: u64 = 20_000 * DAY_MS;

    fn link_up(at_ms: u64) -> Event {
        Event {
            at_ms,
            node: NodeId::from("eu-fra-1"),
            region: RegionId::from("eu"),
            app: None,
            kind: EventKind::LinkUp {
                peer: NodeId::from("us-iad-1"),
                rtt_ms: 80.0,
            },
        }
    }

    fn config(dir: &std::path::Path) -> MetadataConfig {
        let mut config = MetadataConfig::default_for(dir);
        config.dir = dir.join("metadata");
        config.flush_interval_ms = 60_000;
        config
    }

    #[test]
    fn record_drops_and_counts_when_the_queue_is_full() {
        let (recorder, mut receiver) = Recorder::channel(3);
        for index in 0..5 {
            recorder.record(link_up(NOW + index));
        }
        assert_eq!(recorder.dropped(), 2);
        let clone = recorder.clone();
        clone.record(link_up(NOW));
        assert_eq!(recorder.dropped(), 3, "clones share the counter");
        let mut kept = Vec::new();
        while let Ok(event) = receiver.try_recv() {
            kept.push(event.at_ms);
        }
        assert_eq!(
            kept,
            vec![NOW, NOW + 1, NOW + 2],
            "the first events are kept"
        );
        receiver.close();
        recorder.record(link_up(NOW));
        assert_eq!(recorder.dropped(), 4, "a closed queue also counts");
    }

    #[test]
    fn a_disabled_recorder_discards_silently() {
        let recorder = Recorder::disabled();
        recorder.record(link_up(NOW));
        assert!(!recorder.is_enabled());
        assert_eq!(recorder.dropped(), 0);
    }

    #[tokio::test]
    async fn shutdown_writes_every_recorded_event() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let clock = Arc::new(ManualClock::new(NOW));
        let (recorder, handle) = start(&config, BTreeMap::new(), clock).await.unwrap();
        for index in 0..250 {
            recorder.record(link_up(NOW + index));
        }
        // Far too old to keep: never written.
        recorder.record(link_up(NOW - 31 * DAY_MS));
        let stats = handle.shutdown().await.unwrap();
        assert_eq!(stats.written_local, 250);
        assert_eq!(stats.expired, 1);
        assert_eq!(stats.dropped, 0);
        recorder.record(link_up(NOW));
        assert_eq!(recorder.dropped(), 1, "recording after shutdown is counted");
        let store = SqliteStore::open_existing(&config.dir).unwrap();
        let stored = store.read_events(0, None).unwrap();
        assert_eq!(stored.len(), 250);
        assert!(
            stored
                .iter()
                .zip(0..)
                .all(|(event, i)| event.at_ms == NOW + i)
        );
    }

    #[tokio::test]
    async fn flush_commits_before_returning() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let clock = Arc::new(ManualClock::new(NOW));
        let (recorder, handle) = start(&config, BTreeMap::new(), clock).await.unwrap();
        recorder.record(link_up(NOW));
        handle.flush().await.unwrap();
        assert_eq!(handle.stats().written_local, 1);
        let store = SqliteStore::open_existing(&config.dir).unwrap();
        assert_eq!(store.read_events(0, None).unwrap().len(), 1);
        handle.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn disabled_config_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.enabled = false;
        let clock = Arc::new(ManualClock::new(NOW));
        let (recorder, handle) = start(&config, BTreeMap::new(), clock).await.unwrap();
        recorder.record(link_up(NOW));
        assert_eq!(handle.shutdown().await.unwrap(), MetadataStats::default());
        assert!(!config.dir.exists());
    }

    #[tokio::test]
    async fn a_missing_dsn_variable_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.postgres = Some(crate::config::PostgresConfig {
            dsn_env: "GEORELAY_TEST_SURELY_UNSET_DSN".into(),
            buffer_events: 10,
            local_store: true,
        });
        let clock = Arc::new(ManualClock::new(NOW));
        let err = start(&config, BTreeMap::new(), clock).await.unwrap_err();
        assert!(
            matches!(err, MetadataError::PostgresDsnMissing { ref env } if env == "GEORELAY_TEST_SURELY_UNSET_DSN")
        );
    }

    #[tokio::test]
    async fn an_unreachable_postgres_buffers_boundedly_and_counts_drops() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.postgres = Some(crate::config::PostgresConfig {
            dsn_env: "UNUSED".into(),
            buffer_events: 5,
            local_store: true,
        });
        let clock = Arc::new(ManualClock::new(NOW));
        // Nothing listens on port 1 of loopback: every connect is refused.
        let dsn = "host=127.0.0.1 port=1 user=georelay dbname=georelay connect_timeout=1";
        let (recorder, handle) = start_with_dsn(&config, BTreeMap::new(), clock, Some(dsn.into()))
            .await
            .unwrap();
        for index in 0..8 {
            recorder.record(link_up(NOW + index));
        }
        handle.flush().await.unwrap();
        let stats = handle.shutdown().await.unwrap();
        assert_eq!(stats.written_local, 8, "the local store is unaffected");
        assert_eq!(stats.dropped_postgres, 3);
        assert_eq!(stats.unsent_postgres, 5);
        assert_eq!(stats.sent_postgres, 0);
    }
}
