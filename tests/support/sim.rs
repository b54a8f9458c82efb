//! A deterministic simulated network for the mesh control plane, in the
//! style of quinn-proto's test `Pair`: one [`Plane`] per node, simulated
//! time, an in-order queue of in-flight [`PeerMsg`]s per directed link, and
//! no sockets, tokio or quinn.
//!
//! [`Mesh`] drives the planes exactly as the relay's mesh driver does: it
//! calls `peer_up`/`peer_down` on both ends when a link changes, delivers
//! every `Action::Send` over the link after the link's one-way latency, and
//! calls `tick` on every live node every [`TICK_MS`]. It records every
//! message it delivered, with the policy in force when it was sent, so tests
//! can prove that an app's control data never reached a disallowed node.
//!
//! Media is modelled from the planes' forwarding tables ([`Mesh::media`]): a
//! packet starts at its origin, is copied to each downstream peer, and a node
//! accepts it only from its upstream for that origin, as the relay does.
//!
//! ```ignore
//! let mut mesh = Mesh::new(&toml_text);
//! mesh.all_links_up();
//! mesh.publish("eu-fra-1", &key, &[1]);
//! mesh.subscribe("eu-ams-1", &key);
//! mesh.run_until_quiet();
//! assert!(mesh.media(&key, "eu-fra-1").reaches("eu-ams-1"));
//! ```
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use georelay::config::Fleet;
use georelay::ids::{AppId, NodeId};
use georelay::relay::plane::{Action, ChannelKey, Forwarding, PeerMsg, Plane};
use georelay::relay::policy::Policy;
use georelay::routing::{AllowedRegions, Topology};
use georelay::wire::{TrackInfo, TrackKind};

/// How often the simulated drivers wake up: each node whose
/// `Plane::poll_timeout` has passed is ticked then.
pub const TICK_MS: u64 = 250;
/// The simulated wall clock starts here (a Unix time in ms, as the relay's
/// clock reports), so link-state sequence numbers look like production ones.
pub const START_MS: u64 = 1_700_000_000_000;
/// The most events (deliveries and ticks) one `run_until_quiet` may take.
const MAX_EVENTS: usize = 200_000;
/// The most simulated time one `run_until_quiet` may take.
const MAX_QUIET_WAIT_MS: u64 = 120_000;
/// Consecutive ticks without a message that count as quiet: a failed
/// upstream retries after 250 ms, so a retry is due within two ticks.
const QUIET_TICKS: u32 = 3;

/// A node id from a string.
pub fn node(id: &str) -> NodeId {
    NodeId::from(id)
}

/// An (app, channel) key.
pub fn channel(app: &str, name: &str) -> ChannelKey {
    (AppId::from(app), name.to_string())
}

/// The app a control message concerns; `None` for link state.
pub fn app_of(msg: &PeerMsg) -> Option<&AppId> {
    match msg {
        PeerMsg::LinkState { .. } => None,
        PeerMsg::Announce { key, .. }
        | PeerMsg::Subscribe { key, .. }
        | PeerMsg::Unsubscribe { key, .. }
        | PeerMsg::SubscribeError { key, .. } => Some(&key.0),
    }
}

/// Whether a receiver under `policy` must refuse the delivery: the app is
/// not allowed at the receiver, or the announced origin or the subscribing
/// peer is not allowed for it (the plane's receive-side checks).
pub fn must_refuse(policy: &Policy, delivery: &Delivery) -> bool {
    let Some(app) = app_of(&delivery.msg) else {
        return false;
    };
    let not_allowed = |n: &NodeId| !policy.node_allowed(app, n);
    not_allowed(&delivery.to)
        || match &delivery.msg {
            PeerMsg::Announce { origin, .. } => not_allowed(origin),
            PeerMsg::Subscribe { .. } => not_allowed(&delivery.from),
            _ => false,
        }
}

/// Builds a policy from config text, panicking with every diagnostic.
pub fn policy_from_toml(text: &str) -> Arc<Policy> {
    let fleet = match Fleet::parse(text, Path::new("sim-regions.toml")) {
        Ok(fleet) => fleet,
        Err(errors) => panic!("test fleet is invalid:\n{errors}"),
    };
    match Policy::from_fleet(fleet) {
        Ok(policy) => Arc::new(policy),
        Err(err) => panic!("test policy is invalid: {err}"),
    }
}

/// One delivered control message.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Simulated time it was sent.
    pub sent_ms: u64,
    /// Simulated time it was delivered.
    pub at_ms: u64,
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The message.
    pub msg: PeerMsg,
    /// Index into [`Mesh::policies`] of the policy in force when it was sent.
    pub epoch: usize,
    /// Index of the policy in force when it was delivered: newer than
    /// `epoch` when a reload happened while it was in flight.
    pub delivered_epoch: usize,
}

/// A route decision a plane reported.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Simulated time.
    pub at_ms: u64,
    /// The deciding node.
    pub node: NodeId,
    /// The channel.
    pub key: ChannelKey,
    /// The origin the route leads to.
    pub origin: NodeId,
    /// The chosen path or the reason there is none.
    pub outcome: Result<Vec<NodeId>, String>,
}

/// Why a run did not become quiet.
#[derive(Clone, Debug)]
pub struct NotConverged {
    /// Events processed.
    pub events: usize,
    /// Simulated time spent.
    pub elapsed_ms: u64,
    /// The last few deliveries, for diagnosis.
    pub recent: Vec<String>,
}

impl std::fmt::Display for NotConverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "mesh did not converge after {} events and {} ms; last deliveries:",
            self.events, self.elapsed_ms
        )?;
        for line in &self.recent {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// How one origin's track travels through the mesh right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Media {
    /// Nodes that accepted the packet (from their upstream), with the number
    /// of copies each accepted. The origin is not listed.
    pub received: BTreeMap<NodeId, u32>,
    /// Nodes whose local subscribers get the packet (the origin included
    /// when it has local interest).
    pub delivered_local: BTreeSet<NodeId>,
    /// Copies sent over each directed link.
    pub link_copies: BTreeMap<(NodeId, NodeId), u32>,
    /// Copies a node sent to a peer whose upstream is another node (the
    /// receiver drops them).
    pub rejected: Vec<(NodeId, NodeId)>,
    /// Nodes that hold an upstream for the origin whose upstream chain
    /// revisits a node: a forwarding loop.
    pub loops: Vec<Vec<NodeId>>,
    /// Nodes that hold an upstream for the origin but do not get the packet
    /// (the chain does not lead back to the origin).
    pub stranded: Vec<NodeId>,
}

impl Media {
    /// Whether local subscribers on `node` get the track.
    pub fn reaches(&self, node: &str) -> bool {
        self.delivered_local.contains(node)
    }

    /// Copies carried by the directed link `a -> b`.
    pub fn copies(&self, a: &str, b: &str) -> u32 {
        self.link_copies
            .get(&(NodeId::from(a), NodeId::from(b)))
            .copied()
            .unwrap_or(0)
    }

    /// The directed links that carry the track, as `a->b` strings.
    pub fn hops(&self) -> Vec<String> {
        self.link_copies
            .iter()
            .map(|((a, b), n)| format!("{a}->{b}x{n}"))
            .collect()
    }
}

struct Flight {
    at_ms: u64,
    sent_ms: u64,
    msg: PeerMsg,
    epoch: usize,
}

/// What a node's clients do, re-applied when the node restarts (its clients
/// reconnect to it).
#[derive(Clone, Debug, Default)]
struct Clients {
    published: BTreeMap<ChannelKey, Vec<u64>>,
    subscribed: BTreeSet<ChannelKey>,
}

type Link = (NodeId, NodeId);

fn undirected(a: &NodeId, b: &NodeId) -> Link {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

/// N planes on simulated links: see the module docs.
pub struct Mesh {
    now_ms: u64,
    /// The monotonic instant of `START_MS`: planes see `base + (now - START)`.
    base: Instant,
    /// Per node, how far its wall clock is off the simulated time (ms; it
    /// steps when a test says so). Planes read it only when they start.
    wall_offset_ms: BTreeMap<NodeId, i64>,
    next_tick_ms: u64,
    latency: bool,
    policies: Vec<Arc<Policy>>,
    planes: BTreeMap<NodeId, Option<Plane>>,
    /// Configured links (undirected, `a < b`) with their `rtt_ms`.
    configured: BTreeMap<Link, u64>,
    /// Links administratively cut by the test.
    cut: BTreeSet<Link>,
    /// Links whose connection is live (`peer_up` called on both ends).
    connected: BTreeSet<Link>,
    queues: BTreeMap<Link, VecDeque<Flight>>,
    clients: BTreeMap<NodeId, Clients>,
    delivered: Vec<Delivery>,
    lost_in_flight: usize,
    unsendable: Vec<(NodeId, NodeId, PeerMsg)>,
    decisions: Vec<Decision>,
    last_activity_ms: u64,
}

impl Mesh {
    /// A mesh of every node of the config text, all alive, every link down,
    /// with one-way latency `rtt_ms / 2` per link.
    pub fn new(toml_text: &str) -> Self {
        let policy = policy_from_toml(toml_text);
        let base = georelay::clock::monotonic_now();
        let planes = policy
            .fleet
            .nodes
            .keys()
            .map(|id| {
                (
                    id.clone(),
                    Some(Plane::new(id.clone(), Arc::clone(&policy), base, START_MS)),
                )
            })
            .collect();
        let configured = policy
            .fleet
            .links
            .iter()
            .map(|link| (undirected(&link.a, &link.b), u64::from(link.rtt_ms)))
            .collect();
        Self {
            now_ms: START_MS,
            base,
            wall_offset_ms: BTreeMap::new(),
            next_tick_ms: START_MS + TICK_MS,
            latency: true,
            policies: vec![policy],
            planes,
            configured,
            cut: BTreeSet::new(),
            connected: BTreeSet::new(),
            queues: BTreeMap::new(),
            clients: BTreeMap::new(),
            delivered: Vec::new(),
            lost_in_flight: 0,
            unsendable: Vec::new(),
            decisions: Vec::new(),
            last_activity_ms: START_MS,
        }
    }

    /// Delivers messages with no latency (each still in order per link).
    pub fn without_latency(mut self) -> Self {
        self.latency = false;
        self
    }

    // ----- observation ----------------------------------------------------

    /// The simulated time, in ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The policy in force.
    pub fn policy(&self) -> &Arc<Policy> {
        self.policies
            .last()
            .unwrap_or_else(|| unreachable!("a mesh always has a policy"))
    }

    /// Every policy the mesh ran under, oldest first ([`Delivery::epoch`]).
    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.policies
    }

    /// Every node id, ordered.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.planes.keys().cloned().collect()
    }

    /// Every configured link (`a < b`).
    pub fn links(&self) -> Vec<Link> {
        self.configured.keys().cloned().collect()
    }

    /// A live node's plane; panics for a dead or unknown node.
    pub fn plane(&self, id: &str) -> &Plane {
        match self.planes.get(id) {
            Some(Some(plane)) => plane,
            Some(None) => panic!("node {id} is dead"),
            None => panic!("no node {id}"),
        }
    }

    /// Whether the node is alive.
    pub fn is_alive(&self, id: &str) -> bool {
        matches!(self.planes.get(id), Some(Some(_)))
    }

    /// Whether the link's connection is live.
    pub fn is_connected(&self, a: &str, b: &str) -> bool {
        self.connected.contains(&undirected(&node(a), &node(b)))
    }

    /// Every message delivered so far.
    pub fn delivered(&self) -> &[Delivery] {
        &self.delivered
    }

    /// Messages that were in flight on a link when it went down.
    pub fn lost_in_flight(&self) -> usize {
        self.lost_in_flight
    }

    /// `Send` actions addressed to a peer without a live link.
    pub fn unsendable(&self) -> &[(NodeId, NodeId, PeerMsg)] {
        &self.unsendable
    }

    /// Every route decision reported.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// Delivered messages about `app` that were wrong to send under the
    /// policy in force when they were sent: the receiver was not allowed for
    /// the app, or the message announced a disallowed origin or carried a
    /// subscription from a disallowed node (see [`must_refuse`]).
    pub fn leaks(&self, app: &str) -> Vec<&Delivery> {
        self.delivered
            .iter()
            .filter(|d| app_of(&d.msg).is_some_and(|a| a.as_str() == app))
            .filter(|d| must_refuse(&self.policies[d.epoch], d))
            .collect()
    }

    /// Delivered messages that the receiver must refuse under the policy in
    /// force at delivery although the sender was right to send them (a
    /// reload happened while they were in flight). Receivers count such
    /// frames as violations and drop them.
    pub fn stale_deliveries(&self) -> Vec<&Delivery> {
        self.delivered
            .iter()
            .filter(|d| must_refuse(&self.policies[d.delivered_epoch], d))
            .filter(|d| !must_refuse(&self.policies[d.epoch], d))
            .collect()
    }

    /// Delivered messages about `app`, whoever received them.
    pub fn app_messages(&self, app: &str) -> Vec<&Delivery> {
        self.delivered
            .iter()
            .filter(|d| app_of(&d.msg).is_some_and(|a| a.as_str() == app))
            .collect()
    }

    /// Nodes that received any message about `app`.
    pub fn nodes_that_heard_of(&self, app: &str) -> BTreeSet<NodeId> {
        self.app_messages(app)
            .iter()
            .map(|d| d.to.clone())
            .collect()
    }

    /// The sum of every live plane's `violations()`.
    pub fn violations(&self) -> u64 {
        self.planes.values().flatten().map(Plane::violations).sum()
    }

    /// The ground truth: the configured topology with the live links up, as
    /// an omniscient observer sees it.
    pub fn true_topology(&self) -> Topology {
        let mut topology = Topology::from_fleet(&self.policy().fleet);
        for link in self.configured.keys() {
            topology.set_link_up(&link.0, &link.1, self.connected.contains(link));
        }
        topology
    }

    /// Whether the ground truth has a path from `a` to `b` through nodes
    /// allowed for `app`.
    pub fn allowed_path_exists(&self, app: &str, a: &str, b: &str) -> bool {
        let allowed = self
            .policy()
            .allowed(&AppId::from(app))
            .cloned()
            .unwrap_or_else(AllowedRegions::all);
        self.true_topology()
            .cheapest_path(&allowed, &node(a), &node(b))
            .is_ok()
    }

    /// A node's forwarding table for a channel; empty for a dead node.
    pub fn forwarding(&self, id: &NodeId, key: &ChannelKey) -> BTreeMap<NodeId, Forwarding> {
        match self.planes.get(id) {
            Some(Some(plane)) => plane.forwarding(key),
            _ => BTreeMap::new(),
        }
    }

    /// Walks the forwarding tables from `origin` for one packet of its track
    /// (none unless a local publisher at `origin` has tracks): see [`Media`].
    pub fn media(&self, key: &ChannelKey, origin: &str) -> Media {
        let origin = node(origin);
        let mut media = Media::default();
        let tables: BTreeMap<NodeId, Forwarding> = self
            .planes
            .keys()
            .filter_map(|id| {
                self.forwarding(id, key)
                    .remove(&origin)
                    .map(|entry| (id.clone(), entry))
            })
            .collect();
        // Packets exist only while a local publisher at the origin has tracks.
        let publishing = self.is_alive(origin.as_str())
            && self
                .plane(origin.as_str())
                .tracks(key)
                .iter()
                .any(|(at, _)| at == &origin);
        let mut queue = VecDeque::new();
        if publishing && tables.get(&origin).is_some_and(|f| f.upstream.is_none()) {
            queue.push_back(origin.clone());
        }
        let mut visited = BTreeSet::new();
        while let Some(at) = queue.pop_front() {
            if !visited.insert(at.clone()) {
                continue;
            }
            let Some(entry) = tables.get(&at) else {
                continue;
            };
            if entry.local {
                media.delivered_local.insert(at.clone());
            }
            for next in &entry.downstream {
                *media
                    .link_copies
                    .entry((at.clone(), next.clone()))
                    .or_default() += 1;
                let over_live_link = self.connected.contains(&undirected(&at, next));
                let accepts = tables
                    .get(next)
                    .is_some_and(|f| f.upstream.as_ref() == Some(&at));
                if over_live_link && accepts && next != &origin {
                    let copies = media.received.entry(next.clone()).or_default();
                    *copies += 1;
                    queue.push_back(next.clone());
                } else {
                    media.rejected.push((at.clone(), next.clone()));
                }
            }
        }
        for (id, entry) in &tables {
            if entry.upstream.is_none() {
                continue;
            }
            let mut chain = vec![id.clone()];
            let mut at = id.clone();
            while let Some(up) = tables.get(&at).and_then(|f| f.upstream.clone()) {
                if chain.contains(&up) {
                    chain.push(up);
                    media.loops.push(chain.clone());
                    break;
                }
                chain.push(up.clone());
                at = up;
            }
            if !media.received.contains_key(id) {
                media.stranded.push(id.clone());
            }
        }
        media
    }

    // ----- inputs ---------------------------------------------------------

    /// Brings every configured link up (both ends alive, not cut).
    pub fn all_links_up(&mut self) {
        for (a, b) in self.links() {
            self.link_up(a.as_str(), b.as_str());
        }
    }

    /// Restores a configured link: clears a cut and, when both ends are
    /// alive, establishes the connection (`peer_up` on both ends).
    pub fn link_up(&mut self, a: &str, b: &str) {
        let link = self.configured_link(a, b);
        self.cut.remove(&link);
        self.connect(&link);
    }

    /// Cuts a configured link: the connection closes, messages in flight on
    /// it are lost, and both ends get `peer_down`.
    pub fn link_down(&mut self, a: &str, b: &str) {
        let link = self.configured_link(a, b);
        self.cut.insert(link.clone());
        self.disconnect(&link);
    }

    /// Kills a node: its plane is gone, its links close and its neighbours
    /// get `peer_down`. Its clients' state is kept for [`Mesh::restart`].
    pub fn kill(&mut self, id: &str) {
        let id = node(id);
        let links: Vec<Link> = self
            .connected
            .iter()
            .filter(|(a, b)| a == &id || b == &id)
            .cloned()
            .collect();
        if let Some(slot) = self.planes.get_mut(&id) {
            *slot = None;
        }
        for link in links {
            self.disconnect(&link);
        }
    }

    /// Restarts a dead node with a fresh plane under the current policy,
    /// re-establishes its links that are not cut, and re-applies its
    /// clients' publications and subscriptions (they reconnect).
    pub fn restart(&mut self, id: &str) {
        self.restart_node(id, true);
    }

    /// Restarts a dead node like [`Mesh::restart`], but its clients went to
    /// other nodes: nothing is published or subscribed on it.
    pub fn restart_empty(&mut self, id: &str) {
        self.restart_node(id, false);
    }

    fn restart_node(&mut self, id: &str, clients_return: bool) {
        let id = node(id);
        if self.is_alive(id.as_str()) {
            return;
        }
        let plane = Plane::new(
            id.clone(),
            Arc::clone(self.policy()),
            self.instant(),
            self.wall_ms(&id),
        );
        self.planes.insert(id.clone(), Some(plane));
        let links: Vec<Link> = self
            .configured
            .keys()
            .filter(|(a, b)| a == &id || b == &id)
            .filter(|link| !self.cut.contains(*link))
            .cloned()
            .collect();
        for link in links {
            self.connect(&link);
        }
        if !clients_return {
            self.clients.remove(&id);
        }
        let clients = self.clients.get(&id).cloned().unwrap_or_default();
        for (key, tracks) in &clients.published {
            let actions = self.with_plane(&id, |plane, now| {
                plane.set_local_tracks(key, track_infos(tracks), now)
            });
            self.apply(&id, actions);
        }
        for key in &clients.subscribed {
            let actions =
                self.with_plane(&id, |plane, now| plane.set_local_interest(key, true, now));
            self.apply(&id, actions);
        }
    }

    /// Local publishers on `id` now have exactly `tracks` in the channel
    /// (empty: they left).
    pub fn publish(&mut self, id: &str, key: &ChannelKey, tracks: &[u64]) {
        let id = node(id);
        let clients = self.clients.entry(id.clone()).or_default();
        if tracks.is_empty() {
            clients.published.remove(key);
        } else {
            clients.published.insert(key.clone(), tracks.to_vec());
        }
        let actions = self.with_plane(&id, |plane, now| {
            plane.set_local_tracks(key, track_infos(tracks), now)
        });
        self.apply(&id, actions);
    }

    /// A local session on `id` subscribes to the channel.
    pub fn subscribe(&mut self, id: &str, key: &ChannelKey) {
        self.set_interest(id, key, true);
    }

    /// The last local subscriber on `id` leaves the channel.
    pub fn unsubscribe(&mut self, id: &str, key: &ChannelKey) {
        self.set_interest(id, key, false);
    }

    fn set_interest(&mut self, id: &str, key: &ChannelKey, interested: bool) {
        let id = node(id);
        let clients = self.clients.entry(id.clone()).or_default();
        if interested {
            clients.subscribed.insert(key.clone());
        } else {
            clients.subscribed.remove(key);
        }
        let actions = self.with_plane(&id, |plane, now| {
            plane.set_local_interest(key, interested, now)
        });
        self.apply(&id, actions);
    }

    /// Reloads every live node, at the same instant, with a new config
    /// (same nodes and links; apps may change). Client sessions on nodes no
    /// longer allowed for their app are revoked (forgotten by the harness;
    /// the plane forgets the channel itself).
    pub fn set_policy(&mut self, toml_text: &str) {
        let policy = policy_from_toml(toml_text);
        self.policies.push(Arc::clone(&policy));
        // Sessions on nodes no longer allowed for their app are revoked.
        for (id, clients) in &mut self.clients {
            clients
                .published
                .retain(|key, _| policy.node_allowed(&key.0, id));
            clients
                .subscribed
                .retain(|key| policy.node_allowed(&key.0, id));
        }
        for id in self.nodes() {
            let policy = Arc::clone(&policy);
            let actions = self.with_plane(&id, |plane, now| plane.set_policy(policy, now));
            self.apply(&id, actions);
        }
    }

    // ----- time -----------------------------------------------------------

    /// The monotonic instant the planes see now.
    pub fn instant(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms - START_MS)
    }

    /// Node `id`'s wall clock now (Unix ms).
    pub fn wall_ms(&self, id: &NodeId) -> u64 {
        let offset = self.wall_offset_ms.get(id).copied().unwrap_or(0);
        self.now_ms.saturating_add_signed(offset)
    }

    /// Steps node `id`'s wall clock by `by_ms` (negative: backwards), as an
    /// NTP correction or a VM migration would. Its monotonic clock, which
    /// the plane follows, does not move.
    pub fn step_wall_clock(&mut self, id: &str, by_ms: i64) {
        *self.wall_offset_ms.entry(node(id)).or_default() += by_ms;
    }

    /// Lets `ms` of simulated time pass: delivers what arrives and ticks.
    pub fn advance(&mut self, ms: u64) {
        let target = self.now_ms + ms;
        while let Some(at) = self.next_event_at() {
            if at > target {
                break;
            }
            self.step();
        }
        self.now_ms = target;
    }

    /// Runs until no message is in flight and [`QUIET_TICKS`] ticks in a row
    /// send nothing; returns the time of the last activity (a delivery or a
    /// sent message). Panics if the mesh does not become quiet within a
    /// bounded number of events.
    pub fn run_until_quiet(&mut self) -> u64 {
        match self.try_run_until_quiet() {
            Ok(at) => at,
            Err(err) => panic!("{err}"),
        }
    }

    /// [`Mesh::run_until_quiet`], returning an error instead of panicking.
    pub fn try_run_until_quiet(&mut self) -> Result<u64, NotConverged> {
        let start = self.now_ms;
        let mut quiet_ticks = 0;
        for events in 0..MAX_EVENTS {
            if self.now_ms - start > MAX_QUIET_WAIT_MS {
                return Err(self.not_converged(events, start));
            }
            let message_first = self
                .next_message_at()
                .is_some_and(|at| at <= self.next_tick_ms);
            if message_first {
                self.step();
                quiet_ticks = 0;
                continue;
            }
            if self.queues.values().all(VecDeque::is_empty) && quiet_ticks >= QUIET_TICKS {
                return Ok(self.last_activity_ms);
            }
            let sent = self.tick();
            if sent == 0 && self.queues.values().all(VecDeque::is_empty) {
                quiet_ticks += 1;
            } else {
                quiet_ticks = 0;
            }
        }
        Err(self.not_converged(MAX_EVENTS, start))
    }

    /// Processes events one at a time until `done` holds (checked before the
    /// first event and after each), or `max_ms` of simulated time passed.
    /// Returns the time `done` first held.
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Mesh) -> bool) -> Option<u64> {
        let deadline = self.now_ms + max_ms;
        for _ in 0..MAX_EVENTS {
            if done(self) {
                return Some(self.now_ms);
            }
            match self.next_event_at() {
                Some(at) if at <= deadline => self.step(),
                _ => return None,
            }
        }
        None
    }

    fn not_converged(&self, events: usize, start: u64) -> NotConverged {
        let recent = self
            .delivered
            .iter()
            .rev()
            .take(12)
            .map(|d| {
                format!(
                    "t+{} {} -> {}: {:?}",
                    d.at_ms - START_MS,
                    d.from,
                    d.to,
                    d.msg
                )
            })
            .collect();
        NotConverged {
            events,
            elapsed_ms: self.now_ms - start,
            recent,
        }
    }

    fn next_message_at(&self) -> Option<u64> {
        self.queues
            .values()
            .filter_map(|q| q.front().map(|f| f.at_ms))
            .min()
    }

    fn next_event_at(&self) -> Option<u64> {
        Some(
            self.next_message_at()
                .map_or(self.next_tick_ms, |at| at.min(self.next_tick_ms)),
        )
    }

    /// Processes the next event: the earliest delivery, or the tick if it
    /// comes first.
    fn step(&mut self) {
        match self.next_message_at() {
            Some(at) if at <= self.next_tick_ms => self.deliver_next(at),
            _ => {
                self.tick();
            }
        }
    }

    /// Ticks every live node; returns how many messages they sent.
    fn tick(&mut self) -> usize {
        self.now_ms = self.now_ms.max(self.next_tick_ms);
        self.next_tick_ms += TICK_MS;
        let mut sent = 0;
        for id in self.nodes() {
            let actions = self.with_plane(&id, |plane, now| {
                if plane.poll_timeout() <= now {
                    plane.tick(now)
                } else {
                    Vec::new()
                }
            });
            sent += actions
                .iter()
                .filter(|a| matches!(a, Action::Send { .. }))
                .count();
            self.apply(&id, actions);
        }
        sent
    }

    fn deliver_next(&mut self, at: u64) {
        let Some(link) = self
            .queues
            .iter()
            .find(|(_, q)| q.front().is_some_and(|f| f.at_ms == at))
            .map(|(link, _)| link.clone())
        else {
            return;
        };
        let Some(flight) = self.queues.get_mut(&link).and_then(VecDeque::pop_front) else {
            return;
        };
        self.now_ms = self.now_ms.max(at);
        self.last_activity_ms = self.now_ms;
        let (from, to) = link;
        self.delivered.push(Delivery {
            sent_ms: flight.sent_ms,
            at_ms: self.now_ms,
            from: from.clone(),
            to: to.clone(),
            msg: flight.msg.clone(),
            epoch: flight.epoch,
            delivered_epoch: self.policies.len() - 1,
        });
        let actions = self.with_plane(&to, |plane, now| plane.on_peer_msg(&from, flight.msg, now));
        self.apply(&to, actions);
    }

    // ----- plumbing -------------------------------------------------------

    fn configured_link(&self, a: &str, b: &str) -> Link {
        let link = undirected(&node(a), &node(b));
        assert!(
            self.configured.contains_key(&link),
            "{a} - {b} is not a configured link"
        );
        link
    }

    fn connect(&mut self, link: &Link) {
        let (a, b) = link;
        if self.cut.contains(link)
            || self.connected.contains(link)
            || !self.is_alive(a.as_str())
            || !self.is_alive(b.as_str())
        {
            return;
        }
        self.connected.insert(link.clone());
        let rtt_us = self.configured.get(link).copied().unwrap_or(0) * 1000;
        for (me, peer) in [(a, b), (b, a)] {
            let actions =
                self.with_plane(me, |plane, now| plane.peer_up(peer.clone(), rtt_us, now));
            self.apply(me, actions);
        }
    }

    fn disconnect(&mut self, link: &Link) {
        if !self.connected.remove(link) {
            return;
        }
        let (a, b) = link;
        for directed in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
            if let Some(queue) = self.queues.remove(&directed) {
                self.lost_in_flight += queue.len();
            }
        }
        for (me, peer) in [(a, b), (b, a)] {
            let actions = self.with_plane(me, |plane, now| plane.peer_down(peer, now));
            self.apply(me, actions);
        }
    }

    /// Runs `input` on a live node's plane; a dead node does nothing.
    fn with_plane(
        &mut self,
        id: &NodeId,
        input: impl FnOnce(&mut Plane, Instant) -> Vec<Action>,
    ) -> Vec<Action> {
        let now = self.instant();
        match self.planes.get_mut(id) {
            Some(Some(plane)) => input(plane, now),
            _ => Vec::new(),
        }
    }

    /// Carries out a node's actions: sends go on the link's queue.
    fn apply(&mut self, from: &NodeId, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { peer, msg } => self.send(from, peer, msg),
                Action::Decision {
                    key,
                    origin,
                    outcome,
                } => self.decisions.push(Decision {
                    at_ms: self.now_ms,
                    node: from.clone(),
                    key,
                    origin,
                    outcome,
                }),
                Action::ChannelChanged(_) => {}
            }
        }
    }

    fn send(&mut self, from: &NodeId, to: NodeId, msg: PeerMsg) {
        let link = undirected(from, &to);
        if !self.connected.contains(&link) {
            self.unsendable.push((from.clone(), to, msg));
            return;
        }
        self.last_activity_ms = self.now_ms;
        let one_way = if self.latency {
            self.configured.get(&link).copied().unwrap_or(0) / 2
        } else {
            0
        };
        let epoch = self.policies.len() - 1;
        let queue = self.queues.entry((from.clone(), to)).or_default();
        let at_ms = queue.back().map_or(self.now_ms + one_way, |last| {
            last.at_ms.max(self.now_ms + one_way)
        });
        queue.push_back(Flight {
            at_ms,
            sent_ms: self.now_ms,
            msg,
            epoch,
        });
    }
}

/// Video tracks with the given keys, as a local publisher announces them.
pub fn track_infos(tracks: &[u64]) -> BTreeMap<u64, TrackInfo> {
    tracks
        .iter()
        .map(|&track| {
            (
                track,
                TrackInfo {
                    track,
                    publisher: format!("user-{track}"),
                    kind: TrackKind::Video,
                    e2ee: false,
                    name: format!("camera-{track}"),
                },
            )
        })
        .collect()
}
