//! A retention pass over the local store, on demand.
//!
//! [`Sweeper::sweep_once`] applies the current [`RetentionPolicy`] at a
//! given instant; the background task started by
//! [`crate::metadata::start`] calls the same store method at start and every
//! `sweep_interval_secs`, with "now" from the injected clock. Tests and tools
//! call [`Sweeper::sweep_once`] directly with a chosen `now_ms`.

use std::sync::{Arc, PoisonError, RwLock};

use crate::metadata::retention::{RetentionPolicy, SweepReport};
use crate::metadata::sqlite::{SqliteStore, StoreError};

/// Applies retention to one SQLite store. Blocking: async callers use
/// `spawn_blocking`.
#[derive(Clone, Debug)]
pub struct Sweeper {
    store: SqliteStore,
    policy: Arc<RwLock<RetentionPolicy>>,
}

impl Sweeper {
    /// A sweeper for `store` under `policy`.
    pub fn new(store: SqliteStore, policy: RetentionPolicy) -> Self {
        Self {
            store,
            policy: Arc::new(RwLock::new(policy)),
        }
    }

    /// Replaces the policy used by later sweeps.
    pub fn set_policy(&self, policy: RetentionPolicy) {
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = policy;
    }

    /// Deletes everything expired at `now_ms` (Unix ms). Durable on return.
    pub fn sweep_once(&self, now_ms: u64) -> Result<SweepReport, StoreError> {
        let policy = self
            .policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.store.sweep(now_ms, &policy)
    }
}
