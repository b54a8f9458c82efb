//! The node's shared state: sessions, local channels, mesh peers, the
//! control [`Plane`], and the per-track fast path that media takes.
//!
//! Control operations (a track announced, a subscriber joined, a peer frame)
//! take one mutex, feed the plane, carry out its actions and rebuild the fast
//! path of the channels that changed. Media never takes that mutex: a
//! datagram looks its track up in the [`TrackRoute`] table (a read lock) and
//! is pushed, as a cheap `Bytes` clone, onto each receiver's bounded queue.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::{Bytes, BytesMut};
use ring::rand::SecureRandom;
use tokio::sync::mpsc;

use crate::admin::metric_names as m;
use crate::admin::{ChannelSeen, LinkStatus, ReloadReport, StatusReport};
use crate::clock::SharedClock;
use crate::error::ErrorCode;
use crate::ids::{AppId, NodeId, RegionId};
use crate::metadata::{Event, EventKind, GeofenceDecision, Recorder};
use crate::wire::stream::Outbound;
use crate::wire::{ErrorFrame, Frame, SubscriptionState, SubscriptionStatus, Target, TrackInfo};

use super::admission::{Refusal, redirect_targets};
use super::fanout::{AppCounters, DatagramQueue, DropCounters, DropReason, MessageQueue};
use super::plane::{Action, ChannelKey, Plane};
use super::policy::Policy;

/// A bounded queue of control frames to one connection. A receiver that does
/// not read its control stream is closed rather than buffered without end.
pub type ControlTx = mpsc::Sender<Outbound>;

/// How many control frames may wait for one connection.
pub const CONTROL_QUEUE: usize = 1024;

/// The fast path of one track at this node.
#[derive(Debug)]
pub struct TrackRoute {
    /// The app the track belongs to.
    pub app: AppId,
    /// That app's counters at this node.
    pub counters: Arc<AppCounters>,
    /// The local session that publishes it, if the track originates here.
    pub publisher: Option<u64>,
    /// The peer it must arrive from, if it originates elsewhere.
    pub upstream: Option<NodeId>,
    datagrams: Vec<Arc<DatagramQueue>>,
    messages: Vec<MessageQueue>,
}

impl TrackRoute {
    /// Counts the datagram in and queues it for every receiver.
    pub fn forward_datagram(&self, datagram: Bytes) {
        self.counters.count_in(datagram.len());
        for queue in &self.datagrams {
            queue.push(datagram.clone(), &self.counters);
        }
    }

    /// Counts a framed message in and queues it for every receiver.
    pub fn forward_message(&self, framed: Bytes) {
        self.counters.count_in(framed.len());
        for queue in &self.messages {
            queue.push(framed.clone(), &self.counters);
        }
    }

    /// How many receivers the track has here.
    pub fn fanout(&self) -> usize {
        self.datagrams.len()
    }
}

/// A session as the hub knows it.
#[derive(Debug)]
pub struct SessionEntry {
    /// The app.
    pub app: AppId,
    /// The channel the token grants.
    pub channel: String,
    /// The user id from the token.
    pub user: String,
    /// Whether the token allows publishing.
    pub can_publish: bool,
    /// The client's region, for redirects.
    pub client_region: Option<RegionId>,
    /// The client's country, for client rules changed by a reload.
    pub client_country: Option<crate::ids::CountryCode>,
    /// Control frames to the client.
    pub control: ControlTx,
    /// Media to the client.
    pub datagrams: Arc<DatagramQueue>,
    /// Reliable messages to the client.
    pub messages: MessageQueue,
}

/// A connected mesh peer.
#[derive(Debug)]
pub struct PeerEntry {
    /// Control frames to the peer.
    pub control: ControlTx,
    /// Media to the peer.
    pub datagrams: Arc<DatagramQueue>,
    /// Reliable messages to the peer.
    pub messages: MessageQueue,
    /// The connection, for RTT.
    pub conn: quinn::Connection,
}

#[derive(Debug, Default)]
struct SubscriberView {
    told: BTreeSet<u64>,
    state: Option<(SubscriptionStatus, String)>,
}

#[derive(Debug, Default)]
struct LocalChannel {
    /// Track key -> the publishing session.
    owners: BTreeMap<u64, u64>,
    tracks: BTreeMap<u64, TrackInfo>,
    subscribers: BTreeMap<u64, SubscriberView>,
}

#[derive(Debug)]
struct Inner {
    plane: Plane,
    sessions: HashMap<u64, SessionEntry>,
    channels: HashMap<ChannelKey, LocalChannel>,
    peers: HashMap<NodeId, PeerEntry>,
    channel_tracks: HashMap<ChannelKey, Vec<u64>>,
    rerouted: u64,
    /// The plane's topology version subscribers were last told about.
    reachability_version: u64,
}

/// The shared state of one node. See the module docs.
pub struct Hub {
    me: NodeId,
    policy: RwLock<Arc<Policy>>,
    inner: Mutex<Inner>,
    routes: RwLock<HashMap<u64, Arc<TrackRoute>>>,
    counters: RwLock<BTreeMap<AppId, Arc<AppCounters>>>,
    /// Drops at this node, by reason.
    pub drops: Arc<DropCounters>,
    next_session: AtomicU64,
    deadline_moved: tokio::sync::Notify,
    rng: ring::rand::SystemRandom,
    clock: SharedClock,
    started: std::time::Instant,
    recorder: Recorder,
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
        let plane = Plane::new(
            me.clone(),
            Arc::clone(&policy),
            started,
            clock.now_unix_ms(),
        );
        Self {
            inner: Mutex::new(Inner {
                plane,
                sessions: HashMap::new(),
                channels: HashMap::new(),
                peers: HashMap::new(),
                channel_tracks: HashMap::new(),
                rerouted: 0,
                reachability_version: 0,
            }),
            me,
            policy: RwLock::new(policy),
            routes: RwLock::new(HashMap::new()),
            counters: RwLock::new(BTreeMap::new()),
            drops: Arc::new(DropCounters::default()),
            next_session: AtomicU64::new(1),
            deadline_moved: tokio::sync::Notify::new(),
            rng: ring::rand::SystemRandom::new(),
            clock,
            started,
            recorder,
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
        let policy = self.policy();
        policy
            .fleet
            .nodes
            .get(self.me.as_str())
            .map(|n| n.region.clone())
            .unwrap_or_else(|| RegionId::new("unknown"))
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters of `app` at this node.
    pub fn app_counters(&self, app: &AppId) -> Arc<AppCounters> {
        if let Some(c) = self
            .counters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
        {
            return Arc::clone(c);
        }
        let mut all = self.counters.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(all.entry(app.clone()).or_default())
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

    /// Registers an admitted session; returns its id.
    pub fn add_session(&self, entry: SessionEntry) -> u64 {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let app = entry.app.clone();
        self.lock().sessions.insert(id, entry);
        metrics::gauge!(m::SESSIONS, m::LABEL_NODE => self.me.to_string(), m::LABEL_APP => app.to_string()).increment(1.0);
        id
    }

    /// A fresh random 62-bit track key (unguessable, unique fleet-wide with
    /// overwhelming probability).
    fn new_track_key(&self) -> u64 {
        let mut bytes = [0u8; 8];
        // SystemRandom only fails if the OS has no randomness at all.
        if self.rng.fill(&mut bytes).is_err() {
            return self.next_session.fetch_add(1, Ordering::Relaxed) | (1 << 61);
        }
        u64::from_le_bytes(bytes) & ((1 << 62) - 1)
    }

    /// A publisher offers a track; returns the relay-assigned key.
    pub fn announce(
        &self,
        session: u64,
        announce: &crate::wire::Announce,
        max_tracks: usize,
    ) -> Result<u64, Refusal> {
        let mut inner = self.lock();
        let entry = inner
            .sessions
            .get(&session)
            .ok_or_else(|| refusal(ErrorCode::NotFound, "no such session"))?;
        if !entry.can_publish {
            return Err(refusal(
                ErrorCode::Unauthorized,
                "this token's role is subscribe: it may not publish",
            ));
        }
        let key: ChannelKey = (entry.app.clone(), entry.channel.clone());
        let user = entry.user.clone();
        let owned = inner
            .channels
            .get(&key)
            .map(|c| c.owners.values().filter(|s| **s == session).count())
            .unwrap_or(0);
        if owned >= max_tracks {
            return Err(refusal(
                ErrorCode::LimitExceeded,
                format!("at most {max_tracks} tracks per session"),
            ));
        }
        let track = self.new_track_key();
        let info = TrackInfo {
            track,
            publisher: user,
            kind: announce.kind,
            e2ee: announce.e2ee,
            name: announce.name.clone(),
        };
        let channel = inner.channels.entry(key.clone()).or_default();
        channel.owners.insert(track, session);
        channel.tracks.insert(track, info);
        let tracks = channel.tracks.clone();
        let subscribers = channel.subscribers.len() as u32;
        self.record(
            Some(key.0.clone()),
            EventKind::TrackPublished {
                session_id: session,
                track: announce.name.clone(),
                kind: metadata_kind(announce.kind),
                subscribers,
            },
        );
        let now = crate::clock::monotonic_now();
        let actions = inner.plane.set_local_tracks(&key, tracks, now);
        self.apply(&mut inner, actions);
        Ok(track)
    }

    /// A publisher withdraws a track it owns.
    pub fn unannounce(&self, session: u64, track: u64) -> Result<(), Refusal> {
        let mut inner = self.lock();
        let key = session_key(&inner, session)?;
        let owned = inner
            .channels
            .get(&key)
            .is_some_and(|c| c.owners.get(&track) == Some(&session));
        if !owned {
            return Err(refusal(
                ErrorCode::NotFound,
                "no such track in this session",
            ));
        }
        self.remove_tracks(&mut inner, &key, |t, _| t == track);
        Ok(())
    }

    fn remove_tracks(
        &self,
        inner: &mut Inner,
        key: &ChannelKey,
        remove: impl Fn(u64, u64) -> bool,
    ) {
        let Some(channel) = inner.channels.get_mut(key) else {
            return;
        };
        let gone: Vec<u64> = channel
            .owners
            .iter()
            .filter(|(t, s)| remove(**t, **s))
            .map(|(t, _)| *t)
            .collect();
        if gone.is_empty() {
            return;
        }
        let subscribers = channel.subscribers.len() as u32;
        for track in gone {
            let session_id = channel.owners.remove(&track).unwrap_or_default();
            if let Some(info) = channel.tracks.remove(&track) {
                self.record(
                    Some(key.0.clone()),
                    EventKind::TrackUnpublished {
                        session_id,
                        track: info.name,
                        kind: metadata_kind(info.kind),
                        subscribers,
                    },
                );
            }
        }
        let tracks = channel.tracks.clone();
        let now = crate::clock::monotonic_now();
        let actions = inner.plane.set_local_tracks(key, tracks, now);
        self.apply(inner, actions);
    }

    /// A session subscribes to its channel.
    pub fn subscribe(&self, session: u64) -> Result<(), Refusal> {
        let mut inner = self.lock();
        let key = session_key(&inner, session)?;
        inner
            .channels
            .entry(key.clone())
            .or_default()
            .subscribers
            .entry(session)
            .or_default();
        let now = crate::clock::monotonic_now();
        let mut actions = inner.plane.set_local_interest(&key, true, now);
        actions.push(Action::ChannelChanged(key));
        self.apply(&mut inner, actions);
        Ok(())
    }

    /// A session unsubscribes; it gets no more media of the channel.
    pub fn unsubscribe(&self, session: u64) -> Result<(), Refusal> {
        let mut inner = self.lock();
        let key = session_key(&inner, session)?;
        self.drop_subscriber(&mut inner, &key, session);
        Ok(())
    }

    fn drop_subscriber(&self, inner: &mut Inner, key: &ChannelKey, session: u64) {
        let Some(channel) = inner.channels.get_mut(key) else {
            return;
        };
        if channel.subscribers.remove(&session).is_none() {
            return;
        }
        let interested = !channel.subscribers.is_empty();
        let now = crate::clock::monotonic_now();
        let mut actions = inner.plane.set_local_interest(key, interested, now);
        actions.push(Action::ChannelChanged(key.clone()));
        self.apply(inner, actions);
    }

    /// A session ended: its tracks and subscription go away.
    pub fn remove_session(&self, session: u64) {
        let mut inner = self.lock();
        let Ok(key) = session_key(&inner, session) else {
            return;
        };
        self.remove_tracks(&mut inner, &key, |_, s| s == session);
        self.drop_subscriber(&mut inner, &key, session);
        if let Some(entry) = inner.sessions.remove(&session) {
            entry.datagrams.close();
            metrics::gauge!(m::SESSIONS, m::LABEL_NODE => self.me.to_string(), m::LABEL_APP => entry.app.to_string()).decrement(1.0);
        }
        if inner
            .channels
            .get(&key)
            .is_some_and(|c| c.owners.is_empty() && c.subscribers.is_empty())
        {
            inner.channels.remove(&key);
        }
    }

    /// The number of open sessions.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    // ----- media fast path ---------------------------------------------------

    /// The fast path of a track, if this node carries it.
    pub fn route(&self, track: u64) -> Option<Arc<TrackRoute>> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&track)
            .cloned()
    }

    /// A datagram of `track` from a local client: forwarded only if that
    /// session publishes the track.
    /// Returns whether it was forwarded.
    pub fn client_datagram(&self, session: u64, track: u64, datagram: Bytes) -> bool {
        match self.route(track) {
            Some(route) if route.publisher == Some(session) => {
                route.forward_datagram(datagram);
                true
            }
            _ => {
                self.drops.count(DropReason::UnknownTrack);
                false
            }
        }
    }

    /// A datagram from a mesh peer: forwarded only if that peer is the
    /// track's upstream here.
    pub fn peer_datagram(&self, peer: &NodeId, datagram: Bytes) {
        match crate::wire::MediaHeader::parse_track(&datagram) {
            Ok(track) => match self.route(track) {
                Some(route) if route.upstream.as_ref() == Some(peer) => {
                    route.forward_datagram(datagram)
                }
                _ => self.drops.count(DropReason::UnknownTrack),
            },
            Err(_) => self.drops.count(DropReason::Malformed),
        }
    }

    /// A reliable message from a local publisher or a peer (`from_peer`).
    pub fn message(
        &self,
        from_session: Option<u64>,
        from_peer: Option<&NodeId>,
        track: u64,
        payload: &[u8],
    ) {
        let Some(route) = self.route(track) else {
            self.drops.count(DropReason::UnknownTrack);
            return;
        };
        let accepted = match (from_session, from_peer) {
            (Some(session), _) => route.publisher == Some(session),
            (None, Some(peer)) => route.upstream.as_ref() == Some(peer),
            (None, None) => false,
        };
        if !accepted {
            self.drops.count(DropReason::UnknownTrack);
            return;
        }
        let mut framed = BytesMut::with_capacity(payload.len() + 16);
        crate::wire::encode_message(track, payload, &mut framed);
        route.forward_message(framed.freeze());
    }

    // ----- mesh peers --------------------------------------------------------

    /// A mesh link to `peer` is up.
    pub fn peer_up(&self, peer: NodeId, entry: PeerEntry) {
        let rtt = entry.conn.rtt().as_micros() as u64;
        let mut inner = self.lock();
        if let Some(old) = inner.peers.insert(peer.clone(), entry) {
            old.datagrams.close();
        }
        let now = crate::clock::monotonic_now();
        let actions = inner.plane.peer_up(peer, rtt, now);
        self.apply(&mut inner, actions);
        metrics::gauge!(m::MESH_LINKS_UP, m::LABEL_NODE => self.me.to_string())
            .set(inner.peers.len() as f64);
    }

    /// The mesh link to `peer` on connection `conn_id` is gone. A stale
    /// notification from a replaced connection is ignored.
    pub fn peer_down(&self, peer: &NodeId, conn_id: usize) {
        let mut inner = self.lock();
        if inner
            .peers
            .get(peer)
            .is_none_or(|p| p.conn.stable_id() != conn_id)
        {
            return;
        }
        if let Some(old) = inner.peers.remove(peer) {
            old.datagrams.close();
        }
        let now = crate::clock::monotonic_now();
        let actions = inner.plane.peer_down(peer, now);
        self.apply(&mut inner, actions);
        metrics::gauge!(m::MESH_LINKS_UP, m::LABEL_NODE => self.me.to_string())
            .set(inner.peers.len() as f64);
    }

    /// A control frame from a peer.
    pub fn peer_msg(&self, peer: &NodeId, msg: super::plane::PeerMsg) {
        let mut inner = self.lock();
        let now = crate::clock::monotonic_now();
        let actions = inner.plane.on_peer_msg(peer, msg, now);
        self.apply(&mut inner, actions);
    }

    /// Timer work due at `now` (see [`Hub::poll_timeout`]): measured RTTs,
    /// subscription refresh and expiry, retries of failed routes.
    pub fn tick(&self, now: std::time::Instant) {
        let mut inner = self.lock();
        let rtts: Vec<(NodeId, u64)> = inner
            .peers
            .iter()
            .map(|(p, e)| (p.clone(), e.conn.rtt().as_micros() as u64))
            .collect();
        for (peer, rtt) in rtts {
            inner.plane.peer_rtt(&peer, rtt);
        }
        let actions = inner.plane.tick(now);
        self.apply(&mut inner, actions);
    }

    /// When [`Hub::tick`] is next due (monotonic).
    pub fn poll_timeout(&self) -> std::time::Instant {
        self.lock().plane.poll_timeout()
    }

    /// Resolves when an input may have moved [`Hub::poll_timeout`] earlier.
    pub async fn deadline_moved(&self) {
        self.deadline_moved.notified().await;
    }

    // ----- reload -------------------------------------------------------------

    /// Puts a new policy in force: routes are recomputed, and sessions that
    /// the new policy no longer allows here are revoked. Returns once no
    /// packet of a revoked app is forwarded by this node any more.
    pub fn set_policy(&self, policy: Arc<Policy>) -> ReloadReport {
        let mut inner = self.lock();
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&policy);
        let before = inner.rerouted;
        let now = crate::clock::monotonic_now();
        let actions = inner.plane.set_policy(Arc::clone(&policy), now);
        self.apply(&mut inner, actions);
        // Sessions the new policy refuses: the app may no longer use this
        // node (redirect elsewhere), or no longer admits the client's
        // country (no redirect would help).
        let mut revoked = Vec::new();
        for (id, session) in &inner.sessions {
            let reason = if !policy.node_allowed(&session.app, &self.me) {
                Some(format!(
                    "app {} is no longer allowed on node {}",
                    session.app, self.me
                ))
            } else if !client_still_allowed(&policy, session) {
                Some(format!(
                    "app {} no longer admits clients from this country",
                    session.app
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                revoked.push((*id, reason));
            }
        }
        for (id, reason) in &revoked {
            let Some(session) = inner.sessions.get(id) else {
                continue;
            };
            let app = session.app.clone();
            let mut frame = ErrorFrame::new(ErrorCode::GeofenceRevoked, reason.clone());
            if !policy.node_allowed(&app, &self.me) {
                let targets =
                    redirect_targets(&policy, &app, session.client_region.as_ref(), &self.me);
                frame.redirect = targets_to_wire(&targets);
            }
            let _ = session.control.try_send(Outbound::Close(frame));
            self.decide(
                &app,
                Some(*id),
                GeofenceDecision::Revoked {
                    reason: format!("policy reload: {reason}"),
                },
            );
        }
        drop(inner);
        // Stop forwarding the revoked sessions' media at once: the fast path
        // is rebuilt without them before this returns.
        for (id, _) in &revoked {
            self.remove_session(*id);
        }
        let inner = self.lock();
        ReloadReport {
            revoked_sessions: revoked.len() as u64,
            rerouted: inner.rerouted - before,
            message: format!(
                "policy reloaded on {}; {} session(s) revoked",
                self.me,
                revoked.len()
            ),
        }
    }

    // ----- introspection ------------------------------------------------------

    /// The `/status` report.
    pub fn status(&self) -> StatusReport {
        let inner = self.lock();
        let apps = self
            .counters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(app, c)| (app.to_string(), c.snapshot()))
            .collect();
        let policy = self.policy();
        let mut links = BTreeMap::new();
        for link in &policy.fleet.links {
            let peer = if link.a == self.me {
                &link.b
            } else if link.b == self.me {
                &link.a
            } else {
                continue;
            };
            let status = match inner.peers.get(peer) {
                Some(entry) => LinkStatus {
                    up: true,
                    rtt_ms: Some(entry.conn.rtt().as_secs_f64() * 1000.0),
                },
                None => LinkStatus {
                    up: false,
                    rtt_ms: None,
                },
            };
            links.insert(peer.to_string(), status);
        }
        let drops = DropReason::ALL
            .iter()
            .map(|r| (r.label().to_string(), self.drops.get(*r)))
            .collect();
        StatusReport {
            node: self.me.to_string(),
            region: self.region().to_string(),
            uptime_s: self.started.elapsed().as_secs(),
            sessions: inner.sessions.len() as u64,
            apps,
            links,
            drops,
        }
    }

    /// Publishes the node's own packet, byte and drop counters as Prometheus
    /// counters. The hot path only touches atomics; this copies them into
    /// the `metrics` recorder (on every tick and before each scrape).
    pub fn export_metrics(&self) {
        let node = self.me.to_string();
        for (app, counters) in self
            .counters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
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
            .plane
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
        let inner = self.lock();
        let policy = self.policy();
        policy
            .fleet
            .links
            .iter()
            .filter_map(|l| {
                if l.a == self.me {
                    Some(l.b.clone())
                } else if l.b == self.me {
                    Some(l.a.clone())
                } else {
                    None
                }
            })
            .filter(|peer| !inner.peers.contains_key(peer))
            .collect()
    }

    /// Forgets every peer, session and route, closing their queues so that
    /// their writer tasks end and release the connections (node stop).
    pub fn clear(&self) {
        let mut inner = self.lock();
        for (_, peer) in inner.peers.drain() {
            peer.datagrams.close();
        }
        for (_, session) in inner.sessions.drain() {
            session.datagrams.close();
        }
        inner.channels.clear();
        inner.channel_tracks.clear();
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Closes every session with `code` (drain), with redirect targets.
    pub fn close_all_sessions(&self, code: ErrorCode, message: &str) -> usize {
        let inner = self.lock();
        let policy = self.policy();
        for session in inner.sessions.values() {
            let targets = redirect_targets(
                &policy,
                &session.app,
                session.client_region.as_ref(),
                &self.me,
            );
            let mut frame = ErrorFrame::new(code, message);
            frame.redirect = targets_to_wire(&targets);
            let _ = session.control.try_send(Outbound::Close(frame));
        }
        inner.sessions.len()
    }

    // ----- plane actions ------------------------------------------------------

    fn apply(&self, inner: &mut Inner, actions: Vec<Action>) {
        let mut changed = BTreeSet::new();
        for action in actions {
            match action {
                Action::Send { peer, msg } => {
                    if let Some(entry) = inner.peers.get(&peer) {
                        let frame = Frame::from(msg);
                        if entry.control.try_send(Outbound::Frame(frame)).is_err() {
                            tracing::warn!(peer = %peer, "mesh control queue full; closing the link");
                            entry.conn.close(
                                ErrorCode::LimitExceeded
                                    .to_wire()
                                    .try_into()
                                    .unwrap_or_default(),
                                b"control queue full",
                            );
                        }
                    }
                }
                Action::ChannelChanged(key) => {
                    changed.insert(key);
                }
                Action::Decision {
                    key,
                    origin,
                    outcome,
                } => {
                    let decision = match outcome {
                        Ok(path) => {
                            inner.rerouted += 1;
                            GeofenceDecision::RouteChosen { path }
                        }
                        Err(reason) => GeofenceDecision::RouteUnavailable {
                            reason: format!("from {origin}: {reason}"),
                        },
                    };
                    self.decide(&key.0, None, decision);
                }
            }
        }
        for key in changed {
            self.rebuild(inner, &key);
            self.notify_subscribers(inner, &key);
        }
        // Reachability changes with the live topology: tell subscribers
        // when it did.
        let version = inner.plane.topology_version();
        if version != inner.reachability_version {
            inner.reachability_version = version;
            let keys: Vec<ChannelKey> = inner
                .channels
                .iter()
                .filter(|(_, c)| !c.subscribers.is_empty())
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                self.notify_subscribers(inner, &key);
            }
        }
        self.deadline_moved.notify_one();
    }

    /// Rebuilds the fast path of one channel from the plane's forwarding.
    fn rebuild(&self, inner: &mut Inner, key: &ChannelKey) {
        let forwarding = inner.plane.forwarding(key);
        let visible = inner.plane.tracks(key);
        let counters = self.app_counters(&key.0);
        let local = inner.channels.get(key);
        let mut fresh: Vec<(u64, Arc<TrackRoute>)> = Vec::new();
        for (origin, info) in visible {
            let Some(fwd) = forwarding.get(&origin) else {
                continue;
            };
            let publisher = if origin == self.me {
                local.and_then(|c| c.owners.get(&info.track).copied())
            } else {
                None
            };
            let mut datagrams = Vec::new();
            let mut messages = Vec::new();
            if fwd.local {
                if let Some(channel) = local {
                    for sid in channel.subscribers.keys() {
                        if Some(*sid) == publisher {
                            continue;
                        }
                        if let Some(session) = inner.sessions.get(sid) {
                            datagrams.push(Arc::clone(&session.datagrams));
                            messages.push(session.messages.clone());
                        }
                    }
                }
            }
            for peer in &fwd.downstream {
                if let Some(entry) = inner.peers.get(peer) {
                    datagrams.push(Arc::clone(&entry.datagrams));
                    messages.push(entry.messages.clone());
                }
            }
            fresh.push((
                info.track,
                Arc::new(TrackRoute {
                    app: key.0.clone(),
                    counters: Arc::clone(&counters),
                    publisher,
                    upstream: fwd.upstream.clone(),
                    datagrams,
                    messages,
                }),
            ));
        }
        let old = inner.channel_tracks.remove(key).unwrap_or_default();
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        for track in old {
            routes.remove(&track);
        }
        let keys: Vec<u64> = fresh.iter().map(|(t, _)| *t).collect();
        routes.extend(fresh);
        drop(routes);
        if !keys.is_empty() {
            inner.channel_tracks.insert(key.clone(), keys);
        }
    }

    /// Tells each local subscriber of a channel which tracks appeared or went
    /// away, and whether every allowed origin is reachable.
    fn notify_subscribers(&self, inner: &mut Inner, key: &ChannelKey) {
        let visible = inner.plane.tracks(key);
        let reach = inner.plane.reachability(key);
        let Some(channel) = inner.channels.get_mut(key) else {
            return;
        };
        let state = if reach.unreachable.is_empty() {
            (SubscriptionStatus::Active, String::new())
        } else {
            let detail: Vec<String> = reach
                .unreachable
                .iter()
                .map(|(n, r)| format!("{n} ({r})"))
                .collect();
            (
                SubscriptionStatus::Unavailable,
                format!("no allowed route to: {}", detail.join("; ")),
            )
        };
        for (sid, view) in channel.subscribers.iter_mut() {
            let Some(session) = inner.sessions.get(sid) else {
                continue;
            };
            let own: BTreeSet<u64> = channel
                .owners
                .iter()
                .filter(|(_, s)| *s == sid)
                .map(|(t, _)| *t)
                .collect();
            let now: BTreeMap<u64, &TrackInfo> = visible
                .iter()
                .filter(|(_, t)| !own.contains(&t.track))
                .map(|(_, t)| (t.track, t))
                .collect();
            let mut frames = Vec::new();
            for track in view
                .told
                .difference(&now.keys().copied().collect())
                .copied()
                .collect::<Vec<_>>()
            {
                view.told.remove(&track);
                frames.push(Frame::TrackRemoved { track });
            }
            for (track, info) in &now {
                if view.told.insert(*track) {
                    frames.push(Frame::TrackAdded((*info).clone()));
                }
            }
            if view.state.as_ref() != Some(&state) {
                // The first state is only worth sending when it is bad news.
                if view.state.is_some() || state.0 != SubscriptionStatus::Active {
                    let code = if state.0 == SubscriptionStatus::Active {
                        0
                    } else {
                        ErrorCode::RouteUnavailable.to_wire()
                    };
                    frames.push(Frame::SubscriptionState(SubscriptionState {
                        state: state.0,
                        code,
                        message: state.1.clone(),
                    }));
                }
                view.state = Some(state.clone());
            }
            for frame in frames {
                if session.control.try_send(Outbound::Frame(frame)).is_err() {
                    let _ = session.control.try_send(Outbound::Close(ErrorFrame::new(
                        ErrorCode::LimitExceeded,
                        "control stream not read",
                    )));
                    break;
                }
            }
        }
    }
}

/// Whether the app's client rules still admit a session's client.
fn client_still_allowed(policy: &Policy, session: &SessionEntry) -> bool {
    let Some(app) = policy.fleet.app(session.app.as_str()) else {
        return false;
    };
    match session.client_country {
        Some(country) => app.client_countries.allows(country),
        None => app.unknown_client_country == crate::config::UnknownCountry::Allow,
    }
}

fn refusal(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal::plain(code, message)
}

fn session_key(inner: &Inner, session: u64) -> Result<ChannelKey, Refusal> {
    inner
        .sessions
        .get(&session)
        .map(|s| (s.app.clone(), s.channel.clone()))
        .ok_or_else(|| refusal(ErrorCode::NotFound, "no such session"))
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

/// Redirect targets in wire form.
pub fn targets_to_wire(targets: &[(NodeId, SocketAddr)]) -> Vec<Target> {
    targets
        .iter()
        .map(|(node, addr)| Target {
            node: node.to_string(),
            addr: addr.to_string(),
        })
        .collect()
}

fn metadata_kind(kind: crate::wire::TrackKind) -> crate::metadata::TrackKind {
    match kind {
        crate::wire::TrackKind::Audio => crate::metadata::TrackKind::Audio,
        crate::wire::TrackKind::Video => crate::metadata::TrackKind::Video,
        crate::wire::TrackKind::Data => crate::metadata::TrackKind::Data,
    }
}
