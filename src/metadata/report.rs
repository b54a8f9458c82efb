//! The usage and quality report, computed the same way for both stores.
//!
//! Each store returns [`Event`]s; [`build_report`] groups them (by UTC day,
//! node region or node) and computes, per group:
//! - `sessions`: `SessionOpened` events;
//! - `participant_minutes`: the summed `duration_ms` of `SessionClosed`
//!   events / 60 000 (a session still open, or cut by a crash, counts when
//!   its close is recorded; a session without a close is not counted);
//! - `bytes_in` / `bytes_out`: summed from `SessionClosed`;
//! - `loss_ratio` and `rtt_ms` p50/p95: nearest-rank percentiles over the
//!   group's `QualitySample`s;
//! - `refusals`: geofence decisions that refused service, by code —
//!   `Denied` under its code, `Redirected` as `GEOFENCE_REDIRECT`,
//!   `RouteUnavailable` as `ROUTE_UNAVAILABLE`, `Revoked` as
//!   `GEOFENCE_REVOKED`;
//! - `close_codes`: `SessionClosed` events with a close code, by code.
//!
//! Every figure is computed with integers or from sorted values, so the
//! result does not depend on the order the store returned the events in.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::ErrorCode;
use crate::ids::AppId;
use crate::metadata::day::UtcDay;
use crate::metadata::event::{Event, EventKind, GeofenceDecision};

/// How report rows are grouped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// By UTC day of the event (`2026-11-23`).
    #[default]
    Day,
    /// By the region of the recording node.
    Region,
    /// By the recording node.
    Node,
}

/// What to report on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportQuery {
    /// Only events at or after this instant (Unix ms).
    pub since_ms: u64,
    /// Only this app's events.
    pub app: Option<AppId>,
    /// The grouping.
    pub by: GroupBy,
}

/// p50 and p95 of a set of samples; `None` without samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
}

/// The figures of one group.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GroupReport {
    /// The group's key: a day, region or node id.
    pub key: String,
    /// Sessions opened.
    pub sessions: u64,
    /// Summed session duration in minutes.
    pub participant_minutes: f64,
    /// Bytes received from clients.
    pub bytes_in: u64,
    /// Bytes sent to clients.
    pub bytes_out: u64,
    /// Quality samples seen.
    pub quality_samples: u64,
    /// Packet loss ratio percentiles.
    pub loss_ratio: Percentiles,
    /// RTT percentiles in milliseconds.
    pub rtt_ms: Percentiles,
    /// Refusals by error code.
    pub refusals: BTreeMap<String, u64>,
    /// Abnormal session closes by error code.
    pub close_codes: BTreeMap<String, u64>,
}

/// A whole report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The start of the reported period (Unix ms).
    pub since_ms: u64,
    /// The app reported on, or every app.
    pub app: Option<String>,
    /// The grouping.
    pub by: GroupBy,
    /// One entry per group, in key order.
    pub groups: Vec<GroupReport>,
}

/// A multiset of sample values (loss ratios, RTTs) as value → count: what
/// two stores' quality samples merge into without any identifier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValueCounts(BTreeMap<i64, u64>);

impl ValueCounts {
    /// Adds `count` samples of `value`.
    pub fn add(&mut self, value: f64, count: u64) {
        *self.0.entry(total_order_key(value)).or_default() += count;
    }

    /// How many samples.
    pub fn len(&self) -> u64 {
        self.0.values().sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn merge(&mut self, other: ValueCounts) {
        for (key, count) in other.0 {
            *self.0.entry(key).or_default() += count;
        }
    }

    /// Nearest-rank p50 and p95.
    fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50: self.nearest_rank(50),
            p95: self.nearest_rank(95),
        }
    }

    fn nearest_rank(&self, percent: u64) -> Option<f64> {
        let total = self.len();
        if total == 0 {
            return None;
        }
        let rank = (percent * total).div_ceil(100).max(1);
        let mut seen = 0;
        for (key, count) in &self.0 {
            seen += count;
            if seen >= rank {
                return Some(from_total_order_key(*key));
            }
        }
        None
    }
}

/// A key whose integer order is [`f64::total_cmp`]'s order.
fn total_order_key(value: f64) -> i64 {
    let bits = value.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

fn from_total_order_key(key: i64) -> f64 {
    // The transform is its own inverse.
    f64::from_bits(total_order_key(f64::from_bits(key as u64)) as u64)
}

/// The mergeable figures of one group: sums, counts and value counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupPartial {
    /// `session_opened` events.
    pub sessions: u64,
    /// Summed `session_closed.duration_ms`.
    pub duration_ms: u64,
    /// Summed `session_closed.bytes_in`.
    pub bytes_in: u64,
    /// Summed `session_closed.bytes_out`.
    pub bytes_out: u64,
    /// Loss ratios of the quality samples.
    pub losses: ValueCounts,
    /// RTTs of the quality samples.
    pub rtts: ValueCounts,
    /// Refusals by code.
    pub refusals: BTreeMap<String, u64>,
    /// Abnormal closes by code.
    pub close_codes: BTreeMap<String, u64>,
}

impl GroupPartial {
    fn merge(&mut self, other: GroupPartial) {
        self.sessions += other.sessions;
        self.duration_ms = self.duration_ms.saturating_add(other.duration_ms);
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.losses.merge(other.losses);
        self.rtts.merge(other.rtts);
        for (code, count) in other.refusals {
            *self.refusals.entry(code).or_default() += count;
        }
        for (code, count) in other.close_codes {
            *self.close_codes.entry(code).or_default() += count;
        }
    }
}

/// A report before its percentiles are taken: what one store contributes,
/// and what the stores of several regions merge into (no row, no
/// identifier: sums, counts and value counts per group).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportPartial {
    /// Figures by group key.
    pub groups: BTreeMap<String, GroupPartial>,
}

impl ReportPartial {
    /// Aggregates `events` for `query`. Events outside the query are ignored.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = &'a Event>,
        query: &ReportQuery,
    ) -> Self {
        let mut groups: BTreeMap<String, GroupPartial> = BTreeMap::new();
        for event in events {
            if event.at_ms < query.since_ms
                || query
                    .app
                    .as_ref()
                    .is_some_and(|app| event.app.as_ref() != Some(app))
            {
                continue;
            }
            let key = match query.by {
                GroupBy::Day => UtcDay::of_unix_ms(event.at_ms).to_string(),
                GroupBy::Region => event.region.to_string(),
                GroupBy::Node => event.node.to_string(),
            };
            let group = groups.entry(key).or_default();
            match &event.kind {
                EventKind::SessionOpened { .. } => group.sessions += 1,
                EventKind::SessionClosed {
                    duration_ms,
                    bytes_in,
                    bytes_out,
                    close_code,
                    ..
                } => {
                    group.duration_ms = group.duration_ms.saturating_add(*duration_ms);
                    group.bytes_in = group.bytes_in.saturating_add(*bytes_in);
                    group.bytes_out = group.bytes_out.saturating_add(*bytes_out);
                    if let Some(code) = close_code {
                        *group.close_codes.entry(code.name().to_owned()).or_default() += 1;
                    }
                }
                EventKind::QualitySample {
                    loss_ratio, rtt_ms, ..
                } => {
                    group.losses.add(*loss_ratio, 1);
                    group.rtts.add(*rtt_ms, 1);
                }
                EventKind::Geofence { decision, .. } => {
                    if let Some(code) = refusal_code(decision) {
                        *group.refusals.entry(code.name().to_owned()).or_default() += 1;
                    }
                }
                EventKind::TrackPublished { .. }
                | EventKind::TrackUnpublished { .. }
                | EventKind::LinkUp { .. }
                | EventKind::LinkDown { .. }
                | EventKind::ConnectionsRefused { .. }
                | EventKind::Traffic { .. }
                | EventKind::TrafficInterval { .. }
                | EventKind::Policy { .. } => {}
            }
        }
        Self { groups }
    }

    /// Adds another store's figures.
    pub fn merge(&mut self, other: ReportPartial) {
        for (key, group) in other.groups {
            self.groups.entry(key).or_default().merge(group);
        }
    }

    /// The report: percentiles taken, groups in key order.
    pub fn finish(self, query: &ReportQuery) -> Report {
        Report {
            since_ms: query.since_ms,
            app: query.app.as_ref().map(ToString::to_string),
            by: query.by,
            groups: self
                .groups
                .into_iter()
                .map(|(key, group)| GroupReport {
                    key,
                    sessions: group.sessions,
                    participant_minutes: group.duration_ms as f64 / 60_000.0,
                    bytes_in: group.bytes_in,
                    bytes_out: group.bytes_out,
                    quality_samples: group.losses.len(),
                    loss_ratio: group.losses.percentiles(),
                    rtt_ms: group.rtts.percentiles(),
                    refusals: group.refusals,
                    close_codes: group.close_codes,
                })
                .collect(),
        }
    }
}

/// The code a geofence decision refused service with, if it refused.
pub fn refusal_code(decision: &GeofenceDecision) -> Option<ErrorCode> {
    match decision {
        GeofenceDecision::Denied { code, .. } => Some(*code),
        GeofenceDecision::Redirected { .. } => Some(ErrorCode::GeofenceRedirect),
        GeofenceDecision::RouteUnavailable { .. } => Some(ErrorCode::RouteUnavailable),
        GeofenceDecision::Revoked { .. } => Some(ErrorCode::GeofenceRevoked),
        GeofenceDecision::Admitted | GeofenceDecision::RouteChosen { .. } => None,
    }
}

/// Aggregates `events` for `query`. Events outside the query are ignored.
pub fn build_report<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    query: &ReportQuery,
) -> Report {
    ReportPartial::from_events(events, query).finish(query)
}

impl Report {
    /// A plain-text table for people.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{:<20} {:>8} {:>12} {:>14} {:>14} {:>9} {:>9} {:>9} {:>9}  refusals / close codes\n",
            match self.by {
                GroupBy::Day => "day",
                GroupBy::Region => "region",
                GroupBy::Node => "node",
            },
            "sessions",
            "part-min",
            "bytes_in",
            "bytes_out",
            "loss p50",
            "loss p95",
            "rtt p50",
            "rtt p95",
        );
        let show = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        for group in &self.groups {
            let codes: Vec<String> = group
                .refusals
                .iter()
                .map(|(code, count)| format!("{code}={count}"))
                .chain(
                    group
                        .close_codes
                        .iter()
                        .map(|(code, count)| format!("closed:{code}={count}")),
                )
                .collect();
            out.push_str(&format!(
                "{:<20} {:>8} {:>12.2} {:>14} {:>14} {:>9} {:>9} {:>9} {:>9}  {}\n",
                group.key,
                group.sessions,
                group.participant_minutes,
                group.bytes_in,
                group.bytes_out,
                show(group.loss_ratio.p50),
                show(group.loss_ratio.p95),
                show(group.rtt_ms.p50),
                show(group.rtt_ms.p95),
                if codes.is_empty() {
                    "-".to_owned()
                } else {
                    codes.join(" ")
                },
            ));
        }
        if self.groups.is_empty() {
            out.push_str("(no events in this period)\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeId, RegionId};
    use crate::metadata::day::DAY_MS;

    fn event(at_ms: u64, node: &str, app: &str, kind: EventKind) -> Event {
        Event {
            at_ms,
            node: NodeId::from(node),
            region: RegionId::from(&node[..2]),
            app: Some(AppId::from(app)),
            kind,
        }
    }

    fn sample(loss: f64, rtt: f64) -> EventKind {
        EventKind::QualitySample {
            session_id: 1,
            loss_ratio: loss,
            bitrate_in_bps: 0,
            bitrate_out_bps: 0,
            rtt_ms: rtt,
            jitter_ms: None,
            drops: BTreeMap::new(),
        }
    }

    fn closed(duration_ms: u64, bytes: u64, code: Option<ErrorCode>) -> EventKind {
        EventKind::SessionClosed {
            session_id: 1,
            duration_ms,
            bytes_in: bytes,
            bytes_out: 2 * bytes,
            packets_in: 0,
            packets_out: 0,
            close_code: code,
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let counts = |values: &[f64]| {
            let mut counts = ValueCounts::default();
            for value in values {
                counts.add(*value, 1);
            }
            counts
        };
        let values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(
            counts(&values).percentiles(),
            Percentiles {
                p50: Some(50.0),
                p95: Some(95.0)
            }
        );
        assert_eq!(counts(&[7.0]).percentiles().p95, Some(7.0));
        assert_eq!(counts(&[]).percentiles(), Percentiles::default());
        // Repeated values and the total order of floats (negative zero,
        // negatives) as f64::total_cmp sorts them.
        let mixed = [0.5, -1.0, 0.5, -0.0, 0.0, 2.0, 0.5, 1e-9];
        let mut sorted = mixed.to_vec();
        sorted.sort_by(f64::total_cmp);
        let merged = {
            let mut left = counts(&mixed[..3]);
            left.merge(counts(&mixed[3..]));
            left
        };
        for percent in [1, 25, 50, 75, 95, 100] {
            let rank = (percent * sorted.len()).div_ceil(100).max(1);
            assert_eq!(
                merged.nearest_rank(percent as u64).map(f64::to_bits),
                Some(sorted[rank - 1].to_bits()),
                "p{percent}"
            );
        }
    }

    #[test]
    fn groups_sum_and_count_by_node() {
        let day = 20_000 * DAY_MS;
        let events = vec![
            event(day, "eu-1", "a", closed(90_000, 100, None)),
            event(
                day + 1,
                "eu-1",
                "a",
                closed(30_000, 50, Some(ErrorCode::GeofenceRevoked)),
            ),
            event(day + 2, "us-1", "a", sample(0.5, 80.0)),
            event(day + 3, "eu-1", "b", sample(0.1, 10.0)),
            event(
                day + 4,
                "us-1",
                "a",
                EventKind::Geofence {
                    session_id: None,
                    decision: GeofenceDecision::Redirected { to: vec![] },
                },
            ),
            event(day - 1, "eu-1", "a", closed(1, 1, None)),
        ];
        let query = ReportQuery {
            since_ms: day,
            app: Some(AppId::from("a")),
            by: GroupBy::Node,
        };
        let report = build_report(&events, &query);
        assert_eq!(report.groups.len(), 2);
        let eu = &report.groups[0];
        assert_eq!(eu.key, "eu-1");
        assert_eq!(eu.participant_minutes, 2.0);
        assert_eq!((eu.bytes_in, eu.bytes_out), (150, 300));
        assert_eq!(eu.close_codes["GEOFENCE_REVOKED"], 1);
        assert_eq!(eu.quality_samples, 0, "app b's sample is filtered out");
        let us = &report.groups[1];
        assert_eq!(us.refusals["GEOFENCE_REDIRECT"], 1);
        assert_eq!(us.rtt_ms.p50, Some(80.0));

        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(
            build_report(&reversed, &query),
            report,
            "order does not matter"
        );
        assert!(report.to_text().contains("eu-1"));
    }
}
