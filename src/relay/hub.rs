//! The node's shared state, thin: a mutex around the sans-IO
//! [`NodeCore`], the [`RouteTable`] that media reads without that mutex,
//! and what the core must not hold: the clock, the random track keys, the
//! metadata recorder and the metrics.
//!
//! Every control input (a session announced, a peer frame, a timer) locks
//! the core, passes it a monotonic `now` from [`crate::clock`], and turns
//! the core's [`CoreEvent`]s into metrics, log lines and metadata after the
//! lock is released. Media never takes the mutex: see [`super::routes`].
//!
//! Traffic records: when metadata and `[metadata] traffic_interval_secs`
//! are on, the hub's flow counters also count into a [`TrafficMeter`], and
//! the hub owns the node's [`TrafficRecorder`]: started with the hub,
//! closed by [`Hub::record_traffic_interval`] (the node's recorder task,
//! and the final partial interval on a clean shutdown) and by a policy
//! change in [`Hub::set_policy`].

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;

use crate::admin::metric_names as m;
use crate::admin::{ChannelSeen, LinkStatus, PeerVersion, ReloadReport, StatusReport};
use crate::clock::SharedClock;
use crate::error::ErrorCode;
use crate::ids::{AppId, NodeId, RegionId};
use crate::metadata::{
    Event, EventKind, GeofenceDecision, Recorder, TrafficMeter, TrafficRecorder,
};
use crate::wire::stream::Outbound;
use crate::wire::{Announce, Frame, PROTOCOL_VERSION, PeerHello};

use super::admission::Refusal;
use super::core::{CoreEvent, NodeCore, PeerEntry, SessionEntry};
use super::fanout::{AppCounters, DropCounters, DropReason};
use super::plane::{PeerMsg, RouteOutcome};
use super::policy::Policy;
use super::routes::{AppCounterSet, RouteTable};

/// A bounded queue of control frames to one connection. A receiver that does
/// not read its control stream is closed rather than buffered without end.
pub type ControlTx = tokio::sync::mpsc::Sender<crate::wire::stream::Outbound>;

/// How many control frames may wait for one connection.
pub const CONTROL_QUEUE: usize = 1024;

/// The shared state of one node. See the module docs.
pub struct Hub {
    me: NodeId,
    policy: RwLock<Arc<Policy>>,
    core: Mutex<NodeCore>,
    routes: Arc<RouteTable>,
    counters: Arc<AppCounterSet>,
    /// Drops at this node, by reason.
    pub drops: Arc<DropCounters>,
    deadline_moved: tokio::sync::Notify,
    rng: ring::rand::SystemRandom,
    clock: SharedClock,
    started: Instant,
    recorder: Recorder,
    traffic: Mutex<Option<TrafficRecorder>>,
    traffic_interval: Option<Duration>,
    /// The policy version each mesh peer last reported in `PEER_HELLO`.
    peer_versions: Mutex<std::collections::BTreeMap<NodeId, Option<String>>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node", &self.me)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// The hub of node `me` under `policy`.
    pub fn new(me: NodeId, policy: Arc<Policy>, clock: SharedClock, recorder: Recorder) -> Self {
        let started = crate::clock::monotonic_now();
        let drops = Arc::new(DropCounters::default());
        let routes = Arc::new(RouteTable::new(Arc::clone(&drops)));
        let interval_secs = policy.fleet.metadata.traffic_interval_secs;
        let traffic = (recorder.is_enabled() && interval_secs > 0)
            .then(|| {
                TrafficRecorder::start(recorder.clone(), &policy.fleet, &me, clock.now_unix_ms())
                    .inspect_err(|err| tracing::error!(node = %me, %err, "traffic records off"))
                    .ok()
            })
            .flatten();
        let counters = Arc::new(match traffic {
            Some(_) => AppCounterSet::with_meter(Arc::new(TrafficMeter::default())),
            None => AppCounterSet::default(),
        });
        let traffic_interval = traffic.as_ref().map(|_| Duration::from_secs(interval_secs));
        let core = NodeCore::new(
            me.clone(),
            Arc::clone(&policy),
            Arc::clone(&routes),
            Arc::clone(&counters),
            started,
            clock.now_unix_ms(),
        );
        Self {
            me,
            policy: RwLock::new(policy),
            core: Mutex::new(core),
            routes,
            counters,
            drops,
            deadline_moved: tokio::sync::Notify::new(),
            rng: ring::rand::SystemRandom::new(),
            clock,
            started,
            recorder,
            traffic: Mutex::new(traffic),
            traffic_interval,
            peer_versions: Mutex::default(),
        }
    }

    /// This node's id.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// This node's region.
    pub fn region(&self) -> RegionId {
        self.policy()
            .fleet
            .nodes
            .get(self.me.as_str())
            .map(|n| n.region.clone())
            .unwrap_or_else(|| RegionId::new("unknown"))
    }

    /// The wall clock (tokens, metadata).
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The media fast path.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The counters of `app` at this node.
    pub fn app_counters(&self, app: &AppId) -> Arc<AppCounters> {
        self.counters.get(app)
    }

    /// How often the node records its traffic; `None` when traffic
    /// records are off (metadata disabled, or `traffic_interval_secs = 0`).
    pub fn traffic_interval(&self) -> Option<Duration> {
        self.traffic_interval
    }

    /// Closes the running traffic interval now: records what every flow
    /// carried since the previous one (see [`TrafficRecorder`]). The
    /// node's recorder task calls it every interval, and a clean shutdown
    /// once more for the partial interval.
    pub fn record_traffic_interval(&self) {
        self.with_traffic(|traffic, now_ms, meter| {
            traffic.record_interval(now_ms, &meter.snapshot());
        });
    }

    fn with_traffic(&self, f: impl FnOnce(&mut TrafficRecorder, u64, &TrafficMeter)) {
        let (mut traffic, Some(meter)) = (
            self.traffic.lock().unwrap_or_else(|e| e.into_inner()),
            self.counters.meter(),
        ) else {
            return;
        };
        if let Some(traffic) = traffic.as_mut() {
            f(traffic, self.clock.now_unix_ms(), meter);
        }
    }

    fn lock(&self) -> MutexGuard<'_, NodeCore> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one input on the core with the monotonic `now`, then records
    /// what it produced (outside the lock) and wakes the timer loop.
    fn input<R>(&self, f: impl FnOnce(&mut NodeCore, Instant) -> R) -> R {
        let (result, events) = {
            let mut core = self.lock();
            let result = f(&mut core, crate::clock::monotonic_now());
            (result, core.take_events())
        };
        for event in events {
            match event {
                CoreEvent::Decision {
                    app,
                    session,
                    decision,
                } => self.decide(&app, session, decision),
                CoreEvent::Route {
                    key,
                    origin,
                    outcome,
                } => {
                    let decision = match outcome {
                        RouteOutcome::Chosen(path) => GeofenceDecision::RouteChosen { path },
                        RouteOutcome::Unavailable(no_route) => GeofenceDecision::RouteUnavailable {
                            reason: format!("from {origin}: {no_route}"),
                        },
                    };
                    self.decide(&key.0, None, decision);
                }
                CoreEvent::Record { app, kind } => self.record(Some(app), kind),
                CoreEvent::Violation { peer, app, what } => {
                    tracing::warn!(node = %self.me, %peer, %app, ?what, "dropped a mesh frame for an app not allowed here");
                }
            }
        }
        self.deadline_moved.notify_one();
        result
    }

    /// Records an operational event of this node (never blocks).
    pub fn record(&self, app: Option<AppId>, kind: EventKind) {
        self.recorder.record(Event {
            at_ms: self.clock.now_unix_ms(),
            node: self.me.clone(),
            region: self.region(),
            app,
            kind,
        });
    }

    /// Records a geofence decision in metrics, the log and the metadata.
    pub fn decide(&self, app: &AppId, session_id: Option<u64>, decision: GeofenceDecision) {
        let label = decision_label(&decision);
        metrics::counter!(m::GEOFENCE_DECISIONS_TOTAL,
            m::LABEL_NODE => self.me.to_string(),
            m::LABEL_APP => app.to_string(),
            m::LABEL_DECISION => label)
        .increment(1);
        tracing::debug!(node = %self.me, app = %app, decision = label, ?session_id, "geofence decision");
        self.record(
            Some(app.clone()),
            EventKind::Geofence {
                session_id,
                decision,
            },
        );
    }

    // ----- sessions ---------------------------------------------------------

    /// Registers an admitted session unless the node is at its session
    /// limit (checked and taken atomically); returns its id.
    pub fn add_session(&self, entry: SessionEntry, max_sessions: usize) -> Result<u64, Refusal> {
        let app = entry.app.clone();
        let id = self.input(|core, _| core.add_session(entry, max_sessions))?;
        metrics::gauge!(m::SESSIONS, m::LABEL_NODE => self.me.to_string(), m::LABEL_APP => app.to_string()).increment(1.0);
        Ok(id)
    }

    /// A fresh random 62-bit track key (unguessable, unique fleet-wide with
    /// overwhelming probability).
    fn new_track_key(&self) -> u64 {
        let mut bytes = [0u8; 8];
        // SystemRandom only fails if the OS has no randomness at all.
        if self.rng.fill(&mut bytes).is_err() {
            static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            return FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed) | (1 << 61);
        }
        u64::from_le_bytes(bytes) & ((1 << 62) - 1)
    }

    /// A publisher offers a track; returns the relay-assigned key.
    pub fn announce(
        &self,
        session: u64,
        announce: &Announce,
        max_tracks: usize,
    ) -> Result<u64, Refusal> {
        self.input(|core, now| {
            core.announce(session, announce, max_tracks, || self.new_track_key(), now)
        })
    }

    /// A publisher withdraws a track it owns.
    pub fn unannounce(&self, session: u64, track: u64) -> Result<(), Refusal> {
        self.input(|core, now| core.unannounce(session, track, now))
    }

    /// A session subscribes to its channel.
    pub fn subscribe(&self, session: u64) -> Result<(), Refusal> {
        self.input(|core, now| core.subscribe(session, now))
    }

    /// A session unsubscribes; it gets no more media of the channel.
    pub fn unsubscribe(&self, session: u64) -> Result<(), Refusal> {
        self.input(|core, now| core.unsubscribe(session, now))
    }

    /// A session ended: its tracks and subscription go away.
    pub fn remove_session(&self, session: u64) {
        if let Some(entry) = self.input(|core, now| core.remove_session(session, now)) {
            metrics::gauge!(m::SESSIONS, m::LABEL_NODE => self.me.to_string(), m::LABEL_APP => entry.app.to_string()).decrement(1.0);
        }
    }

    /// The number of open sessions.
    pub fn session_count(&self) -> usize {
        self.lock().session_count()
    }

    /// Closes every session with `code` (drain), with redirect targets.
    pub fn close_all_sessions(&self, code: ErrorCode, message: &str) -> usize {
        self.lock().close_all_sessions(code, message)
    }

    // ----- mesh peers --------------------------------------------------------

    /// A mesh link to `peer` is up.
    pub fn peer_up(&self, peer: NodeId, entry: PeerEntry) {
        let links = self.input(|core, now| {
            core.peer_up(peer, entry, now);
            core.peers().count()
        });
        metrics::gauge!(m::MESH_LINKS_UP, m::LABEL_NODE => self.me.to_string()).set(links as f64);
    }

    /// The mesh link to `peer` on connection `conn_id` is gone. A stale
    /// notification from a replaced connection is ignored.
    pub fn peer_down(&self, peer: &NodeId, conn_id: usize) {
        let links = self.input(|core, now| {
            core.peer_down(peer, conn_id, now);
            core.peers().count()
        });
        metrics::gauge!(m::MESH_LINKS_UP, m::LABEL_NODE => self.me.to_string()).set(links as f64);
    }

    /// This node's `PEER_HELLO`: its id and the policy version in force.
    pub fn peer_hello(&self) -> PeerHello {
        PeerHello {
            node: self.me.to_string(),
            version: PROTOCOL_VERSION,
            policy_version: Some(self.policy().version.to_string()),
        }
    }

    /// `peer` reported `version` in its `PEER_HELLO` (`None`: the old form
    /// without one).
    pub fn set_peer_policy_version(&self, peer: &NodeId, version: Option<String>) {
        self.peer_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.clone(), version);
    }

    /// A control frame from a peer.
    pub fn peer_msg(&self, peer: &NodeId, msg: PeerMsg) {
        self.input(|core, now| core.peer_msg(peer, msg, now));
    }

    /// Timer work due at `now` (see [`Hub::poll_timeout`]).
    pub fn tick(&self) {
        self.input(|core, now| core.tick(now));
    }

    /// When [`Hub::tick`] is next due (monotonic).
    pub fn poll_timeout(&self) -> Instant {
        self.lock().poll_timeout()
    }

    /// Resolves when an input may have moved [`Hub::poll_timeout`].
    pub async fn deadline_moved(&self) {
        self.deadline_moved.notified().await;
    }

    // ----- reload -------------------------------------------------------------

    /// Puts a new policy in force: routes are recomputed, and sessions that
    /// the new policy no longer allows here are revoked. Returns once no
    /// packet of a revoked session is forwarded by this node any more.
    pub fn set_policy(&self, policy: Arc<Policy>) -> ReloadReport {
        let previous = std::mem::replace(
            &mut *self.policy.write().unwrap_or_else(|e| e.into_inner()),
            Arc::clone(&policy),
        );
        if previous.version != policy.version {
            metrics::gauge!(m::POLICY_INFO, m::LABEL_NODE => self.me.to_string(), m::LABEL_VERSION => previous.version.to_string())
                .set(0.0);
        }
        let version = policy.version.to_string();
        let fleet = Arc::clone(&policy);
        let applied = self.input(|core, now| core.set_policy(policy, now));
        // The routes now follow the new policy: what was counted so far was
        // carried under the old one.
        if previous.version != fleet.version {
            self.with_traffic(|traffic, now_ms, meter| {
                traffic.change_policy(now_ms, &meter.snapshot(), &fleet.fleet);
            });
            // Peers learn the new version from a repeated PEER_HELLO (not
            // those of an older release, which greeted us without one).
            // Lock order: the core, then the versions (as in `status`).
            let hello = Frame::PeerHello(self.peer_hello());
            let core = self.lock();
            let versions = self.peer_versions.lock().unwrap_or_else(|e| e.into_inner());
            for (node, peer) in core.peers() {
                if versions.get(node).is_some_and(Option::is_some) {
                    peer.control.send(Outbound::Frame(hello.clone()));
                }
            }
        }
        ReloadReport {
            revoked_sessions: applied.revoked_sessions,
            rerouted: applied.rerouted,
            policy_version: version,
            message: format!(
                "policy reloaded on {}; {} session(s) revoked",
                self.me, applied.revoked_sessions
            ),
        }
    }

    // ----- introspection ------------------------------------------------------

    /// The `/status` report.
    pub fn status(&self) -> StatusReport {
        let core = self.lock();
        let apps = self
            .counters
            .all()
            .into_iter()
            .map(|(app, c)| (app.to_string(), c.snapshot()))
            .collect();
        let links = configured_peers(core.policy(), &self.me)
            .map(|peer| {
                let status = match core.peers().find(|(p, _)| **p == peer) {
                    Some((_, entry)) => LinkStatus {
                        up: true,
                        rtt_ms: Some(entry.control.rtt().as_secs_f64() * 1000.0),
                    },
                    None => LinkStatus {
                        up: false,
                        rtt_ms: None,
                    },
                };
                (peer.to_string(), status)
            })
            .collect();
        let drops = DropReason::ALL
            .iter()
            .map(|r| (r.label().to_string(), self.drops.get(*r)))
            .collect();
        let own = core.policy().version.to_string();
        let versions = self.peer_versions.lock().unwrap_or_else(|e| e.into_inner());
        let peers_on_other_versions = core
            .peers()
            .filter_map(|(peer, _)| {
                let reported = versions.get(peer).cloned().flatten();
                (reported.as_deref() != Some(own.as_str())).then(|| PeerVersion {
                    node: peer.to_string(),
                    policy_version: reported,
                })
            })
            .collect();
        StatusReport {
            node: self.me.to_string(),
            region: self.region().to_string(),
            policy_version: core.policy().version.to_string(),
            uptime_s: self.started.elapsed().as_secs(),
            sessions: core.session_count() as u64,
            apps,
            links,
            drops,
            peers_on_other_versions,
        }
    }

    /// Publishes the node's own packet, byte and drop counters as Prometheus
    /// counters. The hot path only touches atomics; this copies them into
    /// the `metrics` recorder before each scrape.
    pub fn export_metrics(&self) {
        let node = self.me.to_string();
        metrics::gauge!(m::POLICY_INFO, m::LABEL_NODE => node.clone(), m::LABEL_VERSION => self.policy().version.to_string())
            .set(1.0);
        for (app, counters) in self.counters.all() {
            let traffic = counters.snapshot();
            let labels = [
                (m::LABEL_NODE, node.clone()),
                (m::LABEL_APP, app.to_string()),
            ];
            metrics::counter!(m::PACKETS_IN_TOTAL, &labels).absolute(traffic.packets_in);
            metrics::counter!(m::PACKETS_OUT_TOTAL, &labels).absolute(traffic.packets_out);
            metrics::counter!(m::BYTES_IN_TOTAL, &labels).absolute(traffic.bytes_in);
            metrics::counter!(m::BYTES_OUT_TOTAL, &labels).absolute(traffic.bytes_out);
        }
        for reason in DropReason::ALL {
            metrics::counter!(m::DROPS_TOTAL, m::LABEL_NODE => node.clone(), m::LABEL_REASON => reason.label())
                .absolute(self.drops.get(reason));
        }
    }

    /// Every (app, channel) this node has handled.
    pub fn seen_channels(&self) -> Vec<ChannelSeen> {
        self.lock()
            .plane()
            .seen_channels()
            .iter()
            .map(|(app, channel)| ChannelSeen {
                app: app.to_string(),
                channel: channel.clone(),
            })
            .collect()
    }

    /// Configured links of this node that are down.
    pub fn links_down(&self) -> Vec<NodeId> {
        let core = self.lock();
        configured_peers(core.policy(), &self.me)
            .filter(|peer| !core.peers().any(|(p, _)| p == peer))
            .collect()
    }

    /// Forgets every peer, session and route, closing their queues so that
    /// their writer tasks end and release the connections (node stop).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// The peers of `me`'s configured links.
fn configured_peers<'a>(policy: &'a Policy, me: &'a NodeId) -> impl Iterator<Item = NodeId> + 'a {
    policy.fleet.links.iter().filter_map(move |l| {
        if &l.a == me {
            Some(l.b.clone())
        } else if &l.b == me {
            Some(l.a.clone())
        } else {
            None
        }
    })
}

/// The metric label of a decision.
fn decision_label(decision: &GeofenceDecision) -> &'static str {
    match decision {
        GeofenceDecision::Admitted => "admitted",
        GeofenceDecision::Redirected { .. } => "redirected",
        GeofenceDecision::Denied { .. } => "denied",
        GeofenceDecision::RouteChosen { .. } => "route_chosen",
        GeofenceDecision::RouteUnavailable { .. } => "route_unavailable",
        GeofenceDecision::Revoked { .. } => "revoked",
    }
}
