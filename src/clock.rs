//! The one place that reads clocks (`clippy.toml` bans the reads elsewhere).
//!
//! - The wall clock ([`Clock`]) is only for what leaves the node: token
//!   expiry, metadata timestamps, log lines, the start of sequence numbers.
//!   Tests drive it with a [`ManualClock`].
//! - The monotonic clock ([`monotonic_now`], [`timer_now`]) drives every
//!   timer of the relay core: the driver reads it and hands `now` to the
//!   sans-IO parts, so a wall-clock step never stops media.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time, as milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    fn now_unix_ms(&self) -> u64;

    /// Whole seconds since the Unix epoch.
    fn now_unix_secs(&self) -> u64 {
        self.now_unix_ms() / 1000
    }
}

/// A shared, dynamically chosen clock.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now_unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64
    }
}

/// A clock that moves only when told to. For tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `unix_ms`.
    pub fn new(unix_ms: u64) -> Self {
        Self {
            now_ms: AtomicU64::new(unix_ms),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock to `unix_ms`.
    pub fn set(&self, unix_ms: u64) {
        self.now_ms.store(unix_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// The monotonic clock the relay core's timers follow: it never steps when
/// the wall clock is corrected (NTP, VM migration, an operator).
#[allow(clippy::disallowed_methods)]
pub fn monotonic_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// tokio's monotonic clock, for deadlines of tokio timers: it honours
/// `tokio::time::pause` in tests.
#[allow(clippy::disallowed_methods)]
pub fn timer_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// The wall clock as a `SystemTime`, for comparing with file times.
#[allow(clippy::disallowed_methods)]
pub fn wall_now() -> std::time::SystemTime {
    SystemTime::now()
}
