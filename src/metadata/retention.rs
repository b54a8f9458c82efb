//! Retention rules: how long each kind of row may live.
//!
//! A row recorded at `at_ms` is expired once `now - at_ms` exceeds its
//! retention: the app's `metadata_retention_days` (fleet default, at most
//! 30) for app events, the fleet `retention_days` for link events and for
//! apps no longer in the config. Stored client addresses (full or
//! truncated) are removed after `ip_retention_days`. Cutoffs are exact to
//! the millisecond: a row at `now - retention` is kept, one a millisecond
//! older is deleted. Both stores apply the same [`RetentionPolicy`].

use std::collections::BTreeMap;

use crate::config::{Fleet, MAX_RETENTION_DAYS};
use crate::ids::AppId;
use crate::metadata::day::DAY_MS;
use crate::metadata::event::Event;

/// Retention limits in days, already clamped to the contract's maxima.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    fleet_days: u16,
    ip_days: u16,
    app_days: BTreeMap<AppId, u16>,
}

impl RetentionPolicy {
    /// A policy; every value is clamped to at most 30 days, and app and IP
    /// retentions to at most the fleet retention.
    pub fn new(fleet_days: u16, ip_days: u16, app_days: BTreeMap<AppId, u16>) -> Self {
        let fleet_days = fleet_days.min(MAX_RETENTION_DAYS);
        let app_days = app_days
            .into_iter()
            .map(|(app, days)| (app, days.min(fleet_days)))
            .collect();
        Self {
            fleet_days,
            ip_days: ip_days.min(fleet_days),
            app_days,
        }
    }

    /// The policy a fleet configures.
    pub fn from_fleet(fleet: &Fleet) -> Self {
        Self::new(
            fleet.metadata.retention_days,
            fleet.metadata.ip_retention_days,
            app_retention_days(fleet),
        )
    }

    /// Fleet-wide retention in days.
    pub fn fleet_days(&self) -> u16 {
        self.fleet_days
    }

    /// Retention of stored client addresses in days.
    pub fn ip_days(&self) -> u16 {
        self.ip_days
    }

    /// Per-app retention in days.
    pub fn app_days(&self) -> &BTreeMap<AppId, u16> {
        &self.app_days
    }

    /// Rows older than this (strictly) are expired for everyone.
    pub fn fleet_cutoff_ms(&self, now_ms: u64) -> u64 {
        cutoff(now_ms, self.fleet_days)
    }

    /// Client addresses on rows older than this are removed.
    pub fn ip_cutoff_ms(&self, now_ms: u64) -> u64 {
        cutoff(now_ms, self.ip_days)
    }

    /// Rows of `app` (or of no app) older than this are expired.
    pub fn cutoff_for(&self, app: Option<&AppId>, now_ms: u64) -> u64 {
        let days = app
            .and_then(|app| self.app_days.get(app))
            .copied()
            .unwrap_or(self.fleet_days);
        cutoff(now_ms, days)
    }

    /// Apps whose retention is shorter than the fleet's, with their cutoffs.
    pub fn shorter_app_cutoffs(&self, now_ms: u64) -> Vec<(AppId, u64)> {
        self.app_days
            .iter()
            .filter(|(_, days)| **days < self.fleet_days)
            .map(|(app, days)| (app.clone(), cutoff(now_ms, *days)))
            .collect()
    }

    /// Whether `event` is already past its retention at `now_ms` (such events
    /// are not written at all, so a late write cannot resurrect a swept day).
    pub fn is_expired(&self, event: &Event, now_ms: u64) -> bool {
        event.at_ms < self.cutoff_for(event.app.as_ref(), now_ms)
    }
}

/// Each app's `metadata_retention_days`.
pub fn app_retention_days(fleet: &Fleet) -> BTreeMap<AppId, u16> {
    fleet
        .apps
        .values()
        .map(|app| (app.id.clone(), app.metadata_retention_days))
        .collect()
}

fn cutoff(now_ms: u64, days: u16) -> u64 {
    now_ms.saturating_sub(u64::from(days) * DAY_MS)
}

/// What one sweep removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Whole days removed (SQLite files or PostgreSQL partitions).
    pub days_dropped: Vec<crate::metadata::day::UtcDay>,
    /// Rows deleted from days that were kept.
    pub rows_deleted: u64,
    /// Rows whose client address was removed.
    pub addresses_removed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_clamped_to_the_contract() {
        let policy = RetentionPolicy::new(90, 40, BTreeMap::from([(AppId::from("a"), 60)]));
        assert_eq!(policy.fleet_days(), 30);
        assert_eq!(policy.ip_days(), 30);
        assert_eq!(policy.app_days()[&AppId::from("a")], 30);
        let short = RetentionPolicy::new(10, 7, BTreeMap::from([(AppId::from("a"), 20)]));
        assert_eq!(short.app_days()[&AppId::from("a")], 10);
    }

    #[test]
    fn cutoffs_follow_the_app() {
        let now = 100 * DAY_MS;
        let policy = RetentionPolicy::new(30, 7, BTreeMap::from([(AppId::from("short"), 7)]));
        assert_eq!(policy.fleet_cutoff_ms(now), 70 * DAY_MS);
        assert_eq!(
            policy.cutoff_for(Some(&AppId::from("short")), now),
            93 * DAY_MS
        );
        assert_eq!(
            policy.cutoff_for(Some(&AppId::from("gone")), now),
            70 * DAY_MS
        );
        assert_eq!(policy.cutoff_for(None, now), 70 * DAY_MS);
        assert_eq!(policy.ip_cutoff_ms(now), 93 * DAY_MS);
        assert_eq!(
            policy.shorter_app_cutoffs(now),
            vec![(AppId::from("short"), 93 * DAY_MS)]
        );
        assert_eq!(
            policy.fleet_cutoff_ms(DAY_MS),
            0,
            "saturates near the epoch"
        );
    }
}
