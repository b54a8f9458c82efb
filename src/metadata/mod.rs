//! Operational metadata: what each node records about sessions, quality,
//! geofence decisions and mesh links, where it is stored, and how it is
//! deleted after at most 30 days.
//!
//! # Layout
//! - [`event`]: the [`Event`] types: the only things that are recorded.
//! - [`ip`]: [`minimise`], the only way a client address enters an event.
//! - [`recorder`]: [`start`], the non-blocking [`Recorder`] and the writer,
//!   sweeper and PostgreSQL tasks behind [`MetadataHandle`].
//! - [`sqlite`]: the embedded store, one SQLite file per UTC day.
//! - [`postgres`]: the fleet store, one table partitioned by day.
//! - [`retention`]: the [`RetentionPolicy`] both stores apply.
//! - [`sweeper`]: [`Sweeper`], a retention pass on demand (tests, tools).
//! - [`report`]: the usage and quality report shared by both stores.
//! - [`audit`]: the geofence audit over traffic records, built from
//!   per-store aggregates.
//! - [`traffic`]: [`TrafficRecorder`], the per-interval traffic records the
//!   relay feeds with its counters.
//! - [`day`]: UTC days, the partition unit.
//!
//! The schema and flush/crash semantics are in `docs/METADATA.md`; what is
//! and is not at rest is in `docs/PRIVACY.md`.

pub mod audit;
pub mod day;
pub mod event;
pub mod ip;
pub mod postgres;
pub mod recorder;
pub mod report;
pub mod retention;
pub mod sqlite;
pub mod sweeper;
pub mod traffic;

pub use audit::{Audit, AuditInputs, AuditQuery};
pub use event::{Event, EventKind, GeofenceDecision, SdkInfo, SessionRole, TrackKind};
pub use ip::{MinimisedIp, minimise};
pub use postgres::{PgError, PostgresStore};
pub use recorder::{
    MetadataHandle, MetadataStats, Recorder, StoreDsns, start, start_for_regions, start_with_dsn,
    start_with_dsns,
};
pub use report::{GroupBy, Report, ReportQuery, build_report};
pub use retention::{RetentionPolicy, SweepReport, app_retention_days};
pub use sqlite::{SqliteStore, StoreError};
pub use sweeper::Sweeper;
pub use traffic::{
    Direction, TrafficCounter, TrafficCounts, TrafficKey, TrafficMeter, TrafficPeer,
    TrafficRecorder, TrafficSnapshot,
};

/// A failure to start or stop metadata collection.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The local store could not be opened or swept.
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
    /// A store's `dsn_env` (`[metadata.postgres]` or
    /// `[metadata.regions.<id>]`) names an unset variable.
    #[error("environment variable {env} (dsn_env of a metadata store) is not set")]
    PostgresDsnMissing {
        /// The variable's name.
        env: String,
    },
    /// Traffic records were started for a node the fleet does not have.
    #[error("node {0} is not in the fleet config")]
    UnknownNode(String),
    /// The writer task has already stopped.
    #[error("metadata writer is not running")]
    WriterGone,
    /// A metadata task panicked or was cancelled.
    #[error("metadata task failed: {0}")]
    WriterFailed(String),
}
