//! Traffic records: what a node carried, per interval, app, direction and
//! peer, under which policy version.
//!
//! The relay keeps cumulative counters (packets and bytes since the node
//! started, per [`TrafficKey`]) and hands a [`TrafficSnapshot`] of them to
//! [`TrafficRecorder::record_interval`] every `[metadata]
//! traffic_interval_secs` and once more on shutdown (the partial interval).
//! The recorder turns the difference since the previous call into
//! [`EventKind::Traffic`] events (one per key that moved), always adds one
//! [`EventKind::TrafficInterval`] marker (so an audit can tell an idle
//! interval from a missing one), and records the canonical policy
//! ([`EventKind::Policy`]) when it starts, when the policy changes and on
//! the first interval of each UTC day (so each day file or partition holds
//! the policies its records refer to, whatever the retention removed).
//!
//! [`TrafficMeter`] is a ready-made home for those cumulative counters: the
//! relay asks it once for the [`TrafficCounter`] of a key (when a session
//! or link learns its app and peer) and keeps the handle; counting a packet
//! is then two relaxed atomic additions, and [`TrafficMeter::snapshot`]
//! gives the snapshot. Keys come from the config (apps, node ids) plus
//! `clients`, so the meter is bounded by the config's size.
//!
//! Everything goes through the non-blocking [`Recorder`]: the same stores,
//! batching, per-app retention and sweeper as every other event. A record
//! holds counts only: there is no field that could hold a payload byte.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{CanonicalPolicy, Fleet, PolicyVersion};
use crate::ids::{AppId, NodeId, RegionId};
use crate::metadata::MetadataError;
use crate::metadata::day::UtcDay;
pub use crate::metadata::event::{Direction, TrafficPeer};
use crate::metadata::event::{Event, EventKind};
use crate::metadata::recorder::Recorder;

/// One counter of the relay: an app's media in one direction with one peer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrafficKey {
    /// The app.
    pub app: AppId,
    /// Received or forwarded.
    pub direction: Direction,
    /// From or to whom.
    pub peer: TrafficPeer,
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounts {
    /// Media packets (datagrams and messages).
    pub packets: u64,
    /// Media bytes.
    pub bytes: u64,
}

/// The relay's cumulative counters (since the node started) at one moment.
pub type TrafficSnapshot = BTreeMap<TrafficKey, TrafficCounts>;

/// One cumulative counter of packets and bytes, shared by the tasks that
/// count and the one that snapshots.
#[derive(Debug, Default)]
pub struct TrafficCounter {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl TrafficCounter {
    /// Counts one packet of `bytes` bytes.
    pub fn add(&self, bytes: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn counts(&self) -> TrafficCounts {
        TrafficCounts {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The relay's cumulative traffic counters of one node, by key.
#[derive(Debug, Default)]
pub struct TrafficMeter {
    counters: Mutex<BTreeMap<TrafficKey, Arc<TrafficCounter>>>,
}

impl TrafficMeter {
    /// The counter of `key`, created at zero the first time. Keep the
    /// handle: counting through it takes no lock.
    pub fn counter(&self, key: TrafficKey) -> Arc<TrafficCounter> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(counters.entry(key).or_default())
    }

    /// Every counter's value now, for [`TrafficRecorder::record_interval`].
    pub fn snapshot(&self) -> TrafficSnapshot {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .iter()
            .map(|(key, counter)| (key.clone(), counter.counts()))
            .collect()
    }
}

/// Turns the relay's cumulative counters into traffic records, one
/// interval at a time. One per node; not shared between tasks (wrap it in
/// a mutex if the relay needs to).
#[derive(Debug)]
pub struct TrafficRecorder {
    recorder: Recorder,
    node: NodeId,
    region: RegionId,
    policy: CanonicalPolicy,
    version: PolicyVersion,
    interval_start_ms: u64,
    previous: TrafficSnapshot,
    policy_recorded_on: Option<UtcDay>,
}

impl TrafficRecorder {
    /// Starts recording for `node` of `fleet` at `now_ms` (Unix ms, from the
    /// node's clock): records the policy now in force. The first interval
    /// starts now, from counters at zero. Fails if `fleet` has no such node.
    pub fn start(
        recorder: Recorder,
        fleet: &Fleet,
        node: &NodeId,
        now_ms: u64,
    ) -> Result<Self, MetadataError> {
        let region = fleet
            .node(node.as_str())
            .map(|node| node.region.clone())
            .ok_or_else(|| MetadataError::UnknownNode(node.to_string()))?;
        let policy = fleet.canonical_policy();
        let mut traffic = Self {
            recorder,
            node: node.clone(),
            region,
            version: policy.version(),
            policy,
            interval_start_ms: now_ms,
            previous: TrafficSnapshot::new(),
            policy_recorded_on: None,
        };
        traffic.record_policy(now_ms);
        Ok(traffic)
    }

    /// The policy version the records carry now.
    pub fn policy_version(&self) -> PolicyVersion {
        self.version
    }

    /// Closes the interval that started at the previous call (or at
    /// [`TrafficRecorder::start`]) at `now_ms`: records what each counter
    /// of `cumulative` gained since then, and the interval marker. A counter
    /// that went down was reset (e.g. a link re-created): its whole value is
    /// the interval's. Call it every `traffic_interval_secs` and on shutdown.
    pub fn record_interval(&mut self, now_ms: u64, cumulative: &TrafficSnapshot) {
        let start_ms = self.interval_start_ms;
        let interval_ms = now_ms.saturating_sub(start_ms);
        if self.policy_recorded_on != Some(UtcDay::of_unix_ms(start_ms)) {
            self.record_policy(start_ms);
        }
        for (key, counts) in cumulative {
            let before = self.previous.get(key).copied().unwrap_or_default();
            let delta = if counts.packets >= before.packets && counts.bytes >= before.bytes {
                TrafficCounts {
                    packets: counts.packets - before.packets,
                    bytes: counts.bytes - before.bytes,
                }
            } else {
                *counts
            };
            if delta == TrafficCounts::default() {
                continue;
            }
            self.recorder.record(Event {
                at_ms: start_ms,
                node: self.node.clone(),
                region: self.region.clone(),
                app: Some(key.app.clone()),
                kind: EventKind::Traffic {
                    interval_ms,
                    direction: key.direction,
                    peer: key.peer.clone(),
                    packets: delta.packets,
                    bytes: delta.bytes,
                    policy_version: self.version,
                },
            });
        }
        self.recorder.record(Event {
            at_ms: start_ms,
            node: self.node.clone(),
            region: self.region.clone(),
            app: None,
            kind: EventKind::TrafficInterval {
                interval_ms,
                policy_version: self.version,
            },
        });
        self.previous.clone_from(cumulative);
        self.interval_start_ms = now_ms.max(start_ms);
    }

    /// A reload: closes the current interval under the old policy (with
    /// `cumulative`), then records and uses `fleet`'s policy. Call it when
    /// the node starts enforcing the new policy, so that no interval mixes
    /// two versions.
    pub fn change_policy(&mut self, now_ms: u64, cumulative: &TrafficSnapshot, fleet: &Fleet) {
        self.record_interval(now_ms, cumulative);
        let policy = fleet.canonical_policy();
        if let Some(node) = fleet.node(self.node.as_str()) {
            self.region = node.region.clone();
        }
        self.version = policy.version();
        self.policy = policy;
        self.record_policy(now_ms);
    }

    fn record_policy(&mut self, at_ms: u64) {
        self.recorder.record(Event {
            at_ms,
            node: self.node.clone(),
            region: self.region.clone(),
            app: None,
            kind: EventKind::Policy {
                version: self.version,
                policy: Box::new(self.policy.clone()),
            },
        });
        self.policy_recorded_on = Some(UtcDay::of_unix_ms(at_ms));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::metadata::day::DAY_MS;

    use crate::config::TEST_FLEET;

    /// [`TEST_FLEET`] with acme allowed in the UK too.
    fn fleet_allowing_uk() -> String {
        TEST_FLEET.replace(
            r#"allow_regions = ["eu"]"#,
            r#"allow_regions = ["eu", "uk"]"#,
        )
    }

    fn fleet(text: &str) -> Fleet {
        Fleet::parse(text, Path::new("/srv/regions.toml")).unwrap()
    }

    fn key(app: &str, direction: Direction, peer: TrafficPeer) -> TrafficKey {
        TrafficKey {
            app: AppId::from(app),
            direction,
            peer,
        }
    }

    fn counts(packets: u64, bytes: u64) -> TrafficCounts {
        TrafficCounts { packets, bytes }
    }

    fn drain(receiver: &mut tokio::sync::mpsc::Receiver<Event>) -> Vec<Event> {
        let mut events = Vec::new();
        while let Ok(event) = receiver.try_recv() {
            events.push(event);
        }
        events
    }

    #[test]
    fn the_meter_counts_through_shared_handles() {
        let meter = TrafficMeter::default();
        let from_clients = key("acme", Direction::In, TrafficPeer::Clients);
        let counter = meter.counter(from_clients.clone());
        let same = meter.counter(from_clients.clone());
        std::thread::scope(|scope| {
            for handle in [&counter, &same] {
                scope.spawn(move || {
                    for _ in 0..1000 {
                        handle.add(100);
                    }
                });
            }
        });
        meter.counter(key("acme", Direction::Out, TrafficPeer::Clients));
        let snapshot = meter.snapshot();
        assert_eq!(snapshot.len(), 2);
        assert_eq!(snapshot[&from_clients], counts(2000, 200_000));
    }

    #[test]
    fn peers_are_written_clients_or_node_id() {
        let uk = TrafficPeer::Node(NodeId::from("uk-lon-1"));
        assert_eq!(uk.to_string(), "node:uk-lon-1");
        assert_eq!(TrafficPeer::parse("node:uk-lon-1"), Some(uk.clone()));
        assert_eq!(TrafficPeer::parse("clients"), Some(TrafficPeer::Clients));
        assert_eq!(TrafficPeer::parse("node:"), None);
        assert_eq!(TrafficPeer::parse("uk-lon-1"), None);
        assert_eq!(serde_json::to_string(&uk).unwrap(), "\"node:uk-lon-1\"");
    }

    #[test]
    fn intervals_record_the_difference_markers_and_the_policy() {
        let fleet = fleet(&fleet_allowing_uk());
        let (recorder, mut receiver) = Recorder::channel(100);
        assert!(matches!(
            TrafficRecorder::start(recorder.clone(), &fleet, &NodeId::from("mars-1"), 0),
            Err(MetadataError::UnknownNode(node)) if node == "mars-1"
        ));
        let t0 = 20_000 * DAY_MS + 1000;
        let node = NodeId::from("eu-fra-1");
        let mut traffic = TrafficRecorder::start(recorder, &fleet, &node, t0).unwrap();
        let started = drain(&mut receiver);
        assert_eq!(started.len(), 1);
        assert!(
            matches!(&started[0].kind, EventKind::Policy { version, policy }
                if *version == fleet.policy_version() && policy.version() == *version)
        );

        let from_clients = key("acme", Direction::In, TrafficPeer::Clients);
        let to_uk = key(
            "acme",
            Direction::Out,
            TrafficPeer::Node(NodeId::from("uk-lon-1")),
        );
        let mut cumulative = TrafficSnapshot::from([
            (from_clients.clone(), counts(10, 1000)),
            (to_uk.clone(), counts(10, 1000)),
        ]);
        traffic.record_interval(t0 + 60_000, &cumulative);
        let first = drain(&mut receiver);
        assert_eq!(first.len(), 3, "{first:#?}");
        for event in &first {
            assert_eq!(
                event.at_ms, t0,
                "records are stamped with the interval start"
            );
            assert_eq!(event.region, RegionId::from("eu"));
        }
        assert_eq!(
            first[0].kind,
            EventKind::Traffic {
                interval_ms: 60_000,
                direction: Direction::In,
                peer: TrafficPeer::Clients,
                packets: 10,
                bytes: 1000,
                policy_version: fleet.policy_version(),
            }
        );
        assert_eq!(first[0].app, Some(AppId::from("acme")));
        assert_eq!(
            first[2].kind,
            EventKind::TrafficInterval {
                interval_ms: 60_000,
                policy_version: fleet.policy_version()
            }
        );
        assert_eq!(first[2].app, None);

        // Only what moved is recorded; an idle interval has its marker only.
        cumulative.insert(from_clients.clone(), counts(15, 1500));
        traffic.record_interval(t0 + 120_000, &cumulative);
        let second = drain(&mut receiver);
        assert_eq!(second.len(), 2, "{second:#?}");
        assert!(matches!(
            second[0].kind,
            EventKind::Traffic {
                packets: 5,
                bytes: 500,
                ..
            }
        ));
        assert_eq!(second[0].at_ms, t0 + 60_000);
        traffic.record_interval(t0 + 150_000, &cumulative);
        let idle = drain(&mut receiver);
        assert_eq!(idle.len(), 1);
        assert!(matches!(
            idle[0].kind,
            EventKind::TrafficInterval {
                interval_ms: 30_000,
                ..
            }
        ));

        // A counter that went down was reset: its value is the interval's.
        cumulative.insert(to_uk, counts(3, 300));
        traffic.record_interval(t0 + 210_000, &cumulative);
        let reset = drain(&mut receiver);
        assert!(matches!(
            reset[0].kind,
            EventKind::Traffic {
                packets: 3,
                bytes: 300,
                ..
            }
        ));

        // A new UTC day: the policy is recorded again with the first interval.
        traffic.record_interval(t0 + DAY_MS, &cumulative);
        drain(&mut receiver);
        traffic.record_interval(t0 + DAY_MS + 60_000, &cumulative);
        let next_day = drain(&mut receiver);
        assert!(
            matches!(next_day[0].kind, EventKind::Policy { .. }),
            "{next_day:#?}"
        );
        assert_eq!(next_day[0].at_ms, t0 + DAY_MS);
    }

    #[test]
    fn a_policy_change_closes_the_interval_under_the_old_version() {
        let old = fleet(&fleet_allowing_uk());
        let new = fleet(TEST_FLEET);
        assert_ne!(old.policy_version(), new.policy_version());
        let (recorder, mut receiver) = Recorder::channel(100);
        let t0 = 20_000 * DAY_MS;
        let node = NodeId::from("eu-fra-1");
        let mut traffic = TrafficRecorder::start(recorder, &old, &node, t0).unwrap();
        drain(&mut receiver);
        let cumulative = TrafficSnapshot::from([(
            key(
                "acme",
                Direction::Out,
                TrafficPeer::Node(NodeId::from("uk-lon-1")),
            ),
            counts(7, 700),
        )]);
        traffic.change_policy(t0 + 20_000, &cumulative, &new);
        let events = drain(&mut receiver);
        let kinds: Vec<&str> = events.iter().map(|event| event.kind.name()).collect();
        assert_eq!(kinds, ["traffic", "traffic_interval", "policy"]);
        assert!(
            matches!(events[0].kind, EventKind::Traffic { policy_version, .. } if policy_version == old.policy_version())
        );
        assert!(
            matches!(events[2].kind, EventKind::Policy { version, .. } if version == new.policy_version())
        );
        assert_eq!(events[2].at_ms, t0 + 20_000);
        assert_eq!(traffic.policy_version(), new.policy_version());
        traffic.record_interval(t0 + 80_000, &cumulative);
        let after = drain(&mut receiver);
        assert_eq!(after.len(), 1, "nothing moved since the reload: {after:#?}");
        assert!(
            matches!(after[0].kind, EventKind::TrafficInterval { policy_version, .. } if policy_version == new.policy_version())
        );
    }
}
