//! The geofence audit: what each node carried for one app over a period,
//! and whether it was allowed to under the policy in force at the time.
//!
//! The audit works on aggregates, so that a fleet with one store per region
//! can be audited without any row leaving its region. Each store contributes
//! [`AuditInputs`]:
//! - the canonical policies it holds (`policy` events), checked against
//!   their versions;
//! - [`FlowTotals`]: the app's `traffic` records summed per (node, region,
//!   policy version, direction, peer);
//! - [`Island`]s: the spans of time each node reported (`traffic_interval`
//!   markers, consecutive intervals joined).
//!
//! [`judge`] decides, per flow, whether it breaks the policy of its
//! version: the recording node's region is not allowed for the app, or the
//! peer node it exchanged media with is not. Only the flows that break it
//! are then read per interval ([`ViolatingFlow`] → [`Violation`]), again
//! from each store. [`Audit::build`] merges everything into the report:
//! per node and region, totals, violations, and what the records cannot
//! prove (intervals a node did not report, nodes without records, versions
//! whose policy is not stored).
//!
//! The in-memory implementation ([`AuditInputs::from_events`],
//! [`violations_from_events`]) serves the SQLite store and is the reference
//! the PostgreSQL queries are tested against.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::CanonicalPolicy;
use crate::ids::AppId;
use crate::metadata::day::{DAY_MS, UtcDay};
use crate::metadata::event::{Direction, Event, EventKind, TrafficPeer};

/// Consecutive intervals closer than this are one island of reporting.
pub const COVERAGE_TOLERANCE_MS: u64 = 1000;
/// Gaps listed per node; more are counted, not listed.
const MAX_GAPS_LISTED: usize = 50;

/// What to audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// The app.
    pub app: AppId,
    /// Records whose interval starts at or after this instant (Unix ms).
    pub since_ms: u64,
    /// ... and before this one.
    pub until_ms: u64,
}

impl AuditQuery {
    /// Policies are read from the start of the first day: every day file or
    /// partition holds the policies its records refer to.
    pub fn policies_since_ms(&self) -> u64 {
        UtcDay::of_unix_ms(self.since_ms).start_ms()
    }
}

/// One app's traffic records summed per node, version, direction and peer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowTotals {
    /// The recording node.
    pub node: String,
    /// Its region, as recorded.
    pub region: String,
    /// The policy version the records carry.
    pub policy_version: String,
    /// `in` or `out`.
    pub direction: String,
    /// `clients` or `node:<id>`.
    pub peer: String,
    /// Summed packets.
    pub packets: u64,
    /// Summed bytes.
    pub bytes: u64,
}

/// A span of time one node reported without a gap.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Island {
    /// The node.
    pub node: String,
    /// Its region.
    pub region: String,
    /// The start of its first interval.
    pub start_ms: u64,
    /// The end of its last interval.
    pub end_ms: u64,
}

/// (node, region, policy version, direction, peer).
type FlowKey = (String, String, String, String, String);

/// What one store contributes to an audit: aggregates only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditInputs {
    /// Stored policies: (version as stored, canonical policy as JSON).
    pub policies: Vec<(String, String)>,
    /// The app's flows.
    pub flows: Vec<FlowTotals>,
    /// Reporting islands of every node.
    pub islands: Vec<Island>,
}

/// A flow that breaks its policy, to be read per interval.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ViolatingFlow {
    /// The recording node.
    pub node: String,
    /// The policy version.
    pub policy_version: String,
    /// `in` or `out`.
    pub direction: String,
    /// `clients` or `node:<id>`.
    pub peer: String,
    /// Why it breaks the policy.
    pub reason: String,
}

/// One interval of a violating flow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Violation {
    /// The recording node.
    pub node: String,
    /// Its region.
    pub region: String,
    /// The interval's start (Unix ms).
    pub interval_start_ms: u64,
    /// Packets in the interval.
    pub packets: u64,
    /// Bytes in the interval.
    pub bytes: u64,
    /// The policy version in force.
    pub policy_version: String,
    /// `in` or `out`.
    pub direction: String,
    /// `clients` or `node:<id>`.
    pub peer: String,
    /// Why it breaks the policy.
    pub reason: String,
}

impl AuditInputs {
    /// The inputs computed from a store's events (read from
    /// [`AuditQuery::policies_since_ms`]).
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = &'a Event>,
        query: &AuditQuery,
    ) -> Self {
        let mut policies = BTreeMap::new();
        let mut flows: BTreeMap<FlowKey, (u64, u64)> = BTreeMap::new();
        let mut markers: BTreeMap<String, Vec<(u64, u64, String)>> = BTreeMap::new();
        for event in events {
            let in_period = (query.since_ms..query.until_ms).contains(&event.at_ms);
            match &event.kind {
                EventKind::Policy { version, policy }
                    if (query.policies_since_ms()..query.until_ms).contains(&event.at_ms) =>
                {
                    policies
                        .entry(version.to_string())
                        .or_insert_with(|| policy.encode());
                }
                EventKind::Traffic {
                    direction,
                    peer,
                    packets,
                    bytes,
                    policy_version,
                    ..
                } if in_period && event.app.as_ref() == Some(&query.app) => {
                    let key = (
                        event.node.to_string(),
                        event.region.to_string(),
                        policy_version.to_string(),
                        direction_name(*direction).to_owned(),
                        peer.to_string(),
                    );
                    let sums = flows.entry(key).or_default();
                    sums.0 = sums.0.saturating_add(*packets);
                    sums.1 = sums.1.saturating_add(*bytes);
                }
                EventKind::TrafficInterval { interval_ms, .. } if in_period => {
                    markers.entry(event.node.to_string()).or_default().push((
                        event.at_ms,
                        event.at_ms.saturating_add(*interval_ms),
                        event.region.to_string(),
                    ));
                }
                _ => {}
            }
        }
        let flows = flows
            .into_iter()
            .map(
                |((node, region, policy_version, direction, peer), (packets, bytes))| FlowTotals {
                    node,
                    region,
                    policy_version,
                    direction,
                    peer,
                    packets,
                    bytes,
                },
            )
            .collect();
        let mut islands = Vec::new();
        for (node, mut spans) in markers {
            spans.sort();
            let mut current: Option<Island> = None;
            for (start_ms, end_ms, region) in spans {
                match &mut current {
                    Some(island) if start_ms <= island.end_ms + COVERAGE_TOLERANCE_MS => {
                        island.end_ms = island.end_ms.max(end_ms);
                    }
                    _ => {
                        islands.extend(current.take());
                        current = Some(Island {
                            node: node.clone(),
                            region,
                            start_ms,
                            end_ms,
                        });
                    }
                }
            }
            islands.extend(current);
        }
        Self {
            policies: policies.into_iter().collect(),
            flows,
            islands,
        }
    }

    /// Whether the app has records, or a stored policy names it.
    pub fn knows_app(&self, app: &AppId) -> bool {
        !self.flows.is_empty()
            || self.policies.iter().any(|(_, json)| {
                serde_json::from_str::<CanonicalPolicy>(json)
                    .is_ok_and(|policy| policy.apps.contains_key(app.as_str()))
            })
    }

    /// Adds another store's inputs.
    pub fn merge(&mut self, other: AuditInputs) {
        self.policies.extend(other.policies);
        self.flows.extend(other.flows);
        self.islands.extend(other.islands);
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::In => "in",
        Direction::Out => "out",
    }
}

/// The stored policies that hash to their version, and the versions whose
/// stored policy does not (a damaged or forged record).
fn verified_policies(
    stored: &[(String, String)],
) -> (BTreeMap<String, CanonicalPolicy>, BTreeSet<String>) {
    let mut good = BTreeMap::new();
    let mut bad = BTreeSet::new();
    for (version, json) in stored {
        match serde_json::from_str::<CanonicalPolicy>(json) {
            Ok(policy) if policy.version().to_string() == *version => {
                good.insert(version.clone(), policy);
            }
            _ => {
                bad.insert(version.clone());
            }
        }
    }
    bad.retain(|version| !good.contains_key(version));
    (good, bad)
}

/// The flows that break the policy of their version. Flows of a version
/// with no stored policy are not judged (the report says so).
pub fn judge(inputs: &AuditInputs, app: &AppId) -> Vec<ViolatingFlow> {
    let (policies, _) = verified_policies(&inputs.policies);
    let mut violating = BTreeSet::new();
    for flow in &inputs.flows {
        let Some(policy) = policies.get(&flow.policy_version) else {
            continue;
        };
        if let Some(reason) = breach(policy, app, flow) {
            violating.insert(ViolatingFlow {
                node: flow.node.clone(),
                policy_version: flow.policy_version.clone(),
                direction: flow.direction.clone(),
                peer: flow.peer.clone(),
                reason,
            });
        }
    }
    violating.into_iter().collect()
}

/// Why `flow` breaks `policy` for `app`, if it does.
fn breach(policy: &CanonicalPolicy, app: &AppId, flow: &FlowTotals) -> Option<String> {
    let Some(rules) = policy.apps.get(app.as_str()) else {
        return Some(format!(
            "app {app} is not in policy {}",
            flow.policy_version
        ));
    };
    let region = policy
        .nodes
        .get(&flow.node)
        .map_or(flow.region.as_str(), |node| node.region.as_str());
    if !rules.region_allowed(region) {
        return Some(format!(
            "node {} is in region {region}, which app {app} does not allow",
            flow.node
        ));
    }
    let peer = TrafficPeer::parse(&flow.peer)?;
    let peer_node = peer.node()?;
    match policy.nodes.get(peer_node.as_str()) {
        None => Some(format!(
            "exchanged media with {peer_node}, which is not a node of the policy"
        )),
        Some(node) if !rules.region_allowed(&node.region) => Some(format!(
            "exchanged media with {peer_node} in region {}, which app {app} does not allow",
            node.region
        )),
        Some(_) => None,
    }
}

/// The violating flows' records summed per interval, from a store's events.
pub fn violations_from_events<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    query: &AuditQuery,
    violating: &[ViolatingFlow],
) -> Vec<Violation> {
    let mut sums: BTreeMap<(usize, String, u64), (u64, u64)> = BTreeMap::new();
    for event in events {
        let EventKind::Traffic {
            direction,
            peer,
            packets,
            bytes,
            policy_version,
            ..
        } = &event.kind
        else {
            continue;
        };
        if !(query.since_ms..query.until_ms).contains(&event.at_ms)
            || event.app.as_ref() != Some(&query.app)
        {
            continue;
        }
        let (version, peer) = (policy_version.to_string(), peer.to_string());
        let Some(index) = violating.iter().position(|flow| {
            flow.node == event.node.as_str()
                && flow.policy_version == version
                && flow.direction == direction_name(*direction)
                && flow.peer == peer
        }) else {
            continue;
        };
        let sum = sums
            .entry((index, event.region.to_string(), event.at_ms))
            .or_default();
        sum.0 = sum.0.saturating_add(*packets);
        sum.1 = sum.1.saturating_add(*bytes);
    }
    sums.into_iter()
        .map(|((index, region, at_ms), (packets, bytes))| {
            let flow = &violating[index];
            Violation {
                node: flow.node.clone(),
                region,
                interval_start_ms: at_ms,
                packets,
                bytes,
                policy_version: flow.policy_version.clone(),
                direction: flow.direction.clone(),
                peer: flow.peer.clone(),
                reason: flow.reason.clone(),
            }
        })
        .collect()
}

/// One node's line of the audit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeAudit {
    /// The node.
    pub node: String,
    /// Its region.
    pub region: String,
    /// Whether the app allowed the node under every policy version in force
    /// in the period (versions without a stored policy do not count).
    pub allowed: bool,
    /// The versions in force under which the app allowed the node.
    pub allowed_under: Vec<String>,
    /// Packets received (from clients and peers).
    pub packets_in: u64,
    /// Packets forwarded.
    pub packets_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes forwarded.
    pub bytes_out: u64,
    /// Packets received from or forwarded to other nodes (transit and
    /// mesh delivery), a part of the totals above.
    pub mesh_packets: u64,
    /// Milliseconds of the period the node reported.
    pub reported_ms: u64,
}

/// A span of the period a node did not report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The node.
    pub node: String,
    /// Start (Unix ms).
    pub from_ms: u64,
    /// End (Unix ms).
    pub until_ms: u64,
}

/// What the records cannot prove.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Spans a node did not report (listed up to 50 per node).
    pub gaps: Vec<Gap>,
    /// Gaps not listed.
    pub gaps_not_listed: u64,
    /// Nodes of the policies in force with no report at all in the period.
    pub nodes_without_records: Vec<String>,
    /// Versions carried by records whose policy is not stored: those
    /// records were not judged.
    pub unjudged_policy_versions: Vec<String>,
    /// Versions whose stored policy does not hash to the version.
    pub mismatched_policies: Vec<String>,
}

/// The audit report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// The app.
    pub app: String,
    /// The period's start (Unix ms).
    pub since_ms: u64,
    /// The period's end (Unix ms).
    pub until_ms: u64,
    /// The policy versions in force in the period.
    pub policy_versions: Vec<String>,
    /// Per node, in region then node order.
    pub nodes: Vec<NodeAudit>,
    /// Every interval of a flow that broke its policy.
    pub violations: Vec<Violation>,
    /// What the records cannot prove.
    pub coverage: Coverage,
    /// The stores read, e.g. `sqlite:/var/lib/georelay/metadata` or
    /// `postgres region eu`.
    pub sources: Vec<String>,
}

impl Audit {
    /// Builds the report from every store's inputs and violations.
    pub fn build(
        query: &AuditQuery,
        inputs: &AuditInputs,
        mut violations: Vec<Violation>,
        sources: Vec<String>,
    ) -> Self {
        let app = query.app.as_str();
        let (policies, mismatched) = verified_policies(&inputs.policies);
        let mut in_force: BTreeSet<String> = inputs
            .flows
            .iter()
            .map(|flow| flow.policy_version.clone())
            .collect();
        // Versions recorded inside the period are in force too, even where
        // nothing was carried.
        in_force.extend(policies.keys().cloned());
        let mut nodes: BTreeMap<String, NodeAudit> = BTreeMap::new();
        for version in &in_force {
            if let Some(policy) = policies.get(version) {
                for (id, node) in &policy.nodes {
                    nodes.entry(id.clone()).or_insert_with(|| NodeAudit {
                        node: id.clone(),
                        region: node.region.clone(),
                        ..NodeAudit::default()
                    });
                }
            }
        }
        for flow in &inputs.flows {
            let line = nodes.entry(flow.node.clone()).or_insert_with(|| NodeAudit {
                node: flow.node.clone(),
                region: flow.region.clone(),
                ..NodeAudit::default()
            });
            if flow.direction == "in" {
                line.packets_in += flow.packets;
                line.bytes_in += flow.bytes;
            } else {
                line.packets_out += flow.packets;
                line.bytes_out += flow.bytes;
            }
            if flow.peer != "clients" {
                line.mesh_packets += flow.packets;
            }
        }
        let mut coverage = Coverage {
            mismatched_policies: mismatched.into_iter().collect(),
            ..Coverage::default()
        };
        coverage.unjudged_policy_versions = in_force
            .iter()
            .filter(|version| !policies.contains_key(*version))
            .cloned()
            .collect();
        let mut islands: BTreeMap<&str, Vec<&Island>> = BTreeMap::new();
        for island in &inputs.islands {
            islands
                .entry(island.node.as_str())
                .or_default()
                .push(island);
            nodes
                .entry(island.node.clone())
                .or_insert_with(|| NodeAudit {
                    node: island.node.clone(),
                    region: island.region.clone(),
                    ..NodeAudit::default()
                });
        }
        for line in nodes.values_mut() {
            let allowed_under: Vec<String> = in_force
                .iter()
                .filter(|version| {
                    policies
                        .get(*version)
                        .and_then(|policy| policy.node_allowed(app, &line.node))
                        == Some(true)
                })
                .cloned()
                .collect();
            let judged = in_force
                .iter()
                .filter(|version| policies.contains_key(*version))
                .count();
            line.allowed = judged > 0 && allowed_under.len() == judged;
            line.allowed_under = allowed_under;
            let Some(spans) = islands.get_mut(line.node.as_str()) else {
                coverage.nodes_without_records.push(line.node.clone());
                continue;
            };
            spans.sort();
            let mut cursor = query.since_ms;
            let mut listed = 0;
            let mut gaps = Vec::new();
            for island in spans.iter() {
                let start = island.start_ms.max(query.since_ms);
                let end = island.end_ms.min(query.until_ms);
                if start > cursor + COVERAGE_TOLERANCE_MS {
                    gaps.push((cursor, start));
                }
                if end > cursor {
                    line.reported_ms += end - start.max(cursor);
                    cursor = end;
                }
            }
            if query.until_ms > cursor + COVERAGE_TOLERANCE_MS {
                gaps.push((cursor, query.until_ms));
            }
            for (from_ms, until_ms) in gaps {
                if listed < MAX_GAPS_LISTED {
                    coverage.gaps.push(Gap {
                        node: line.node.clone(),
                        from_ms,
                        until_ms,
                    });
                    listed += 1;
                } else {
                    coverage.gaps_not_listed += 1;
                }
            }
        }
        let mut lines: Vec<NodeAudit> = nodes.into_values().collect();
        lines.sort_by(|a, b| (&a.region, &a.node).cmp(&(&b.region, &b.node)));
        violations.sort();
        Audit {
            app: app.to_owned(),
            since_ms: query.since_ms,
            until_ms: query.until_ms,
            policy_versions: in_force.into_iter().collect(),
            nodes: lines,
            violations,
            coverage,
            sources,
        }
    }

    /// Whether any violation was found.
    pub fn has_violations(&self) -> bool {
        !self.violations.is_empty()
    }

    /// The report for people: a table per region and node, totals, the
    /// period, the violations and what the records cannot prove.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "Geofence audit of app {}", self.app)?;
        writeln!(
            out,
            "Period: {} to {} (UTC), {}",
            utc_time(self.since_ms),
            utc_time(self.until_ms),
            span(self.until_ms.saturating_sub(self.since_ms))
        )?;
        writeln!(out, "Read from: {}", self.sources.join(", "))?;
        if self.policy_versions.is_empty() {
            writeln!(
                out,
                "Policy versions in force: none recorded in this period"
            )?;
        } else {
            writeln!(
                out,
                "Policy versions in force: {}",
                self.policy_versions.join(", ")
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "{:<10} {:<16} {:<8} {:>12} {:>12} {:>14} {:>14} {:>12} {:>9}",
            "region",
            "node",
            "allowed",
            "packets in",
            "packets out",
            "bytes in",
            "bytes out",
            "via mesh",
            "reported"
        )?;
        let mut total = NodeAudit::default();
        let mut regions = self.nodes.iter().peekable();
        while let Some(first) = regions.peek() {
            let region = first.region.clone();
            let mut subtotal = NodeAudit::default();
            let mut count = 0;
            while let Some(line) = regions.next_if(|line| line.region == region) {
                let allowed = if line.allowed {
                    "yes"
                } else if line.allowed_under.is_empty() {
                    "no"
                } else {
                    "partly"
                };
                let reported = if self.until_ms > self.since_ms {
                    format!(
                        "{:.0}%",
                        100.0 * line.reported_ms as f64 / (self.until_ms - self.since_ms) as f64
                    )
                } else {
                    "-".to_owned()
                };
                writeln!(
                    out,
                    "{:<10} {:<16} {:<8} {:>12} {:>12} {:>14} {:>14} {:>12} {:>9}",
                    region,
                    line.node,
                    allowed,
                    line.packets_in,
                    line.packets_out,
                    line.bytes_in,
                    line.bytes_out,
                    line.mesh_packets,
                    reported
                )?;
                add(&mut subtotal, line);
                count += 1;
            }
            if count > 1 {
                writeln!(
                    out,
                    "{:<10} {:<16} {:<8} {:>12} {:>12} {:>14} {:>14} {:>12}",
                    "",
                    format!("{region} total"),
                    "",
                    subtotal.packets_in,
                    subtotal.packets_out,
                    subtotal.bytes_in,
                    subtotal.bytes_out,
                    subtotal.mesh_packets
                )?;
            }
            add(&mut total, &subtotal);
        }
        writeln!(
            out,
            "{:<10} {:<16} {:<8} {:>12} {:>12} {:>14} {:>14} {:>12}",
            "all",
            "total",
            "",
            total.packets_in,
            total.packets_out,
            total.bytes_in,
            total.bytes_out,
            total.mesh_packets
        )?;
        writeln!(out)?;
        if self.violations.is_empty() {
            writeln!(
                out,
                "Violations: none. No record shows media of {} on a node, or exchanged with a node, that the policy in force did not allow.",
                self.app
            )?;
        } else {
            writeln!(out, "Violations: {}", self.violations.len())?;
            for violation in &self.violations {
                writeln!(
                    out,
                    "  {} {} ({}): {} packets, {} bytes {} {} under policy {}: {}",
                    utc_time(violation.interval_start_ms),
                    violation.node,
                    violation.region,
                    violation.packets,
                    violation.bytes,
                    if violation.direction == "in" {
                        "from"
                    } else {
                        "to"
                    },
                    violation.peer,
                    violation.policy_version,
                    violation.reason
                )?;
            }
        }
        writeln!(out)?;
        writeln!(out, "What these records cannot prove:")?;
        for gap in &self.coverage.gaps {
            writeln!(
                out,
                "  - {} did not report from {} to {} ({}): what it carried then is unknown.",
                gap.node,
                utc_time(gap.from_ms),
                utc_time(gap.until_ms),
                span(gap.until_ms - gap.from_ms)
            )?;
        }
        if self.coverage.gaps_not_listed > 0 {
            writeln!(
                out,
                "  - {} more gaps not listed.",
                self.coverage.gaps_not_listed
            )?;
        }
        for node in &self.coverage.nodes_without_records {
            writeln!(
                out,
                "  - {node} has no records in this period (not running, metadata disabled, or its store was not read)."
            )?;
        }
        for version in &self.coverage.unjudged_policy_versions {
            writeln!(
                out,
                "  - records under policy {version} were not judged: its policy is not stored in the stores read."
            )?;
        }
        for version in &self.coverage.mismatched_policies {
            writeln!(
                out,
                "  - the stored policy of version {version} does not hash to its version (damaged or altered)."
            )?;
        }
        writeln!(
            out,
            "  - Records are each node's own counters, written by the node; a node that was\n    compromised or ran another build could under-report. Intervals whose events\n    were dropped (a full queue, a crash before a flush) appear as gaps above."
        )?;
        Ok(())
    }
}

fn add(total: &mut NodeAudit, line: &NodeAudit) {
    total.packets_in += line.packets_in;
    total.packets_out += line.packets_out;
    total.bytes_in += line.bytes_in;
    total.bytes_out += line.bytes_out;
    total.mesh_packets += line.mesh_packets;
}

/// `2026-12-01 09:30:05`.
fn utc_time(unix_ms: u64) -> String {
    let day = UtcDay::of_unix_ms(unix_ms);
    let secs = (unix_ms % DAY_MS) / 1000;
    format!(
        "{day} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `2 h 5 min`, `40 s`.
fn span(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs / 60 % 60),
        _ => format!("{} d {} h", secs / 86_400, secs / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Fleet;
    use crate::ids::{NodeId, RegionId};

    use crate::config::TEST_FLEET as FLEET;

    const T0: u64 = 20_000 * DAY_MS;
    const MINUTE: u64 = 60_000;

    /// What a node records: its policy at start, then per one-minute
    /// interval its flows and the marker.
    fn node_events(
        fleet: &Fleet,
        node: &str,
        region: &str,
        minutes: std::ops::RangeInclusive<u64>,
        flow: Option<(Direction, TrafficPeer, u64)>,
    ) -> Vec<Event> {
        let version = fleet.policy_version();
        let event = |at_ms, app: Option<&str>, kind| Event {
            at_ms,
            node: NodeId::from(node),
            region: RegionId::from(region),
            app: app.map(AppId::from),
            kind,
        };
        let first = T0 + (minutes.start() - 1) * MINUTE;
        let mut events = vec![event(
            first,
            None,
            EventKind::Policy {
                version,
                policy: Box::new(fleet.canonical_policy()),
            },
        )];
        for minute in minutes {
            let start = T0 + (minute - 1) * MINUTE;
            if let Some((direction, peer, packets)) = &flow {
                events.push(event(
                    start,
                    Some("acme"),
                    EventKind::Traffic {
                        interval_ms: MINUTE,
                        direction: *direction,
                        peer: peer.clone(),
                        packets: *packets,
                        bytes: 100 * packets,
                        policy_version: version,
                    },
                ));
            }
            events.push(event(
                start,
                None,
                EventKind::TrafficInterval {
                    interval_ms: MINUTE,
                    policy_version: version,
                },
            ));
        }
        events
    }

    /// Ten minutes of fra carrying acme from clients (100 packets a
    /// minute); lon only reports idle intervals, from minute 2 to minute 8.
    fn clean_events(fleet: &Fleet) -> Vec<Event> {
        let mut events = node_events(
            fleet,
            "eu-fra-1",
            "eu",
            1..=10,
            Some((Direction::In, TrafficPeer::Clients, 100)),
        );
        events.extend(node_events(fleet, "uk-lon-1", "uk", 3..=8, None));
        events
    }

    fn query() -> AuditQuery {
        AuditQuery {
            app: AppId::from("acme"),
            since_ms: T0,
            until_ms: T0 + 10 * MINUTE,
        }
    }

    fn audit(events: &[Event]) -> Audit {
        let query = query();
        let inputs = AuditInputs::from_events(events, &query);
        let violating = judge(&inputs, &query.app);
        let violations = violations_from_events(events, &query, &violating);
        Audit::build(&query, &inputs, violations, vec!["test".into()])
    }

    #[test]
    fn a_clean_period_has_totals_coverage_and_no_violation() {
        let fleet = Fleet::parse(FLEET, Path::new("/srv/regions.toml")).unwrap();
        let audit = audit(&clean_events(&fleet));
        assert!(!audit.has_violations(), "{audit:#?}");
        assert_eq!(audit.policy_versions, [fleet.policy_version().to_string()]);
        let fra = &audit.nodes[0];
        assert_eq!((fra.node.as_str(), fra.region.as_str()), ("eu-fra-1", "eu"));
        assert!(fra.allowed);
        assert_eq!((fra.packets_in, fra.bytes_in), (1000, 100_000));
        assert_eq!(fra.reported_ms, 10 * MINUTE);
        let lon = &audit.nodes[1];
        assert_eq!((lon.node.as_str(), lon.allowed), ("uk-lon-1", false));
        assert_eq!(lon.packets_in + lon.packets_out, 0);
        assert_eq!(lon.reported_ms, 6 * MINUTE);
        assert_eq!(
            audit.coverage.gaps,
            [
                Gap {
                    node: "uk-lon-1".into(),
                    from_ms: T0,
                    until_ms: T0 + 2 * MINUTE
                },
                Gap {
                    node: "uk-lon-1".into(),
                    from_ms: T0 + 8 * MINUTE,
                    until_ms: T0 + 10 * MINUTE
                },
            ]
        );
        let text = audit.to_text();
        assert!(text.contains("Violations: none"), "{text}");
        assert!(text.contains("uk-lon-1 did not report from 2024-10-04 00:00:00 to 2024-10-04 00:02:00 (2 min 0 s)"), "{text}");
        assert!(text.contains("all        total"), "{text}");
    }

    #[test]
    fn a_record_on_a_disallowed_node_or_peer_is_a_violation() {
        let fleet = Fleet::parse(FLEET, Path::new("/srv/regions.toml")).unwrap();
        let mut events = clean_events(&fleet);
        let version = fleet.policy_version();
        let traffic = |node: &str, region: &str, direction, peer: &str, at_ms| Event {
            at_ms,
            node: NodeId::from(node),
            region: RegionId::from(region),
            app: Some(AppId::from("acme")),
            kind: EventKind::Traffic {
                interval_ms: MINUTE,
                direction,
                peer: TrafficPeer::parse(peer).unwrap(),
                packets: 3,
                bytes: 300,
                policy_version: version,
            },
        };
        events.push(traffic(
            "uk-lon-1",
            "uk",
            Direction::In,
            "node:eu-fra-1",
            T0 + 4 * MINUTE,
        ));
        events.push(traffic(
            "eu-fra-1",
            "eu",
            Direction::Out,
            "node:uk-lon-1",
            T0 + 4 * MINUTE,
        ));
        // Outside the period: not reported.
        events.push(traffic(
            "uk-lon-1",
            "uk",
            Direction::In,
            "clients",
            T0 + 11 * MINUTE,
        ));
        let audit = audit(&events);
        assert_eq!(audit.violations.len(), 2, "{:#?}", audit.violations);
        let fra = &audit.violations[0];
        assert_eq!(
            (fra.node.as_str(), fra.peer.as_str()),
            ("eu-fra-1", "node:uk-lon-1")
        );
        assert!(
            fra.reason.contains("uk-lon-1 in region uk"),
            "{}",
            fra.reason
        );
        let lon = &audit.violations[1];
        assert_eq!(
            (
                lon.node.as_str(),
                lon.region.as_str(),
                lon.interval_start_ms,
                lon.packets,
                lon.bytes
            ),
            ("uk-lon-1", "uk", T0 + 4 * MINUTE, 3, 300)
        );
        assert_eq!(lon.policy_version, version.to_string());
        assert!(audit.to_text().contains("Violations: 2"));
    }

    #[test]
    fn records_of_an_unknown_or_altered_policy_are_not_judged_but_reported() {
        let fleet = Fleet::parse(FLEET, Path::new("/srv/regions.toml")).unwrap();
        let mut events = clean_events(&fleet);
        for event in &mut events {
            if let EventKind::Policy { policy, .. } = &mut event.kind {
                policy
                    .apps
                    .get_mut("acme")
                    .unwrap()
                    .regions
                    .insert("uk".into());
            }
        }
        let audit = audit(&events);
        let version = fleet.policy_version().to_string();
        assert_eq!(audit.coverage.mismatched_policies, vec![version.clone()]);
        assert_eq!(audit.coverage.unjudged_policy_versions, [version]);
        assert!(!audit.nodes.iter().any(|node| node.allowed));
    }
}
