//! The mesh control plane of one node, sans-IO.
//!
//! [`Plane`] owns the node's view of the fleet (link state flooded by every
//! node), the channel directory (which origin node has which tracks of a
//! channel), and the per-channel forwarding state (one upstream peer per
//! origin, a set of downstream peers). It takes inputs — a peer came up, a
//! frame arrived, local tracks changed, a local subscriber appeared, a policy
//! was reloaded, time passed — and returns [`Action`]s for
//! [`super::core::NodeCore`] to carry out. No tokio, no sockets, no clock,
//! no logging: `now` is a monotonic [`Instant`] argument, and
//! [`Plane::poll_timeout`] says when the next tick is due. The messages it
//! exchanges with peers ([`PeerMsg`]) and their wire frames are in
//! `messages.rs`.
//!
//! # Why an app's data never reaches a disallowed node
//! Every frame that carries an app's channel name or track ids, and every
//! media forwarding entry, is produced by a function that first checks that
//! the receiving peer's region is allowed for the app ([`Plane::peer_allowed`]).
//! Receivers check again: a node that is not allowed for an app drops the
//! app's frames and answers subscriptions with `ROUTE_UNAVAILABLE`.
//!
//! # Why forwarding cannot loop
//! Only the subscriber's node computes a path (the routing core's cheapest
//! allowed path) and sends it as an explicit source route. A node keeps at
//! most one upstream peer per (app, channel, origin) and accepts that
//! channel's media only from it, so a packet enters a node only from its
//! upstream: the forwarding graph is a tree rooted at the origin. A node
//! reuses its upstream for a new downstream only if its upstream path and the
//! requester's path share no node; when an upstream fails, the node drops it
//! and tells every downstream peer, which re-subscribe with fresh paths, so
//! stored paths never go stale.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::ErrorCode;
use crate::ids::{AppId, NodeId};
use crate::wire::TrackInfo;

use super::policy::Policy;

mod messages;

pub use messages::{ChannelKey, PeerMsg};

/// How many channel names [`Plane::seen_channels`] remembers at most; past
/// that, new names are not recorded (the set is introspection, and must not
/// grow without bound on a long-running node).
pub const MAX_SEEN: usize = 65_536;

/// How often a node re-sends the subscriptions it holds upstream.
pub const REFRESH: Duration = Duration::from_secs(2);
/// A downstream subscription not refreshed for this long is dropped (soft
/// state: forwarding that nobody asks for any more cannot linger).
pub const EXPIRE: Duration = Duration::from_secs(7);
/// Tracks of an origin that no live link reaches for this long are
/// forgotten (the node died and did not come back, or left the fleet).
pub const ORIGIN_EXPIRY: Duration = Duration::from_secs(30);

/// How long a forgotten channel's announcement sequence numbers are kept.
pub const TOMBSTONE: Duration = Duration::from_secs(60);

/// How long a failed upstream waits before the next attempt.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(250);

/// What the driver must do after an input.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send a control message to a connected peer.
    Send { peer: NodeId, msg: PeerMsg },
    /// The tracks or forwarding of this channel changed: rebuild its fast path
    /// and tell local subscribers.
    ChannelChanged(ChannelKey),
    /// A geofence decision worth recording (route chosen / unavailable).
    Decision {
        key: ChannelKey,
        origin: NodeId,
        outcome: RouteOutcome,
    },
    /// A peer sent something it must never send (a frame of an app that is
    /// not allowed here, or a malformed source route); it was dropped.
    Violation {
        peer: NodeId,
        app: AppId,
        what: Violation,
    },
}

/// The outcome of choosing a path to an origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteOutcome {
    /// This node subscribes along this path (this node first, the origin
    /// last).
    Chosen(Vec<NodeId>),
    /// No allowed path exists right now: the routing core's reason.
    Unavailable(crate::routing::NoRoute),
}

impl RouteOutcome {
    /// Whether no allowed path exists.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RouteOutcome::Unavailable(_))
    }
}

/// What a peer sent that it must never send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// An announcement of a channel of an app not allowed here, or from an
    /// origin not allowed for the app.
    Announce,
    /// A subscription for an app not allowed here or at the peer.
    Subscribe,
}

#[derive(Clone, Debug, Default)]
struct LinkRecord {
    seq: u64,
    up: BTreeMap<NodeId, u64>,
}

#[derive(Clone, Debug)]
struct Remote {
    seq: u64,
    tracks: Vec<TrackInfo>,
}

#[derive(Clone, Debug)]
struct Upstream {
    peer: NodeId,
    /// This node first, the origin last.
    path: Vec<NodeId>,
    /// Whether the peer said the path is established up to the origin
    /// (`SubscribeOk`).
    confirmed: bool,
}

impl Upstream {
    fn new(peer: NodeId, path: Vec<NodeId>) -> Self {
        Self {
            peer,
            path,
            confirmed: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Channel {
    local: BTreeMap<u64, TrackInfo>,
    local_seq: u64,
    remote: BTreeMap<NodeId, Remote>,
    local_interest: bool,
    upstream: BTreeMap<NodeId, Upstream>,
    /// Origins whose last attempt failed: (retry at, reason).
    failed: BTreeMap<NodeId, (Instant, String)>,
    /// Per origin: the downstream peers this node forwards to.
    downstream: BTreeMap<NodeId, BTreeMap<NodeId, Downstream>>,
}

/// A peer that subscribed through this node.
#[derive(Clone, Debug)]
struct Downstream {
    /// The requester's path up to that peer (for the loop check).
    visited: Vec<NodeId>,
    /// When its subscription was last (re)sent; stale ones expire.
    refreshed: Instant,
}

impl Channel {
    fn is_idle(&self) -> bool {
        self.local.is_empty()
            && self.remote.values().all(|r| r.tracks.is_empty())
            && !self.local_interest
            && self.upstream.is_empty()
            && self.downstream.values().all(BTreeMap::is_empty)
    }
}

/// The forwarding of one origin's tracks of a channel at this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarding {
    /// `None` when the origin is this node (local publishers).
    pub upstream: Option<NodeId>,
    /// Peers this node forwards the tracks to.
    pub downstream: Vec<NodeId>,
    /// Whether local subscribers get the tracks.
    pub local: bool,
}

/// What a local subscriber of a channel is told about reachability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reachability {
    /// Allowed nodes (or origins) this node cannot reach through allowed
    /// regions right now, with the reason.
    pub unreachable: Vec<(NodeId, String)>,
}

/// The control plane of one node. See the module docs.
#[derive(Debug)]
pub struct Plane {
    me: NodeId,
    policy: Arc<Policy>,
    topology: crate::routing::Topology,
    peers: BTreeMap<NodeId, u64>,
    link_db: BTreeMap<NodeId, LinkRecord>,
    my_seq: u64,
    channels: BTreeMap<ChannelKey, Channel>,
    /// Announcement sequence numbers of forgotten channels, per origin, so
    /// that a copy still travelling round a cycle is not taken for news:
    /// (seq, forget at).
    tombstones: BTreeMap<(ChannelKey, NodeId), (u64, Instant)>,
    /// When the subscriptions held upstream are re-sent next.
    next_refresh: Instant,
    /// Nodes no live link reaches, since when.
    unreachable_since: BTreeMap<NodeId, Instant>,
    /// Sequence numbers this node originates are `seq_epoch_ms` plus the
    /// monotonic milliseconds since `started`: increasing within a run
    /// whatever the wall clock does, and above the previous run's.
    seq_epoch_ms: u64,
    started: Instant,
    /// Above every sequence number a peer showed us from our previous run.
    seq_floor: u64,
    topology_version: u64,
    seen: BTreeSet<ChannelKey>,
    violations: u64,
}

impl Plane {
    /// A plane for node `me` under `policy`, with no peer connected yet,
    /// started at monotonic `now`. `seq_epoch_ms` is the wall clock at start
    /// (Unix ms), read once: the sequence numbers this node originates start
    /// there so that they supersede those of its previous run; after that
    /// the plane only follows `now`.
    pub fn new(me: NodeId, policy: Arc<Policy>, now: Instant, seq_epoch_ms: u64) -> Self {
        let mut topology = crate::routing::Topology::from_fleet(&policy.fleet);
        for link in &policy.fleet.links {
            topology.set_link_up(&link.a, &link.b, false);
        }
        Self {
            me,
            policy,
            topology,
            peers: BTreeMap::new(),
            link_db: BTreeMap::new(),
            my_seq: 0,
            channels: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            next_refresh: now,
            unreachable_since: BTreeMap::new(),
            seq_epoch_ms,
            started: now,
            seq_floor: 0,
            topology_version: 0,
            seen: BTreeSet::new(),
            violations: 0,
        }
    }

    /// This node's id.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// The policy in force.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The live topology (configured links, up or down as flooded).
    pub fn topology(&self) -> &crate::routing::Topology {
        &self.topology
    }

    /// Every (app, channel) whose name this node has ever handled, local or
    /// from peers. Never pruned: it is the evidence that a node did or did
    /// not see a name.
    pub fn seen_channels(&self) -> &BTreeSet<ChannelKey> {
        &self.seen
    }

    /// Frames a peer sent for an app that is not allowed here (dropped).
    pub fn violations(&self) -> u64 {
        self.violations
    }

    /// Connected peers with their last measured RTT in microseconds.
    pub fn peers(&self) -> &BTreeMap<NodeId, u64> {
        &self.peers
    }

    /// Whether `peer` may receive anything of `app`.
    pub fn peer_allowed(&self, app: &AppId, peer: &NodeId) -> bool {
        self.policy.node_allowed(app, peer)
    }

    fn me_allowed(&self, app: &AppId) -> bool {
        self.policy.node_allowed(app, &self.me)
    }

    /// A sequence number for something this node originates at `now`.
    fn seq_at(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.started).as_millis();
        self.seq_epoch_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
            .max(self.seq_floor)
    }

    /// When the plane next needs [`Plane::tick`]: the next subscription
    /// refresh or the earliest retry of a failed upstream. The driver sleeps
    /// until then (or until the next input), as with quinn-proto's
    /// `Connection::poll_timeout`.
    pub fn poll_timeout(&self) -> Instant {
        self.channels
            .values()
            .flat_map(|c| c.failed.values().map(|(at, _)| *at))
            .fold(self.next_refresh, Instant::min)
    }

    // ----- inputs ---------------------------------------------------------

    /// A mesh link to `peer` is established.
    pub fn peer_up(&mut self, peer: NodeId, rtt_us: u64, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        self.peers.insert(peer.clone(), rtt_us);
        self.flood_my_link_state(now, &mut actions);
        // Give the new peer our whole link-state database...
        for (origin, record) in &self.link_db {
            if origin != &self.me {
                actions.push(Action::Send {
                    peer: peer.clone(),
                    msg: PeerMsg::LinkState {
                        origin: origin.clone(),
                        seq: record.seq,
                        links: record.up.iter().map(|(n, r)| (n.clone(), *r)).collect(),
                    },
                });
            }
        }
        // ...and every announcement it may see.
        self.announce_all_to(&peer, &mut actions);
        self.reconcile_all(now, &mut actions);
        actions
    }

    /// Updates a live link's measured RTT (reported, not used for routing).
    pub fn peer_rtt(&mut self, peer: &NodeId, rtt_us: u64) {
        if let Some(rtt) = self.peers.get_mut(peer) {
            *rtt = rtt_us;
        }
    }

    /// The mesh link to `peer` is gone.
    pub fn peer_down(&mut self, peer: &NodeId, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.peers.remove(peer).is_none() {
            return actions;
        }
        self.flood_my_link_state(now, &mut actions);
        let keys: Vec<ChannelKey> = self.channels.keys().cloned().collect();
        for key in keys {
            let Some(channel) = self.channels.get_mut(&key) else {
                continue;
            };
            let mut changed = false;
            for downstream in channel.downstream.values_mut() {
                changed |= downstream.remove(peer).is_some();
            }
            let lost: Vec<NodeId> = channel
                .upstream
                .iter()
                .filter(|(_, up)| &up.peer == peer)
                .map(|(origin, _)| origin.clone())
                .collect();
            for origin in lost {
                self.drop_upstream(&key, &origin, "upstream link went down", now, &mut actions);
                changed = true;
            }
            if changed {
                actions.push(Action::ChannelChanged(key));
            }
        }
        self.reconcile_all(now, &mut actions);
        actions
    }

    /// A control message arrived from a connected peer.
    pub fn on_peer_msg(&mut self, from: &NodeId, msg: PeerMsg, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match msg {
            PeerMsg::LinkState { origin, seq, links } => {
                self.on_link_state(from, origin, seq, links, now, &mut actions)
            }
            PeerMsg::Announce {
                key,
                origin,
                seq,
                tracks,
            } => self.on_announce(from, key, origin, seq, tracks, now, &mut actions),
            PeerMsg::Subscribe { key, origin, path } => {
                self.on_subscribe(from, key, origin, path, now, &mut actions)
            }
            PeerMsg::Unsubscribe { key, origin } => {
                self.on_unsubscribe(from, key, origin, now, &mut actions)
            }
            PeerMsg::SubscribeOk { key, origin } => {
                self.on_subscribe_ok(from, key, origin, &mut actions)
            }
            PeerMsg::SubscribeError {
                key,
                origin,
                message,
                ..
            } => {
                let is_upstream = self
                    .channels
                    .get(&key)
                    .and_then(|c| c.upstream.get(&origin))
                    .is_some_and(|up| &up.peer == from);
                if is_upstream {
                    let reason = format!("{from}: {message}");
                    let retry_at = now + RETRY_BACKOFF;
                    self.drop_upstream(&key, &origin, &reason, retry_at, &mut actions);
                    actions.push(Action::ChannelChanged(key.clone()));
                    self.reconcile(&key, now, &mut actions);
                }
            }
        }
        actions
    }

    /// The set of tracks local publishers have in a channel changed.
    pub fn set_local_tracks(
        &mut self,
        key: &ChannelKey,
        tracks: BTreeMap<u64, TrackInfo>,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let seq = self.seq_at(now);
        let Some(channel) = self.local_channel(key) else {
            // Only a revoked session's tracks going away can get here.
            return vec![Action::ChannelChanged(key.clone())];
        };
        if channel.local == tracks {
            return actions;
        }
        channel.local = tracks;
        channel.local_seq = channel.local_seq.saturating_add(1).max(seq);
        let msg = self.local_announce(key, &self.channels[key]);
        self.send_to_allowed_peers(&key.0, None, &msg, &mut actions);
        actions.push(Action::ChannelChanged(key.clone()));
        self.gc(key, now);
        actions
    }

    /// Whether any local session subscribes to the channel.
    pub fn set_local_interest(
        &mut self,
        key: &ChannelKey,
        interested: bool,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(channel) = self.local_channel(key) else {
            return vec![Action::ChannelChanged(key.clone())];
        };
        if channel.local_interest == interested {
            return actions;
        }
        channel.local_interest = interested;
        actions.push(Action::ChannelChanged(key.clone()));
        self.reconcile(key, now, &mut actions);
        self.gc(key, now);
        actions
    }

    /// The channel entry for a local change; `None` when this node is not
    /// allowed for the app (it then keeps nothing of the channel).
    fn local_channel(&mut self, key: &ChannelKey) -> Option<&mut Channel> {
        if !self.me_allowed(&key.0) {
            return None;
        }
        self.remember(key);
        Some(self.channels.entry(key.clone()).or_default())
    }

    /// Adds a name to the introspection set, up to [`MAX_SEEN`] names.
    fn remember(&mut self, key: &ChannelKey) {
        if self.seen.len() < MAX_SEEN {
            self.seen.insert(key.clone());
        }
    }

    /// Time passed: retry failed upstreams whose backoff expired.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let due: Vec<ChannelKey> = self
            .channels
            .iter()
            .filter(|(_, c)| c.failed.values().any(|(at, _)| *at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.reconcile(&key, now, &mut actions);
            // A retry that is still due (its origin is served another way)
            // waits one backoff, so the driver never spins on it.
            if let Some(channel) = self.channels.get_mut(&key) {
                for (at, _) in channel.failed.values_mut() {
                    if *at <= now {
                        *at = now + RETRY_BACKOFF;
                    }
                }
            }
        }
        if now >= self.next_refresh {
            self.next_refresh = now + REFRESH;
            self.refresh(now, &mut actions);
        }
        self.tombstones.retain(|_, (_, forget_at)| *forget_at > now);
        actions
    }

    /// Drops the announced tracks of origins that no live link has reached
    /// for [`ORIGIN_EXPIRY_MS`]; returns the channels that changed.
    fn forget_lost_origins(&mut self, now: Instant) -> Vec<ChannelKey> {
        let mut reached = BTreeSet::from([self.me.clone()]);
        let mut frontier = vec![self.me.clone()];
        while let Some(node) = frontier.pop() {
            for (next, _, up) in self.topology.neighbours(&node) {
                if up && reached.insert(next.clone()) {
                    frontier.push(next.clone());
                }
            }
        }
        let nodes: Vec<NodeId> = self.policy.fleet.nodes.keys().cloned().collect();
        for node in nodes {
            if reached.contains(&node) {
                self.unreachable_since.remove(&node);
            } else {
                self.unreachable_since.entry(node).or_insert(now);
            }
        }
        let lost: BTreeSet<&NodeId> = self
            .unreachable_since
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= ORIGIN_EXPIRY)
            .map(|(node, _)| node)
            .collect();
        let mut changed = Vec::new();
        for (key, channel) in &mut self.channels {
            let before = channel.remote.len();
            channel.remote.retain(|origin, _| !lost.contains(origin));
            if channel.remote.len() != before {
                changed.push(key.clone());
            }
        }
        changed
    }

    /// Re-sends every upstream subscription (soft state) and expires
    /// downstream subscriptions that were not refreshed.
    fn refresh(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let mut resend = Vec::new();
        let mut expired = Vec::new();
        for (key, channel) in &mut self.channels {
            for (origin, up) in &channel.upstream {
                resend.push((
                    up.peer.clone(),
                    PeerMsg::Subscribe {
                        key: key.clone(),
                        origin: origin.clone(),
                        path: up.path.clone(),
                    },
                ));
            }
            let mut changed = false;
            for downstream in channel.downstream.values_mut() {
                let before = downstream.len();
                downstream.retain(|_, d| now.saturating_duration_since(d.refreshed) <= EXPIRE);
                changed |= downstream.len() != before;
            }
            if changed {
                expired.push(key.clone());
            }
        }
        for (peer, msg) in resend {
            self.send_if_allowed_peer(&peer, msg, actions);
        }
        expired.extend(self.forget_lost_origins(now));
        for key in expired {
            actions.push(Action::ChannelChanged(key.clone()));
            self.reconcile(&key, now, actions);
            self.gc(&key, now);
        }
    }

    /// A new policy is in force (reload). Channels of apps no longer allowed
    /// here are forgotten; forwarding to or through disallowed nodes is torn
    /// down and re-routed.
    pub fn set_policy(&mut self, policy: Arc<Policy>, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut topology = crate::routing::Topology::from_fleet(&policy.fleet);
        for link in &policy.fleet.links {
            topology.set_link_up(&link.a, &link.b, false);
        }
        self.topology = topology;
        self.topology_version += 1;
        self.policy = policy;
        self.peers
            .retain(|peer, _| self.policy.fleet.nodes.contains_key(peer.as_str()));
        self.recompute_topology();
        let policy = Arc::clone(&self.policy);
        let me = self.me.clone();
        self.seen.retain(|key| policy.node_allowed(&key.0, &me));
        let keys: Vec<ChannelKey> = self.channels.keys().cloned().collect();
        for key in keys {
            if !self.me_allowed(&key.0) {
                // Tear down and forget: this node may no longer hold the name.
                let channel = self.channels.remove(&key).unwrap_or_default();
                for (origin, up) in channel.upstream {
                    self.send_if_allowed_peer(
                        &up.peer,
                        PeerMsg::Unsubscribe {
                            key: key.clone(),
                            origin,
                        },
                        &mut actions,
                    );
                }
                for (origin, downstream) in channel.downstream {
                    for peer in downstream.keys() {
                        self.send_if_allowed_peer(
                            peer,
                            PeerMsg::SubscribeError {
                                key: key.clone(),
                                origin: origin.clone(),
                                code: ErrorCode::GeofenceRevoked,
                                message: format!(
                                    "{} is no longer allowed for app {}",
                                    self.me, key.0
                                ),
                            },
                            &mut actions,
                        );
                    }
                }
                self.seen.remove(&key);
                actions.push(Action::ChannelChanged(key));
                continue;
            }
            let policy = Arc::clone(&self.policy);
            let Some(channel) = self.channels.get_mut(&key) else {
                continue;
            };
            channel
                .remote
                .retain(|origin, _| policy.node_allowed(&key.0, origin));
            for downstream in channel.downstream.values_mut() {
                downstream.retain(|peer, _| policy.node_allowed(&key.0, peer));
            }
            let stale: Vec<NodeId> = channel
                .upstream
                .iter()
                .filter(|(_, up)| up.path.iter().any(|n| !policy.node_allowed(&key.0, n)))
                .map(|(origin, _)| origin.clone())
                .collect();
            for origin in stale {
                self.drop_upstream(
                    &key,
                    &origin,
                    "policy reload: path crosses a disallowed node",
                    now,
                    &mut actions,
                );
            }
            actions.push(Action::ChannelChanged(key.clone()));
            self.reconcile(&key, now, &mut actions);
        }
        // Peers that the new policy allows for an app may not have heard of
        // its channels yet.
        let peers: Vec<NodeId> = self.peers.keys().cloned().collect();
        for peer in &peers {
            self.announce_all_to(peer, &mut actions);
        }
        actions
    }

    // ----- queries for the driver ----------------------------------------

    /// The tracks of a channel visible here: local ones and those of remote
    /// origins, with the origin.
    pub fn tracks(&self, key: &ChannelKey) -> Vec<(NodeId, TrackInfo)> {
        let Some(channel) = self.channels.get(key) else {
            return Vec::new();
        };
        let local = channel.local.values().map(|t| (self.me.clone(), t.clone()));
        let remote = channel
            .remote
            .iter()
            .flat_map(|(origin, r)| r.tracks.iter().map(move |t| (origin.clone(), t.clone())));
        local.chain(remote).collect()
    }

    /// How each origin's tracks of a channel are forwarded at this node.
    pub fn forwarding(&self, key: &ChannelKey) -> BTreeMap<NodeId, Forwarding> {
        let mut out = BTreeMap::new();
        let Some(channel) = self.channels.get(key) else {
            return out;
        };
        let mut origins: BTreeSet<NodeId> = channel.upstream.keys().cloned().collect();
        origins.extend(channel.downstream.keys().cloned());
        if !channel.local.is_empty() {
            origins.insert(self.me.clone());
        }
        for origin in origins {
            let upstream = if origin == self.me {
                None
            } else {
                match channel.upstream.get(&origin) {
                    Some(up) => Some(up.peer.clone()),
                    None => continue,
                }
            };
            let downstream = channel
                .downstream
                .get(&origin)
                .map(|d| {
                    d.keys()
                        .filter(|p| self.peers.contains_key(*p) && self.peer_allowed(&key.0, p))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            out.insert(
                origin,
                Forwarding {
                    upstream,
                    downstream,
                    local: channel.local_interest,
                },
            );
        }
        out
    }

    /// The origins of a channel whose media path to this node is
    /// established: this node when it has local tracks, and every remote
    /// origin whose upstream confirmed the path (`SubscribeOk`).
    pub fn established(&self, key: &ChannelKey) -> BTreeSet<NodeId> {
        let Some(channel) = self.channels.get(key) else {
            return BTreeSet::new();
        };
        let local = (!channel.local.is_empty()).then(|| self.me.clone());
        channel
            .upstream
            .iter()
            .filter(|(_, up)| up.confirmed)
            .map(|(origin, _)| origin.clone())
            .chain(local)
            .collect()
    }

    /// What local subscribers of a channel are told about reachability:
    /// allowed nodes that no allowed path reaches, and origins whose route
    /// failed.
    pub fn reachability(&self, key: &ChannelKey) -> Reachability {
        let mut unreachable = Vec::new();
        let Some(allowed) = self.policy.allowed(&key.0) else {
            return Reachability::default();
        };
        for node in self.policy.fleet.nodes.keys() {
            if node == &self.me || !self.policy.node_allowed(&key.0, node) {
                continue;
            }
            if let Err(no_route) = self.topology.cheapest_path(allowed, &self.me, node) {
                unreachable.push((node.clone(), no_route.to_string()));
            }
        }
        if let Some(channel) = self.channels.get(key) {
            for (origin, (_, reason)) in &channel.failed {
                if !unreachable.iter().any(|(n, _)| n == origin) {
                    unreachable.push((origin.clone(), reason.clone()));
                }
            }
        }
        Reachability { unreachable }
    }

    // ----- internals ------------------------------------------------------

    /// Sends `peer` every announcement, local and relayed, of the apps it is
    /// allowed for. Receivers ignore the ones they already have (by seq).
    fn announce_all_to(&self, peer: &NodeId, actions: &mut Vec<Action>) {
        for (key, channel) in &self.channels {
            if !self.peer_allowed(&key.0, peer) {
                continue;
            }
            if !channel.local.is_empty() {
                actions.push(Action::Send {
                    peer: peer.clone(),
                    msg: self.local_announce(key, channel),
                });
            }
            // The peer's own announcements too: if it restarted, it learns
            // the sequence numbers its previous run reached.
            for (origin, remote) in &channel.remote {
                actions.push(Action::Send {
                    peer: peer.clone(),
                    msg: PeerMsg::Announce {
                        key: key.clone(),
                        origin: origin.clone(),
                        seq: remote.seq,
                        tracks: remote.tracks.clone(),
                    },
                });
            }
        }
    }

    fn local_announce(&self, key: &ChannelKey, channel: &Channel) -> PeerMsg {
        PeerMsg::Announce {
            key: key.clone(),
            origin: self.me.clone(),
            seq: channel.local_seq,
            tracks: channel.local.values().cloned().collect(),
        }
    }

    fn send_to_allowed_peers(
        &self,
        app: &AppId,
        except: Option<&NodeId>,
        msg: &PeerMsg,
        actions: &mut Vec<Action>,
    ) {
        for peer in self.peers.keys() {
            if Some(peer) != except && self.peer_allowed(app, peer) {
                actions.push(Action::Send {
                    peer: peer.clone(),
                    msg: msg.clone(),
                });
            }
        }
    }

    /// Sends `msg` (which concerns an app) only if the peer is connected and
    /// allowed for that app.
    fn send_if_allowed_peer(&self, peer: &NodeId, msg: PeerMsg, actions: &mut Vec<Action>) {
        let app = msg.app();
        let allowed = app.is_none_or(|app| self.peer_allowed(app, peer));
        if allowed && self.peers.contains_key(peer) {
            actions.push(Action::Send {
                peer: peer.clone(),
                msg,
            });
        }
    }

    fn flood_my_link_state(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.my_seq = self.my_seq.saturating_add(1).max(self.seq_at(now));
        let record = LinkRecord {
            seq: self.my_seq,
            up: self.peers.clone(),
        };
        let msg = PeerMsg::LinkState {
            origin: self.me.clone(),
            seq: record.seq,
            links: record.up.iter().map(|(n, r)| (n.clone(), *r)).collect(),
        };
        self.link_db.insert(self.me.clone(), record);
        for peer in self.peers.keys() {
            actions.push(Action::Send {
                peer: peer.clone(),
                msg: msg.clone(),
            });
        }
        self.recompute_topology();
    }

    fn on_link_state(
        &mut self,
        from: &NodeId,
        origin: NodeId,
        seq: u64,
        links: Vec<(NodeId, u64)>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if origin == self.me {
            // Our own link state from a previous run (whose wall clock was
            // ahead): originate ours above it, so the fleet takes ours.
            self.seq_floor = self.seq_floor.max(seq.saturating_add(1));
            if seq > self.my_seq {
                self.my_seq = seq;
                self.flood_my_link_state(now, actions);
            }
            return;
        }
        if !self.policy.fleet.nodes.contains_key(origin.as_str()) {
            return;
        }
        if self.link_db.get(&origin).is_some_and(|r| r.seq >= seq) {
            return;
        }
        let record = LinkRecord {
            seq,
            up: links.iter().cloned().collect(),
        };
        self.link_db.insert(origin.clone(), record);
        let msg = PeerMsg::LinkState { origin, seq, links };
        for peer in self.peers.keys() {
            if peer != from {
                actions.push(Action::Send {
                    peer: peer.clone(),
                    msg: msg.clone(),
                });
            }
        }
        self.recompute_topology();
        self.reconcile_all(now, actions);
    }

    /// A link of this node is up while its connection is live; any other
    /// configured link is up when both ends' latest link state list it.
    fn recompute_topology(&mut self) {
        let listed =
            |a: &NodeId, b: &NodeId| self.link_db.get(a).is_some_and(|r| r.up.contains_key(b));
        let states: Vec<(NodeId, NodeId, bool)> = self
            .policy
            .fleet
            .links
            .iter()
            .map(|link| {
                let up = if link.a == self.me {
                    self.peers.contains_key(&link.b)
                } else if link.b == self.me {
                    self.peers.contains_key(&link.a)
                } else {
                    listed(&link.a, &link.b) && listed(&link.b, &link.a)
                };
                (link.a.clone(), link.b.clone(), up)
            })
            .collect();
        for (a, b, up) in states {
            if self.topology.set_link_up(&a, &b, up) {
                self.topology_version += 1;
            }
        }
    }

    /// Increases whenever a link of the live topology changes state, so a
    /// driver can tell when reachability may have changed.
    pub fn topology_version(&self) -> u64 {
        self.topology_version
    }

    #[allow(clippy::too_many_arguments)]
    fn on_announce(
        &mut self,
        from: &NodeId,
        key: ChannelKey,
        origin: NodeId,
        seq: u64,
        tracks: Vec<TrackInfo>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if !self.me_allowed(&key.0) || !self.policy.node_allowed(&key.0, &origin) {
            // A peer must never send this; drop it without keeping the name.
            self.violations += 1;
            actions.push(Action::Violation {
                peer: from.clone(),
                app: key.0,
                what: Violation::Announce,
            });
            return;
        }
        if origin == self.me {
            self.supersede_own_announcement(&key, seq, &tracks, actions);
            return;
        }
        let tombstone = self.tombstones.get(&(key.clone(), origin.clone()));
        if tombstone.is_some_and(|(known, _)| *known >= seq) {
            return;
        }
        self.remember(&key);
        let channel = self.channels.entry(key.clone()).or_default();
        if channel.remote.get(&origin).is_some_and(|r| r.seq >= seq) {
            return;
        }
        channel.remote.insert(
            origin.clone(),
            Remote {
                seq,
                tracks: tracks.clone(),
            },
        );
        let msg = PeerMsg::Announce {
            key: key.clone(),
            origin,
            seq,
            tracks,
        };
        self.send_to_allowed_peers(&key.0, Some(from), &msg, actions);
        actions.push(Action::ChannelChanged(key.clone()));
        self.reconcile(&key, now, actions);
        self.gc(&key, now);
    }

    /// A peer holds an announcement of ours at `seq` from a previous run of
    /// this node (whose wall clock was ahead of ours now): announce what we
    /// have now (nothing, if the channel is not here) above it, so that the
    /// stale tracks are withdrawn.
    fn supersede_own_announcement(
        &mut self,
        key: &ChannelKey,
        seq: u64,
        tracks: &[TrackInfo],
        actions: &mut Vec<Action>,
    ) {
        self.seq_floor = self.seq_floor.max(seq.saturating_add(1));
        let msg = match self.channels.get_mut(key) {
            Some(channel) if channel.local_seq < seq => {
                channel.local_seq = seq.saturating_add(1);
                self.local_announce(key, &self.channels[key])
            }
            Some(_) => return,
            None if tracks.is_empty() => return,
            None => PeerMsg::Announce {
                key: key.clone(),
                origin: self.me.clone(),
                seq: seq.saturating_add(1),
                tracks: Vec::new(),
            },
        };
        self.send_to_allowed_peers(&key.0, None, &msg, actions);
    }

    fn refuse(
        &self,
        to: &NodeId,
        key: ChannelKey,
        origin: NodeId,
        message: String,
        actions: &mut Vec<Action>,
    ) {
        self.send_if_allowed_peer(
            to,
            PeerMsg::SubscribeError {
                key,
                origin,
                code: ErrorCode::RouteUnavailable,
                message,
            },
            actions,
        );
    }

    fn on_subscribe(
        &mut self,
        from: &NodeId,
        key: ChannelKey,
        origin: NodeId,
        path: Vec<NodeId>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if !self.me_allowed(&key.0) || !self.peer_allowed(&key.0, from) {
            self.violations += 1;
            actions.push(Action::Violation {
                peer: from.clone(),
                app: key.0,
                what: Violation::Subscribe,
            });
            return;
        }
        self.remember(&key);
        let position = path.iter().position(|n| n == &self.me);
        let simple = path.iter().collect::<BTreeSet<_>>().len() == path.len();
        let valid = match position {
            Some(i) => i > 0 && &path[i - 1] == from && path.last() == Some(&origin) && simple,
            None => false,
        };
        let Some(i) = position.filter(|_| valid) else {
            self.refuse(from, key, origin, "malformed source route".into(), actions);
            return;
        };
        if let Some(bad) = path.iter().find(|n| !self.policy.node_allowed(&key.0, n)) {
            let message = format!("source route crosses {bad}, which is not allowed for the app");
            self.refuse(from, key, origin, message, actions);
            return;
        }
        let visited: Vec<NodeId> = path[..i].to_vec();
        let refreshed = self
            .channels
            .get_mut(&key)
            .and_then(|c| c.downstream.get_mut(&origin))
            .and_then(|d| d.get_mut(from))
            .map(|d| d.refreshed = now)
            .is_some();
        if refreshed {
            self.ack_if_established(from, &key, &origin, actions);
            return;
        }
        let entry = Downstream {
            visited,
            refreshed: now,
        };
        if origin == self.me {
            let seq = self.seq_at(now);
            let channel = self.channels.entry(key.clone()).or_default();
            channel
                .downstream
                .entry(origin.clone())
                .or_default()
                .insert(from.clone(), entry);
            if channel.local.is_empty() {
                // The subscriber may hold tracks from before this node
                // restarted: a fresh, empty announcement withdraws them.
                channel.local_seq = channel.local_seq.saturating_add(1).max(seq);
            }
            let msg = self.local_announce(&key, &self.channels[&key]);
            self.send_if_allowed_peer(from, msg, actions);
            self.ack_if_established(from, &key, &origin, actions);
            actions.push(Action::ChannelChanged(key));
            return;
        }
        let channel = self.channels.entry(key.clone()).or_default();
        if let Some(up) = channel.upstream.get(&origin) {
            if up.path.iter().skip(1).any(|n| entry.visited.contains(n)) {
                let message = format!(
                    "{} already pulls this channel through the requester; retry",
                    self.me
                );
                self.refuse(from, key, origin, message, actions);
                return;
            }
        } else {
            let remainder = path[i..].to_vec();
            let next = remainder[1].clone();
            if !self.peers.contains_key(&next) {
                let message = format!("link {} - {next} is down", self.me);
                self.refuse(from, key, origin, message, actions);
                return;
            }
            channel.failed.remove(&origin);
            channel
                .upstream
                .insert(origin.clone(), Upstream::new(next.clone(), remainder));
            self.send_if_allowed_peer(
                &next,
                PeerMsg::Subscribe {
                    key: key.clone(),
                    origin: origin.clone(),
                    path,
                },
                actions,
            );
        }
        if let Some(channel) = self.channels.get_mut(&key) {
            channel
                .downstream
                .entry(origin.clone())
                .or_default()
                .insert(from.clone(), entry);
        }
        self.ack_if_established(from, &key, &origin, actions);
        actions.push(Action::ChannelChanged(key));
    }

    /// Tells `to` that its subscription for `origin` is established, if
    /// this node is the origin or its own upstream confirmed the path.
    fn ack_if_established(
        &self,
        to: &NodeId,
        key: &ChannelKey,
        origin: &NodeId,
        actions: &mut Vec<Action>,
    ) {
        let established = origin == &self.me
            || self
                .channels
                .get(key)
                .and_then(|c| c.upstream.get(origin))
                .is_some_and(|up| up.confirmed);
        if established {
            self.send_if_allowed_peer(
                to,
                PeerMsg::SubscribeOk {
                    key: key.clone(),
                    origin: origin.clone(),
                },
                actions,
            );
        }
    }

    /// The upstream for `origin` confirmed the path: media can flow. The
    /// downstream peers waiting on it hear it in turn. A confirmation from a
    /// peer that is not this node's upstream for `origin` means the peer
    /// forwards to us what nobody here asked for (a subscription that was in
    /// flight across a revoke and a restore, or an old path after a switch):
    /// it is told to stop at once instead of when the soft state expires.
    fn on_subscribe_ok(
        &mut self,
        from: &NodeId,
        key: ChannelKey,
        origin: NodeId,
        actions: &mut Vec<Action>,
    ) {
        let upstream = self
            .channels
            .get_mut(&key)
            .and_then(|c| c.upstream.get_mut(&origin))
            .filter(|up| &up.peer == from);
        let Some(up) = upstream else {
            if self.me_allowed(&key.0) {
                self.send_if_allowed_peer(from, PeerMsg::Unsubscribe { key, origin }, actions);
            }
            return;
        };
        if up.confirmed {
            return;
        }
        up.confirmed = true;
        let Some(channel) = self.channels.get(&key) else {
            return;
        };
        let downstream: Vec<NodeId> = channel
            .downstream
            .get(&origin)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        for peer in &downstream {
            self.ack_if_established(peer, &key, &origin, actions);
        }
        actions.push(Action::ChannelChanged(key));
    }

    fn on_unsubscribe(
        &mut self,
        from: &NodeId,
        key: ChannelKey,
        origin: NodeId,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(channel) = self.channels.get_mut(&key) else {
            return;
        };
        let removed = channel
            .downstream
            .get_mut(&origin)
            .is_some_and(|d| d.remove(from).is_some());
        if removed {
            actions.push(Action::ChannelChanged(key.clone()));
            self.reconcile(&key, now, actions);
            self.gc(&key, now);
        }
    }

    /// Drops the upstream for `origin` and tells every downstream peer, which
    /// re-subscribe with fresh paths; the next attempt is due at `retry_at`.
    fn drop_upstream(
        &mut self,
        key: &ChannelKey,
        origin: &NodeId,
        reason: &str,
        retry_at: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(channel) = self.channels.get_mut(key) else {
            return;
        };
        if let Some(up) = channel.upstream.remove(origin) {
            let peer = up.peer;
            let msg = PeerMsg::Unsubscribe {
                key: key.clone(),
                origin: origin.clone(),
            };
            channel
                .failed
                .insert(origin.clone(), (retry_at, reason.to_string()));
            let downstream = channel.downstream.remove(origin).unwrap_or_default();
            self.send_if_allowed_peer(&peer, msg, actions);
            for down in downstream.keys() {
                self.send_if_allowed_peer(
                    down,
                    PeerMsg::SubscribeError {
                        key: key.clone(),
                        origin: origin.clone(),
                        code: ErrorCode::RouteUnavailable,
                        message: reason.to_string(),
                    },
                    actions,
                );
            }
        }
    }

    fn reconcile_all(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let keys: Vec<ChannelKey> = self.channels.keys().cloned().collect();
        for key in keys {
            self.reconcile(&key, now, actions);
        }
    }

    /// Makes the channel's upstreams match what is needed: for local
    /// interest, one upstream per remote origin along the cheapest allowed
    /// path; transit upstreams (kept for downstream peers) follow the
    /// requesters' source routes and are only checked for validity here.
    fn reconcile(&mut self, key: &ChannelKey, now: Instant, actions: &mut Vec<Action>) {
        let Some(channel) = self.channels.get(key) else {
            return;
        };
        let Some(allowed) = self.policy.allowed(&key.0).cloned() else {
            return;
        };
        let origins: BTreeSet<NodeId> = channel
            .remote
            .iter()
            .filter(|(_, r)| !r.tracks.is_empty())
            .map(|(o, _)| o.clone())
            .chain(channel.upstream.keys().cloned())
            .collect();
        let mut changed = false;
        for origin in origins {
            let Some(channel) = self.channels.get(key) else {
                return;
            };
            let has_downstream = channel
                .downstream
                .get(&origin)
                .is_some_and(|d| !d.is_empty());
            let announced = channel
                .remote
                .get(&origin)
                .is_some_and(|r| !r.tracks.is_empty());
            let wanted = (channel.local_interest && announced) || has_downstream;
            let current = channel.upstream.get(&origin).cloned();
            if let Some(up) = &current {
                let valid = self.peers.contains_key(&up.peer)
                    && up.path.iter().all(|n| self.policy.node_allowed(&key.0, n))
                    && up
                        .path
                        .windows(2)
                        .all(|w| link_is_up(&self.topology, &w[0], &w[1]));
                if wanted && valid {
                    // A subscriber's own path moves back to the cheapest one
                    // once it is available again (after a failover). With
                    // downstream peers it stays: they chose their paths
                    // through this one.
                    if channel.local_interest && !has_downstream {
                        changed |= self.reoptimise(key, &origin, &allowed, up, actions);
                    }
                    continue;
                }
                if !wanted {
                    if let Some(channel) = self.channels.get_mut(key) {
                        channel.upstream.remove(&origin);
                    }
                    self.send_if_allowed_peer(
                        &up.peer,
                        PeerMsg::Unsubscribe {
                            key: key.clone(),
                            origin: origin.clone(),
                        },
                        actions,
                    );
                    changed = true;
                    continue;
                }
                self.drop_upstream(key, &origin, "path is no longer valid", now, actions);
                changed = true;
            }
            // Only a node with local interest computes a path; transit nodes
            // wait for their downstream to re-subscribe.
            let Some(channel) = self.channels.get(key) else {
                return;
            };
            if !(channel.local_interest && announced) {
                continue;
            }
            if channel.failed.get(&origin).is_some_and(|(at, _)| *at > now) {
                continue;
            }
            match self.topology.cheapest_path(&allowed, &self.me, &origin) {
                Ok(route) if route.path.len() >= 2 => {
                    let next = route.path[1].clone();
                    let path = route.path.clone();
                    if let Some(channel) = self.channels.get_mut(key) {
                        channel.failed.remove(&origin);
                        channel
                            .upstream
                            .insert(origin.clone(), Upstream::new(next.clone(), path.clone()));
                    }
                    self.send_if_allowed_peer(
                        &next,
                        PeerMsg::Subscribe {
                            key: key.clone(),
                            origin: origin.clone(),
                            path: path.clone(),
                        },
                        actions,
                    );
                    actions.push(Action::Decision {
                        key: key.clone(),
                        origin: origin.clone(),
                        outcome: RouteOutcome::Chosen(path),
                    });
                    changed = true;
                }
                Ok(_) => {}
                Err(no_route) => {
                    let reason = no_route.to_string();
                    let previously = self
                        .channels
                        .get(key)
                        .and_then(|c| c.failed.get(&origin))
                        .map(|(_, r)| r.clone());
                    if let Some(channel) = self.channels.get_mut(key) {
                        channel
                            .failed
                            .insert(origin.clone(), (now + RETRY_BACKOFF, reason.clone()));
                    }
                    if previously.as_deref() != Some(reason.as_str()) {
                        actions.push(Action::Decision {
                            key: key.clone(),
                            origin: origin.clone(),
                            outcome: RouteOutcome::Unavailable(no_route),
                        });
                        changed = true;
                    }
                }
            }
        }
        // Origins that are no longer announced and have no upstream need no
        // retry bookkeeping.
        if let Some(channel) = self.channels.get_mut(key) {
            let remote = &channel.remote;
            let upstream = &channel.upstream;
            let before = channel.failed.len();
            channel.failed.retain(|origin, _| {
                remote.get(origin).is_some_and(|r| !r.tracks.is_empty())
                    || upstream.contains_key(origin)
            });
            if !channel.local_interest {
                channel.failed.clear();
            }
            changed |= before != channel.failed.len();
        }
        if changed {
            actions.push(Action::ChannelChanged(key.clone()));
        }
    }

    /// Forgets a channel nothing here needs any more. Its announcement
    /// sequence numbers go with it; a later announcement starts from the
    /// current time, so it still supersedes anything older.
    /// Switches the upstream for `origin` to the cheapest allowed path if that
    /// starts with another next hop than `current`: subscribe along the new
    /// path, then leave the old one. Returns whether it switched.
    fn reoptimise(
        &mut self,
        key: &ChannelKey,
        origin: &NodeId,
        allowed: &crate::routing::AllowedRegions,
        current: &Upstream,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Ok(route) = self.topology.cheapest_path(allowed, &self.me, origin) else {
            return false;
        };
        // Only a change of next hop is this node's to make; beyond it, the
        // path belongs to the nodes upstream.
        let Some(next) = route.path.get(1).cloned() else {
            return false;
        };
        if next == current.peer {
            return false;
        }
        if let Some(channel) = self.channels.get_mut(key) {
            channel.upstream.insert(
                origin.clone(),
                Upstream::new(next.clone(), route.path.clone()),
            );
        }
        self.send_if_allowed_peer(
            &next,
            PeerMsg::Subscribe {
                key: key.clone(),
                origin: origin.clone(),
                path: route.path.clone(),
            },
            actions,
        );
        self.send_if_allowed_peer(
            &current.peer,
            PeerMsg::Unsubscribe {
                key: key.clone(),
                origin: origin.clone(),
            },
            actions,
        );
        actions.push(Action::Decision {
            key: key.clone(),
            origin: origin.clone(),
            outcome: RouteOutcome::Chosen(route.path),
        });
        true
    }

    fn gc(&mut self, key: &ChannelKey, now: Instant) {
        if !self
            .channels
            .get(key)
            .is_some_and(|c| c.is_idle() && c.failed.is_empty())
        {
            return;
        }
        if let Some(channel) = self.channels.remove(key) {
            for (origin, remote) in channel.remote {
                self.tombstones
                    .insert((key.clone(), origin), (remote.seq, now + TOMBSTONE));
            }
        }
    }
}

fn link_is_up(topology: &crate::routing::Topology, a: &NodeId, b: &NodeId) -> bool {
    topology.neighbours(a).any(|(n, _, up)| n == b && up)
}
