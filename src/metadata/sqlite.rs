//! The embedded store: one SQLite database file per UTC day.
//!
//! Files are named `events-YYYY-MM-DD.sqlite` under the metadata directory;
//! the schema is in `docs/METADATA.md`. Every connection sets
//! `secure_delete = ON` (deleted rows are overwritten with zeros),
//! `journal_mode = WAL` and `synchronous = FULL`: a committed flush survives
//! a process crash and a power loss, an interrupted one is rolled back on the
//! next open. After a sweep changes a file, `wal_checkpoint(TRUNCATE)` moves
//! the zeroed pages into the main file and empties the WAL, so deleted rows
//! leave no copy in the WAL either.
//!
//! All methods block (SQLite does file I/O): async callers run them on
//! `spawn_blocking`. A [`SqliteStore`] is a cheap handle; clones share one
//! set of open connections behind a mutex, so the writer and the sweeper
//! never race on a file being deleted.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use crate::ids::AppId;
use crate::metadata::day::UtcDay;
use crate::metadata::event::{DecodeError, Event};
use crate::metadata::retention::{RetentionPolicy, SweepReport};

const FILE_PREFIX: &str = "events-";
const FILE_SUFFIX: &str = ".sqlite";
/// Files SQLite keeps beside a database in WAL mode (and a stale rollback
/// journal, should one exist).
const SIDE_FILE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];
/// Day files kept open at once: today and yesterday around midnight.
const OPEN_DAYS_CACHED: usize = 2;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    node        TEXT    NOT NULL,
    region      TEXT    NOT NULL,
    app         TEXT,
    kind        TEXT    NOT NULL,
    session_id  INTEGER,
    client_ip   TEXT,
    detail      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at_ms);
CREATE INDEX IF NOT EXISTS events_app_at ON events (app, at_ms);
CREATE INDEX IF NOT EXISTS events_kind_at ON events (kind, at_ms);
CREATE INDEX IF NOT EXISTS events_session ON events (session_id);
CREATE INDEX IF NOT EXISTS events_client_ip_at ON events (at_ms) WHERE client_ip IS NOT NULL;
";

/// A failure of the embedded store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation on this file.
    #[error("{}: {source}", path.display())]
    Sqlite {
        /// The database file (or directory).
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A file-system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// An event could not be encoded (a non-finite float, for instance).
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    /// A stored row could not be read back.
    #[error("{}: row {row_id}: {source}", path.display())]
    Decode {
        /// The database file.
        path: PathBuf,
        /// The row's `id`.
        row_id: i64,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
    /// The file was written by a newer georelay.
    #[error("{}: schema version {found} is newer than {SCHEMA_VERSION}", path.display())]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
}

/// The per-day SQLite store in one directory.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    open: BTreeMap<UtcDay, Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the store directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self::from_dir(dir))
    }

    /// Opens an existing store directory without creating anything (for
    /// reports).
    pub fn open_existing(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::read_dir(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self::from_dir(dir))
    }

    fn from_dir(dir: PathBuf) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                dir,
                open: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The data behind the lock is a connection cache; a panic elsewhere
        // cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store directory.
    pub fn dir(&self) -> PathBuf {
        self.lock().dir.clone()
    }

    /// The path of a day's database file.
    pub fn day_path(&self, day: UtcDay) -> PathBuf {
        day_path(&self.lock().dir, day)
    }

    /// The days that have a database file, oldest first.
    pub fn days(&self) -> Result<Vec<UtcDay>, StoreError> {
        list_days(&self.lock().dir)
    }

    /// Writes events, one transaction per day file touched. Returns the
    /// number of rows written.
    pub fn write_batch(&self, events: &[Event]) -> Result<usize, StoreError> {
        let mut by_day: BTreeMap<UtcDay, Vec<&Event>> = BTreeMap::new();
        for event in events {
            by_day
                .entry(UtcDay::of_unix_ms(event.at_ms))
                .or_default()
                .push(event);
        }
        let mut inner = self.lock();
        let mut written = 0;
        for (day, events) in by_day {
            let path = day_path(&inner.dir, day);
            let sqlite = |source| StoreError::Sqlite {
                path: path.clone(),
                source,
            };
            let Some(conn) = inner.connection(day, true)? else {
                continue;
            };
            let tx = conn.unchecked_transaction().map_err(sqlite)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO events
                         (at_ms, node, region, app, kind, session_id, client_ip, detail)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )
                    .map_err(sqlite)?;
                for event in events {
                    let row = event.to_row()?;
                    insert
                        .execute(params![
                            row.at_ms,
                            row.node,
                            row.region,
                            row.app,
                            row.kind,
                            row.session_id,
                            row.client_ip,
                            row.detail,
                        ])
                        .map_err(sqlite)?;
                    written += 1;
                }
            }
            tx.commit().map_err(sqlite)?;
        }
        Ok(written)
    }

    /// Every stored event at or after `since_ms` (of `app`, if given), in
    /// time order.
    pub fn read_events(
        &self,
        since_ms: u64,
        app: Option<&AppId>,
    ) -> Result<Vec<Event>, StoreError> {
        self.read_matching(since_ms, app, None)
    }

    /// Every stored event of these kinds (e.g. `traffic`, see
    /// [`crate::metadata::EventKind::name`]) at or after `since_ms`, in time
    /// order. Other rows are not decoded.
    pub fn read_events_of_kinds(
        &self,
        since_ms: u64,
        kinds: &[&str],
    ) -> Result<Vec<Event>, StoreError> {
        self.read_matching(since_ms, None, Some(kinds))
    }

    fn read_matching(
        &self,
        since_ms: u64,
        app: Option<&AppId>,
        kinds: Option<&[&str]>,
    ) -> Result<Vec<Event>, StoreError> {
        // `,kind1,kind2,`: a row matches when `,its kind,` is inside.
        let kinds = kinds.map(|kinds| format!(",{},", kinds.join(",")));
        let mut inner = self.lock();
        let days = list_days(&inner.dir)?;
        let since = i64::try_from(since_ms).unwrap_or(i64::MAX);
        let mut events = Vec::new();
        for day in days.into_iter().filter(|day| day.end_ms() > since_ms) {
            let path = day_path(&inner.dir, day);
            let sqlite = |source| StoreError::Sqlite {
                path: path.clone(),
                source,
            };
            let Some(conn) = inner.connection(day, false)? else {
                continue;
            };
            let mut query = conn
                .prepare_cached(
                    "SELECT id, at_ms, node, region, app, client_ip, detail FROM events
                     WHERE at_ms >= ?1 AND (?2 IS NULL OR app = ?2)
                       AND (?3 IS NULL OR instr(?3, ',' || kind || ',') > 0)
                     ORDER BY at_ms, id",
                )
                .map_err(sqlite)?;
            let mut rows = query
                .query(params![since, app.map(AppId::as_str), kinds.as_deref()])
                .map_err(sqlite)?;
            while let Some(row) = rows.next().map_err(sqlite)? {
                let row_id: i64 = row.get(0).map_err(sqlite)?;
                let at_ms: i64 = row.get(1).map_err(sqlite)?;
                let node: String = row.get(2).map_err(sqlite)?;
                let region: String = row.get(3).map_err(sqlite)?;
                let app: Option<String> = row.get(4).map_err(sqlite)?;
                let client_ip: Option<String> = row.get(5).map_err(sqlite)?;
                let detail: String = row.get(6).map_err(sqlite)?;
                let event = Event::from_columns(
                    at_ms,
                    &node,
                    &region,
                    app.as_deref(),
                    client_ip.as_deref(),
                    &detail,
                )
                .map_err(|source| StoreError::Decode {
                    path: path.clone(),
                    row_id,
                    source,
                })?;
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Applies `policy` at `now_ms`: deletes whole day files older than the
    /// fleet retention, deletes expired rows (per app) from younger files and
    /// removes client addresses older than the IP retention. Deletions are
    /// committed and the directory is synced before this returns, so a
    /// restart cannot bring anything back.
    pub fn sweep(&self, now_ms: u64, policy: &RetentionPolicy) -> Result<SweepReport, StoreError> {
        let mut inner = self.lock();
        let mut report = SweepReport::default();
        let fleet_cutoff = policy.fleet_cutoff_ms(now_ms);
        let app_cutoffs = policy.shorter_app_cutoffs(now_ms);
        let ip_cutoff = policy.ip_cutoff_ms(now_ms);
        let newest_cutoff = app_cutoffs
            .iter()
            .map(|(_, cutoff)| *cutoff)
            .chain([fleet_cutoff, ip_cutoff])
            .max()
            .unwrap_or(fleet_cutoff);

        for day in list_days(&inner.dir)? {
            if day.end_ms() <= fleet_cutoff {
                inner.remove_day(day)?;
                report.days_dropped.push(day);
                continue;
            }
            if day.start_ms() >= newest_cutoff {
                continue;
            }
            let path = day_path(&inner.dir, day);
            let sqlite = |source| StoreError::Sqlite {
                path: path.clone(),
                source,
            };
            let Some(conn) = inner.connection(day, false)? else {
                continue;
            };
            let tx = conn.unchecked_transaction().map_err(sqlite)?;
            let mut changed = 0u64;
            if day.start_ms() < fleet_cutoff {
                let rows = tx
                    .execute(
                        "DELETE FROM events WHERE at_ms < ?1",
                        [as_i64(fleet_cutoff)],
                    )
                    .map_err(sqlite)?;
                report.rows_deleted += rows as u64;
                changed += rows as u64;
            }
            for (app, cutoff) in &app_cutoffs {
                if day.start_ms() < *cutoff {
                    let rows = tx
                        .execute(
                            "DELETE FROM events WHERE app = ?1 AND at_ms < ?2",
                            params![app.as_str(), as_i64(*cutoff)],
                        )
                        .map_err(sqlite)?;
                    report.rows_deleted += rows as u64;
                    changed += rows as u64;
                }
            }
            if day.start_ms() < ip_cutoff {
                let rows = tx
                    .execute(
                        "UPDATE events SET client_ip = NULL
                         WHERE client_ip IS NOT NULL AND at_ms < ?1",
                        [as_i64(ip_cutoff)],
                    )
                    .map_err(sqlite)?;
                report.addresses_removed += rows as u64;
                changed += rows as u64;
            }
            tx.commit().map_err(sqlite)?;
            if changed > 0 {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .map_err(sqlite)?;
            }
        }
        if !report.days_dropped.is_empty() {
            sync_dir(&inner.dir)?;
        }
        Ok(report)
    }

    /// Closes every open connection (they reopen on demand). A clean close
    /// checkpoints the WAL into the main file.
    pub fn close(&self) {
        self.lock().open.clear();
    }
}

impl Inner {
    /// The connection for `day`, opening it if needed. With `create` false,
    /// a day without a file yields `None`.
    fn connection(&mut self, day: UtcDay, create: bool) -> Result<Option<&Connection>, StoreError> {
        if !self.open.contains_key(&day) {
            let path = day_path(&self.dir, day);
            let exists = path.exists();
            if !exists && !create {
                return Ok(None);
            }
            let conn = open_day_file(&path, create)?;
            if !exists {
                sync_dir(&self.dir)?;
            }
            while self.open.len() >= OPEN_DAYS_CACHED {
                self.open.pop_first();
            }
            self.open.insert(day, conn);
        }
        Ok(self.open.get(&day))
    }

    fn remove_day(&mut self, day: UtcDay) -> Result<(), StoreError> {
        self.open.remove(&day);
        let path = day_path(&self.dir, day);
        remove_if_present(&path)?;
        for suffix in SIDE_FILE_SUFFIXES {
            let mut side = path.clone().into_os_string();
            side.push(suffix);
            remove_if_present(Path::new(&side))?;
        }
        Ok(())
    }
}

fn open_day_file(path: &Path, create: bool) -> Result<Connection, StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(sqlite)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        .map_err(sqlite)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
        });
    }
    if version < SCHEMA_VERSION {
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sqlite)?;
    }
    Ok(conn)
}

fn day_path(dir: &Path, day: UtcDay) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{day}{FILE_SUFFIX}"))
}

/// The day named by a store file name, if it is one.
fn day_of_file_name(name: &str) -> Option<UtcDay> {
    UtcDay::parse_iso(name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?)
}

fn list_days(dir: &Path) -> Result<Vec<UtcDay>, StoreError> {
    let io_error = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut days = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        if let Some(day) = entry.file_name().to_str().and_then(day_of_file_name) {
            days.push(day);
        }
    }
    days.sort_unstable();
    Ok(days)
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Makes file creations and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

fn as_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IpMode;
    use crate::ids::{NodeId, RegionId};
    use crate::metadata::day::DAY_MS;
    use crate::metadata::event::{EventKind, SdkInfo, SessionRole};
    use crate::metadata::ip::minimise;

    const NOW: u64 = 20_000 * DAY_MS + 12 * 3_600_000;

    fn opened(at_ms: u64, app: &str, user: &str, ip: &str, mode: IpMode) -> Event {
        Event {
            at_ms,
            node: NodeId::from("eu-fra-1"),
            region: RegionId::from("eu"),
            app: Some(AppId::from(app)),
            kind: EventKind::SessionOpened {
                session_id: at_ms,
                user: user.into(),
                channel: "room".into(),
                role: SessionRole::Subscribe,
                client_country: None,
                client_region: None,
                client_ip: minimise(ip.parse().unwrap(), mode),
                sdk: SdkInfo::default(),
            },
        }
    }

    fn all_bytes_under(dir: &Path) -> Vec<u8> {
        let mut bytes = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            bytes.extend(fs::read(entry.unwrap().path()).unwrap());
        }
        bytes
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    }

    #[test]
    fn one_file_per_utc_day_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let events = vec![
            opened(NOW - DAY_MS, "a", "u1", "192.0.2.1", IpMode::Truncate),
            opened(NOW, "a", "u2", "192.0.2.2", IpMode::Full),
            opened(NOW + 1, "b", "u3", "2001:db8::1", IpMode::Drop),
        ];
        assert_eq!(store.write_batch(&events).unwrap(), 3);
        assert_eq!(
            store.days().unwrap(),
            vec![UtcDay::of_unix_ms(NOW - DAY_MS), UtcDay::of_unix_ms(NOW)]
        );
        assert!(store.day_path(UtcDay::of_unix_ms(NOW)).exists());
        assert_eq!(store.read_events(0, None).unwrap(), events);
        assert_eq!(store.read_events(NOW, None).unwrap(), events[1..]);
        assert_eq!(
            store.read_events(0, Some(&AppId::from("b"))).unwrap(),
            events[2..]
        );
        assert_eq!(
            store
                .read_events_of_kinds(0, &["session_opened", "link_up"])
                .unwrap(),
            events
        );
        assert!(
            store
                .read_events_of_kinds(0, &["traffic"])
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .read_events_of_kinds(0, &["session"])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn deleted_rows_and_addresses_leave_no_bytes_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        // Same day: a short-retention app's row expires, the other stays.
        let day_start = UtcDay::of_unix_ms(NOW).start_ms();
        let old = day_start + 1000;
        let events = vec![
            opened(
                old,
                "short",
                "canary-user-8f3a",
                "198.51.100.77",
                IpMode::Full,
            ),
            opened(old, "long", "kept-user", "203.0.113.99", IpMode::Full),
        ];
        store.write_batch(&events).unwrap();
        let policy = RetentionPolicy::new(30, 1, BTreeMap::from([(AppId::from("short"), 1)]));
        let later = old + DAY_MS + 1;
        let report = store.sweep(later, &policy).unwrap();
        assert_eq!(report.rows_deleted, 1);
        assert_eq!(report.addresses_removed, 1);
        store.close();
        let bytes = all_bytes_under(dir.path());
        assert!(contains(&bytes, "kept-user"), "the kept row is still there");
        assert!(
            !contains(&bytes, "canary-user-8f3a"),
            "deleted row bytes remain"
        );
        assert!(
            !contains(&bytes, "198.51.100.77"),
            "deleted address bytes remain"
        );
        assert!(
            !contains(&bytes, "203.0.113.99"),
            "expired address bytes remain"
        );
        let left = store.read_events(0, None).unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0].kind.client_ip().unwrap().is_dropped());
    }

    #[test]
    fn old_day_files_are_removed_with_their_side_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let events = vec![
            opened(
                NOW - 31 * DAY_MS,
                "a",
                "gone",
                "192.0.2.1",
                IpMode::Truncate,
            ),
            opened(
                NOW - 29 * DAY_MS,
                "a",
                "kept",
                "192.0.2.1",
                IpMode::Truncate,
            ),
        ];
        store.write_batch(&events).unwrap();
        let policy = RetentionPolicy::new(30, 30, BTreeMap::new());
        let report = store.sweep(NOW, &policy).unwrap();
        assert_eq!(
            report.days_dropped,
            vec![UtcDay::of_unix_ms(NOW - 31 * DAY_MS)]
        );
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let gone_day = UtcDay::of_unix_ms(NOW - 31 * DAY_MS).to_string();
        assert!(
            names.iter().all(|name| !name.contains(&gone_day)),
            "{names:?}"
        );
        assert_eq!(store.read_events(0, None).unwrap(), events[1..]);
    }

    #[test]
    fn traffic_records_follow_their_app_retention_and_markers_the_fleet() {
        use crate::metadata::traffic::{Direction, TrafficPeer};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let version = "0123456789abcdef".parse().unwrap();
        let at = UtcDay::of_unix_ms(NOW).start_ms() + 1000;
        let traffic = |app: &str| Event {
            at_ms: at,
            node: NodeId::from("eu-fra-1"),
            region: RegionId::from("eu"),
            app: Some(AppId::from(app)),
            kind: EventKind::Traffic {
                interval_ms: 60_000,
                direction: Direction::Out,
                peer: TrafficPeer::Clients,
                packets: 1,
                bytes: 100,
                policy_version: version,
            },
        };
        let marker = Event {
            app: None,
            kind: EventKind::TrafficInterval {
                interval_ms: 60_000,
                policy_version: version,
            },
            ..traffic("none")
        };
        let events = vec![traffic("short"), traffic("long"), marker];
        store.write_batch(&events).unwrap();
        let policy = RetentionPolicy::new(30, 1, BTreeMap::from([(AppId::from("short"), 1)]));
        let report = store.sweep(at + DAY_MS + 1, &policy).unwrap();
        assert_eq!(report.rows_deleted, 1);
        let left = store
            .read_events_of_kinds(0, &["traffic", "traffic_interval"])
            .unwrap();
        assert_eq!(left, events[1..]);
    }

    #[test]
    fn unrelated_files_are_ignored() {
        assert_eq!(
            day_of_file_name("events-2026-11-23.sqlite"),
            UtcDay::parse_iso("2026-11-23")
        );
        assert_eq!(day_of_file_name("events-2026-11-23.sqlite-wal"), None);
        assert_eq!(day_of_file_name("notes.txt"), None);
    }
}
