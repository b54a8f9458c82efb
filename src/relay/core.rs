//! The relay logic of one node without IO: sessions and peers as the node
//! knows them, the control [`Plane`], the local [`Directory`] and the
//! rebuild of the media [`RouteTable`].
//!
//! [`NodeCore`] takes inputs — a session was admitted, announced, subscribed
//! or left; a peer came up, sent a frame or went away; a policy was
//! reloaded; time passed — with a monotonic `now` from its driver. It
//! carries out the plane's actions itself: control frames go to a
//! connection through its [`Control`] handle (a bounded queue in
//! production, a recorder in tests), and the routes of every channel that
//! changed are rebuilt before the input returns. What must be recorded
//! (geofence decisions, tracks published) comes back as [`CoreEvent`]s from
//! [`NodeCore::take_events`]. No tokio, no sockets, no clock, no logging.
//!
//! The thin [`super::hub::Hub`] puts a mutex around it, reads the clock and
//! turns events into metrics and metadata.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::ErrorCode;
use crate::ids::{AppId, CountryCode, NodeId, RegionId};
use crate::metadata::{EventKind, GeofenceDecision};
use crate::wire::stream::Outbound;
use crate::wire::{Announce, ErrorFrame, Frame, TrackInfo};

use super::admission::{Refusal, redirect_targets};
use super::directory::{Directory, OwnershipError, PathState};
use super::plane::{Action, ChannelKey, PeerMsg, Plane, RouteOutcome, Violation};
use super::policy::Policy;
use super::routes::{
    AppCounterSet, ChannelView, Receiver, Receivers, RouteTable, build_channel_routes,
};

/// How many random keys an announcement tries before giving up (a clash
/// of 62-bit random keys is already vanishingly rare).
const KEY_ATTEMPTS: usize = 8;

/// The control side of a connection, as the core uses it. Production
/// implements it over the connection's bounded control queue; a test can
/// stand in for a connection with a recorder.
pub trait Control: Send + Sync + fmt::Debug {
    /// Queues a control frame or the closing `ERROR`; `false` when the
    /// queue is full (the connection does not read its control stream).
    fn send(&self, out: Outbound) -> bool;
    /// Closes the connection at once with `code` (no `ERROR` frame first).
    fn abort(&self, code: ErrorCode, reason: &str);
    /// The connection's identity, to tell a replaced connection's late
    /// notifications from the current one's.
    fn connection_id(&self) -> usize;
    /// The connection's smoothed round-trip time.
    fn rtt(&self) -> Duration;
}

/// A session as the node knows it.
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
    pub client_country: Option<CountryCode>,
    /// Control frames to the client.
    pub control: Arc<dyn Control>,
    /// Media and messages to the client.
    pub receiver: Receiver,
}

/// A connected mesh peer.
#[derive(Debug)]
pub struct PeerEntry {
    /// Control frames to the peer.
    pub control: Arc<dyn Control>,
    /// Media and messages to the peer.
    pub receiver: Receiver,
}

/// Something the driver must record: a geofence decision or a track event.
#[derive(Clone, Debug, PartialEq)]
pub enum CoreEvent {
    /// A path to an origin was chosen, or none is allowed right now.
    Route {
        /// The channel.
        key: ChannelKey,
        /// The origin the path leads to.
        origin: NodeId,
        /// The outcome.
        outcome: RouteOutcome,
    },
    /// A geofence decision about a session (revoked).
    Decision {
        /// The app.
        app: AppId,
        /// The session it concerns, if one.
        session: Option<u64>,
        /// The decision.
        decision: GeofenceDecision,
    },
    /// An operational event of an app (tracks published and withdrawn).
    Record {
        /// The app.
        app: AppId,
        /// The event.
        kind: EventKind,
    },
    /// A peer sent a frame it must never send; it was dropped.
    Violation {
        /// The peer.
        peer: NodeId,
        /// The app the frame concerned.
        app: AppId,
        /// What it was.
        what: Violation,
    },
}

/// What a reload did at this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyApplied {
    /// Sessions closed with `GEOFENCE_REVOKED`.
    pub revoked_sessions: u64,
    /// Routes (re)chosen while applying it.
    pub rerouted: u64,
}

struct Tables<'a> {
    sessions: &'a HashMap<u64, SessionEntry>,
    peers: &'a BTreeMap<NodeId, PeerEntry>,
}

impl Receivers for Tables<'_> {
    fn session(&self, id: u64) -> Option<&Receiver> {
        self.sessions.get(&id).map(|s| &s.receiver)
    }

    fn peer(&self, id: &NodeId) -> Option<&Receiver> {
        self.peers.get(id).map(|p| &p.receiver)
    }
}

/// The relay logic of one node. See the module docs.
pub struct NodeCore {
    me: NodeId,
    policy: Arc<Policy>,
    plane: Plane,
    directory: Directory,
    sessions: HashMap<u64, SessionEntry>,
    /// Open sessions per channel, and channels per app with a session here
    /// (`max_channels_per_app`).
    channel_sessions: HashMap<ChannelKey, usize>,
    app_channels: HashMap<AppId, usize>,
    next_session: u64,
    peers: BTreeMap<NodeId, PeerEntry>,
    routes: Arc<RouteTable>,
    counters: Arc<AppCounterSet>,
    events: Vec<CoreEvent>,
    rerouted: u64,
    /// The plane's topology version subscribers were last told about.
    reachability_version: u64,
}

impl fmt::Debug for NodeCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCore")
            .field("me", &self.me)
            .field("sessions", &self.sessions.len())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl NodeCore {
    /// The core of node `me` under `policy`, started at monotonic `now`;
    /// `seq_epoch_ms` is the wall clock at start (see [`Plane::new`]).
    /// Routes are written to `routes`, counted against `counters`.
    pub fn new(
        me: NodeId,
        policy: Arc<Policy>,
        routes: Arc<RouteTable>,
        counters: Arc<AppCounterSet>,
        now: Instant,
        seq_epoch_ms: u64,
    ) -> Self {
        Self {
            plane: Plane::new(me.clone(), Arc::clone(&policy), now, seq_epoch_ms),
            me,
            policy,
            directory: Directory::default(),
            sessions: HashMap::new(),
            channel_sessions: HashMap::new(),
            app_channels: HashMap::new(),
            next_session: 1,
            peers: BTreeMap::new(),
            routes,
            counters,
            events: Vec::new(),
            rerouted: 0,
            reachability_version: 0,
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

    /// The control plane (read-only).
    pub fn plane(&self) -> &Plane {
        &self.plane
    }

    /// The local channel directory (read-only).
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// The events produced since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<CoreEvent> {
        std::mem::take(&mut self.events)
    }

    /// When [`NodeCore::tick`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        self.plane.poll_timeout()
    }

    // ----- sessions ---------------------------------------------------------

    /// Registers an admitted session, unless the node already holds
    /// `max_sessions` (checked and taken in one step); returns its id.
    pub fn add_session(
        &mut self,
        entry: SessionEntry,
        max_sessions: usize,
    ) -> Result<u64, Refusal> {
        if self.sessions.len() >= max_sessions {
            return Err(Refusal::plain(
                ErrorCode::LimitExceeded,
                "this node is at its session limit",
            ));
        }
        let key: ChannelKey = (entry.app.clone(), entry.channel.clone());
        if !self.channel_sessions.contains_key(&key) {
            let max = self.policy.fleet.limits.max_channels_per_app;
            if self.app_channels.get(&key.0).copied().unwrap_or(0) >= max {
                return Err(Refusal::plain(
                    ErrorCode::LimitExceeded,
                    format!("the app has {max} channels on this node (max_channels_per_app)"),
                ));
            }
            *self.app_channels.entry(key.0.clone()).or_default() += 1;
        }
        *self.channel_sessions.entry(key).or_default() += 1;
        let id = self.next_session;
        self.next_session += 1;
        self.sessions.insert(id, entry);
        Ok(id)
    }

    /// Channels `app` has open sessions in on this node.
    pub fn channel_count(&self, app: &AppId) -> usize {
        self.app_channels.get(app).copied().unwrap_or(0)
    }

    fn release_channel(&mut self, key: &ChannelKey) {
        let Some(count) = self.channel_sessions.get_mut(key) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        self.channel_sessions.remove(key);
        if let Some(channels) = self.app_channels.get_mut(&key.0) {
            *channels -= 1;
            if *channels == 0 {
                self.app_channels.remove(&key.0);
            }
        }
    }

    /// A session, if it is open.
    pub fn session(&self, id: u64) -> Option<&SessionEntry> {
        self.sessions.get(&id)
    }

    /// The number of open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    fn session_key(&self, session: u64) -> Result<ChannelKey, Refusal> {
        self.sessions
            .get(&session)
            .map(|s| (s.app.clone(), s.channel.clone()))
            .ok_or_else(|| Refusal::plain(ErrorCode::NotFound, "no such session"))
    }

    /// A publisher offers a track; returns the relay-assigned key, the first
    /// of `new_key`'s keys that no track of the channel uses.
    pub fn announce(
        &mut self,
        session: u64,
        announce: &Announce,
        max_tracks: usize,
        mut new_key: impl FnMut() -> u64,
        now: Instant,
    ) -> Result<u64, Refusal> {
        let entry = self
            .sessions
            .get(&session)
            .ok_or_else(|| Refusal::plain(ErrorCode::NotFound, "no such session"))?;
        if !entry.can_publish {
            return Err(Refusal::plain(
                ErrorCode::Unauthorized,
                "this token's role is subscribe: it may not publish",
            ));
        }
        let key: ChannelKey = (entry.app.clone(), entry.channel.clone());
        let user = entry.user.clone();
        let mut outcome = Err(OwnershipError::KeyInUse(0));
        for _ in 0..KEY_ATTEMPTS {
            let info = TrackInfo {
                track: new_key(),
                publisher: user.clone(),
                kind: announce.kind,
                e2ee: announce.e2ee,
                name: announce.name.clone(),
            };
            let track = info.track;
            outcome = self
                .directory
                .announce(&key, session, info, max_tracks)
                .map(|()| track);
            if !matches!(outcome, Err(OwnershipError::KeyInUse(_))) {
                break;
            }
        }
        let track = outcome.map_err(|err| match err {
            OwnershipError::TooManyTracks(_) => {
                Refusal::plain(ErrorCode::LimitExceeded, err.to_string())
            }
            other => Refusal::plain(ErrorCode::ProtocolViolation, other.to_string()),
        })?;
        self.events.push(CoreEvent::Record {
            app: key.0.clone(),
            kind: EventKind::TrackPublished {
                session_id: session,
                track: announce.name.clone(),
                kind: metadata_kind(announce.kind),
                subscribers: self.directory.subscriber_count(&key) as u32,
            },
        });
        self.local_tracks_changed(&key, now);
        Ok(track)
    }

    /// A publisher withdraws a track it owns; any other key is a protocol
    /// violation (PROTOCOL.md, Publishing).
    pub fn unannounce(&mut self, session: u64, track: u64, now: Instant) -> Result<(), Refusal> {
        let key = self.session_key(session)?;
        let info = self
            .directory
            .withdraw(&key, session, track)
            .map_err(|err| Refusal::plain(ErrorCode::ProtocolViolation, err.to_string()))?;
        self.record_withdrawn(&key, session, vec![info]);
        self.local_tracks_changed(&key, now);
        Ok(())
    }

    fn record_withdrawn(&mut self, key: &ChannelKey, session: u64, gone: Vec<TrackInfo>) {
        let subscribers = self.directory.subscriber_count(key) as u32;
        for info in gone {
            self.events.push(CoreEvent::Record {
                app: key.0.clone(),
                kind: EventKind::TrackUnpublished {
                    session_id: session,
                    track: info.name,
                    kind: metadata_kind(info.kind),
                    subscribers,
                },
            });
        }
    }

    fn local_tracks_changed(&mut self, key: &ChannelKey, now: Instant) {
        let tracks = self.directory.tracks(key);
        let actions = self.plane.set_local_tracks(key, tracks, now);
        self.apply(actions);
    }

    /// A session subscribes to its channel.
    pub fn subscribe(&mut self, session: u64, now: Instant) -> Result<(), Refusal> {
        let key = self.session_key(session)?;
        let max = self.policy.fleet.limits.max_subscribers_per_channel;
        if self.directory.subscriber_count(&key) >= max
            && !self.directory.subscribers(&key).any(|s| s == session)
        {
            return Err(Refusal::plain(
                ErrorCode::LimitExceeded,
                format!(
                    "the channel has {max} subscribers on this node (max_subscribers_per_channel)"
                ),
            ));
        }
        self.directory.subscribe(&key, session);
        let mut actions = self.plane.set_local_interest(&key, true, now);
        actions.push(Action::ChannelChanged(key));
        self.apply(actions);
        Ok(())
    }

    /// A session unsubscribes; it gets no more media of the channel.
    pub fn unsubscribe(&mut self, session: u64, now: Instant) -> Result<(), Refusal> {
        let key = self.session_key(session)?;
        self.drop_subscriber(&key, session, now);
        Ok(())
    }

    fn drop_subscriber(&mut self, key: &ChannelKey, session: u64, now: Instant) {
        if !self.directory.unsubscribe(key, session) {
            return;
        }
        let interested = self.directory.subscriber_count(key) > 0;
        let mut actions = self.plane.set_local_interest(key, interested, now);
        actions.push(Action::ChannelChanged(key.clone()));
        self.apply(actions);
    }

    /// A session ended: its tracks and subscription go away, its queues
    /// close. Returns its entry.
    pub fn remove_session(&mut self, session: u64, now: Instant) -> Option<SessionEntry> {
        let key = self.session_key(session).ok()?;
        let gone = self.directory.withdraw_all(&key, session);
        if !gone.is_empty() {
            self.record_withdrawn(&key, session, gone);
            self.local_tracks_changed(&key, now);
        }
        self.drop_subscriber(&key, session, now);
        let entry = self.sessions.remove(&session)?;
        self.release_channel(&key);
        entry.receiver.datagrams.close();
        self.directory.forget_if_unused(&key);
        Some(entry)
    }

    /// Closes every session with `code` and `message`, with redirect
    /// targets for each client (drain); returns how many.
    pub fn close_all_sessions(&self, code: ErrorCode, message: &str) -> usize {
        for session in self.sessions.values() {
            let targets = redirect_targets(
                &self.policy,
                &session.app,
                session.client_region.as_ref(),
                &self.me,
            );
            let mut frame = ErrorFrame::new(code, message);
            frame.redirect = super::admission::targets_to_wire(&targets);
            session.control.send(Outbound::Close(frame));
        }
        self.sessions.len()
    }

    // ----- mesh peers --------------------------------------------------------

    /// A mesh link to `peer` is up. A previous connection to it is replaced.
    pub fn peer_up(&mut self, peer: NodeId, entry: PeerEntry, now: Instant) {
        let rtt = entry.control.rtt().as_micros() as u64;
        if let Some(old) = self.peers.insert(peer.clone(), entry) {
            old.receiver.datagrams.close();
        }
        let actions = self.plane.peer_up(peer, rtt, now);
        self.apply(actions);
    }

    /// The mesh link to `peer` on connection `connection_id` is gone; a late
    /// notification from a replaced connection is ignored.
    pub fn peer_down(&mut self, peer: &NodeId, connection_id: usize, now: Instant) {
        if self
            .peers
            .get(peer)
            .is_none_or(|p| p.control.connection_id() != connection_id)
        {
            return;
        }
        if let Some(old) = self.peers.remove(peer) {
            old.receiver.datagrams.close();
        }
        let actions = self.plane.peer_down(peer, now);
        self.apply(actions);
    }

    /// Connected peers.
    pub fn peers(&self) -> impl Iterator<Item = (&NodeId, &PeerEntry)> {
        self.peers.iter()
    }

    /// A control message from a connected peer.
    pub fn peer_msg(&mut self, peer: &NodeId, msg: PeerMsg, now: Instant) {
        let actions = self.plane.on_peer_msg(peer, msg, now);
        self.apply(actions);
    }

    /// Timer work due at `now`: measured RTTs, subscription refresh and
    /// expiry, retries of failed routes.
    pub fn tick(&mut self, now: Instant) {
        let rtts: Vec<(NodeId, u64)> = self
            .peers
            .iter()
            .map(|(p, e)| (p.clone(), e.control.rtt().as_micros() as u64))
            .collect();
        for (peer, rtt) in rtts {
            self.plane.peer_rtt(&peer, rtt);
        }
        let actions = self.plane.tick(now);
        self.apply(actions);
    }

    // ----- reload -------------------------------------------------------------

    /// Puts a new policy in force: routes are recomputed, and sessions that
    /// the new policy no longer allows here are revoked (`GEOFENCE_REVOKED`,
    /// with redirect targets when the app may no longer use this node).
    /// When this returns, no route of a revoked session remains.
    pub fn set_policy(&mut self, policy: Arc<Policy>, now: Instant) -> PolicyApplied {
        let before = self.rerouted;
        self.policy = Arc::clone(&policy);
        let actions = self.plane.set_policy(Arc::clone(&policy), now);
        self.apply(actions);
        let mut revoked = Vec::new();
        for (id, session) in &self.sessions {
            let node_allowed = policy.node_allowed(&session.app, &self.me);
            let reason = if !node_allowed {
                format!(
                    "app {} is no longer allowed on node {}",
                    session.app, self.me
                )
            } else if !client_still_allowed(&policy, session) {
                format!(
                    "app {} no longer admits clients from this country",
                    session.app
                )
            } else {
                continue;
            };
            let mut frame = ErrorFrame::new(ErrorCode::GeofenceRevoked, reason.clone());
            if !node_allowed {
                let targets = redirect_targets(
                    &policy,
                    &session.app,
                    session.client_region.as_ref(),
                    &self.me,
                );
                frame.redirect = super::admission::targets_to_wire(&targets);
            }
            session.control.send(Outbound::Close(frame));
            revoked.push((*id, session.app.clone(), reason));
        }
        for (id, app, reason) in &revoked {
            self.events.push(CoreEvent::Decision {
                app: app.clone(),
                session: Some(*id),
                decision: GeofenceDecision::Revoked {
                    reason: format!("policy reload: {reason}"),
                },
            });
            self.remove_session(*id, now);
        }
        PolicyApplied {
            revoked_sessions: revoked.len() as u64,
            rerouted: self.rerouted - before,
        }
    }

    /// Forgets every peer, session and route, closing their queues so that
    /// their writers end and release the connections (node stop).
    pub fn clear(&mut self) {
        for (_, peer) in std::mem::take(&mut self.peers) {
            peer.receiver.datagrams.close();
        }
        for (_, session) in self.sessions.drain() {
            session.receiver.datagrams.close();
        }
        self.channel_sessions.clear();
        self.app_channels.clear();
        self.directory.clear();
        self.routes.clear();
    }

    // ----- plane actions ------------------------------------------------------

    fn apply(&mut self, actions: Vec<Action>) {
        let mut changed = BTreeSet::new();
        for action in actions {
            match action {
                Action::Send { peer, msg } => self.send_to_peer(&peer, msg),
                Action::ChannelChanged(key) => {
                    changed.insert(key);
                }
                Action::Decision {
                    key,
                    origin,
                    outcome,
                } => {
                    if matches!(outcome, RouteOutcome::Chosen(_)) {
                        self.rerouted += 1;
                    }
                    self.events.push(CoreEvent::Route {
                        key,
                        origin,
                        outcome,
                    });
                }
                Action::Violation { peer, app, what } => {
                    self.events.push(CoreEvent::Violation { peer, app, what });
                }
            }
        }
        // Reachability changes with the live topology: every subscribed
        // channel's state may have changed.
        let version = self.plane.topology_version();
        if version != self.reachability_version {
            self.reachability_version = version;
            changed.extend(self.directory.subscribed_channels());
        }
        for key in changed {
            self.rebuild(&key);
            self.notify_subscribers(&key);
        }
    }

    fn send_to_peer(&self, peer: &NodeId, msg: PeerMsg) {
        let Some(entry) = self.peers.get(peer) else {
            return;
        };
        if !entry.control.send(Outbound::Frame(Frame::from(msg))) {
            entry
                .control
                .abort(ErrorCode::LimitExceeded, "mesh control queue full");
        }
    }

    /// Rebuilds the fast path of one channel from the plane's forwarding.
    fn rebuild(&self, key: &ChannelKey) {
        let tables = Tables {
            sessions: &self.sessions,
            peers: &self.peers,
        };
        let fresh = build_channel_routes(
            &self.me,
            &self.plane.tracks(key),
            &self.plane.forwarding(key),
            ChannelView {
                directory: &self.directory,
                key,
            },
            &tables,
            &self.counters,
        );
        self.routes.replace_channel(key, fresh);
    }

    /// Tells each local subscriber of a channel which tracks appeared or
    /// went away, and the state of its media paths.
    fn notify_subscribers(&mut self, key: &ChannelKey) {
        let visible = self.plane.tracks(key);
        let state = self.path_state(key, &visible);
        for (session, frames) in self.directory.updates(key, &visible, &state) {
            let Some(entry) = self.sessions.get(&session) else {
                continue;
            };
            for frame in frames {
                if !entry.control.send(Outbound::Frame(frame)) {
                    entry.control.send(Outbound::Close(ErrorFrame::new(
                        ErrorCode::LimitExceeded,
                        "control stream not read",
                    )));
                    break;
                }
            }
        }
    }

    /// What local subscribers of `key` are told: unavailable while an
    /// origin of the channel's tracks cannot be reached (or, before any
    /// track is visible, any allowed node: its publishers could not be
    /// heard); active with the origins whose media path is established once
    /// every visible origin's is.
    fn path_state(&self, key: &ChannelKey, visible: &[(NodeId, TrackInfo)]) -> PathState {
        let origins: BTreeSet<NodeId> = visible.iter().map(|(o, _)| o.clone()).collect();
        let detail: Vec<String> = self
            .plane
            .reachability(key)
            .unreachable
            .iter()
            .filter(|(n, _)| origins.is_empty() || origins.contains(n))
            .map(|(n, r)| format!("{n} ({r})"))
            .collect();
        if !detail.is_empty() {
            return PathState::Unavailable {
                message: format!("no allowed route to: {}", detail.join("; ")),
            };
        }
        if origins.is_empty() {
            return PathState::Pending;
        }
        let established = self.plane.established(key);
        if origins.iter().all(|o| established.contains(o)) {
            PathState::Active { origins }
        } else {
            PathState::Pending
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

fn metadata_kind(kind: crate::wire::TrackKind) -> crate::metadata::TrackKind {
    match kind {
        crate::wire::TrackKind::Audio => crate::metadata::TrackKind::Audio,
        crate::wire::TrackKind::Video => crate::metadata::TrackKind::Video,
        crate::wire::TrackKind::Data => crate::metadata::TrackKind::Data,
    }
}

#[cfg(test)]
mod tests;
