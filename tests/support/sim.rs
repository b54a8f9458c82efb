//! A deterministic simulated network of relay nodes, in the style of
//! quinn-proto's test `Pair`: one real [`NodeCore`] per node (the relay's
//! plane, channel directory and route table, exactly as `serve` runs them),
//! simulated time, an in-order queue of in-flight mesh messages per directed
//! link, and no sockets, tokio or quinn.
//!
//! [`Mesh`] drives the cores as the relay's drivers do: it calls
//! `peer_up`/`peer_down` on both ends when a link changes, carries every
//! control frame a core writes to a peer over the link after the link's
//! one-way latency (decoded back with the real frame conversion), and ticks
//! every live node whose `poll_timeout` has passed, checking every
//! [`TICK_MS`]. Clients are real sessions of the cores (one publisher and
//! one subscriber session per node and channel). It records every message
//! it delivered, with the policy in force when it was sent, so tests can
//! prove that an app's control data never reached a disallowed node.
//!
//! Media goes through the real fast path ([`Mesh::media`]): a datagram
//! enters the origin's route table from its publisher session, every copy a
//! route table queues for a peer is handed to that peer's route table, and a
//! subscriber session is served when a copy lands in its queue.
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

use std::sync::Mutex;

use georelay::config::Fleet;
use georelay::error::ErrorCode;
use georelay::ids::{AppId, NodeId};
use georelay::relay::core::{Control, CoreEvent, NodeCore, PeerEntry, SessionEntry};
use georelay::relay::fanout::{DatagramQueue, DropCounters, MessageQueue, Queued};
use georelay::relay::plane::{ChannelKey, Forwarding, PeerMsg, Plane, RouteOutcome};
use georelay::relay::policy::Policy;
use georelay::relay::routes::{AppCounterSet, Forwarded, Receiver, RouteTable};
use georelay::routing::{AllowedRegions, Topology};
use georelay::wire::stream::Outbound;
use georelay::wire::{Announce, Frame, MediaHeader, TrackKind};

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
    msg.app()
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

/// The relay track key of a test's track number `track` in channel `key`.
/// Keys index a node's route table whatever the channel (the relay draws
/// them at random), so the harness keeps each channel's numbers apart.
pub fn track_key(key: &ChannelKey, track: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.0.as_str().bytes().chain([0]).chain(key.1.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    ((hash & 0xff_ffff_ffff) << 16) | (track & 0xffff)
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
    pub outcome: RouteOutcome,
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

/// A session of a simulated client: its control handle (which records what
/// the core sends it) and its media queues.
#[derive(Debug)]
struct SimSession {
    id: u64,
    control: Arc<SimControl>,
    datagrams: Arc<DatagramQueue>,
    /// The message queue's receiving end, held so the queue stays open.
    _messages: tokio::sync::mpsc::Receiver<Queued>,
}

/// What one node's clients do in one channel: a publisher session with
/// its tracks, and whether a subscriber session is there.
#[derive(Debug, Default)]
struct ChannelClients {
    publisher: Option<SimSession>,
    tracks: BTreeSet<u64>,
    subscriber: Option<SimSession>,
}

/// A live node: its core and route table, its clients, and the handles
/// and media queues of its peer links.
struct SimNode {
    core: NodeCore,
    routes: Arc<RouteTable>,
    drops: Arc<DropCounters>,
    clients: BTreeMap<ChannelKey, ChannelClients>,
    links: BTreeMap<NodeId, SimLink>,
}

/// This node's end of a live link: what its core writes to the peer.
struct SimLink {
    control: Arc<SimControl>,
    datagrams: Arc<DatagramQueue>,
    _messages: tokio::sync::mpsc::Receiver<Queued>,
}

/// A [`Control`] that records what the core sends instead of writing it to
/// a connection: the harness carries peer frames over the simulated link
/// and keeps session frames for tests to read.
#[derive(Debug)]
pub struct SimControl {
    id: usize,
    rtt: std::time::Duration,
    sent: Mutex<Vec<Outbound>>,
    frames: Mutex<Vec<Frame>>,
    aborted: Mutex<Option<ErrorCode>>,
}

impl SimControl {
    fn new(id: usize, rtt: std::time::Duration) -> Self {
        Self {
            id,
            rtt,
            sent: Mutex::new(Vec::new()),
            frames: Mutex::new(Vec::new()),
            aborted: Mutex::new(None),
        }
    }

    /// What was queued since the last call.
    fn take(&self) -> Vec<Outbound> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every frame ever queued (sessions).
    fn frames(&self) -> Vec<Frame> {
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Control for SimControl {
    fn send(&self, out: Outbound) -> bool {
        if let Outbound::Frame(frame) = &out {
            self.frames
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(frame.clone());
        }
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(out);
        true
    }

    fn abort(&self, code: ErrorCode, _reason: &str) {
        *self.aborted.lock().unwrap_or_else(|e| e.into_inner()) = Some(code);
    }

    fn connection_id(&self) -> usize {
        self.id
    }

    fn rtt(&self) -> std::time::Duration {
        self.rtt
    }
}

/// Media queues as a receiver of a core's route table sees them.
fn queues(drops: &Arc<DropCounters>) -> (Receiver, tokio::sync::mpsc::Receiver<Queued>) {
    let datagrams = Arc::new(DatagramQueue::new(1024, Arc::clone(drops)));
    let (messages, rx) = MessageQueue::new(64, Arc::clone(drops));
    (
        Receiver {
            datagrams,
            messages,
        },
        rx,
    )
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

/// N relay cores on simulated links: see the module docs.
pub struct Mesh {
    now_ms: u64,
    next_tick_ms: u64,
    /// The monotonic instant of `START_MS`: cores see `base + (now - START)`.
    base: Instant,
    /// Per node, how far its wall clock is off the simulated time (ms; it
    /// steps when a test says so). Cores read it only when they start.
    wall_offset_ms: BTreeMap<NodeId, i64>,
    latency: bool,
    policies: Vec<Arc<Policy>>,
    nodes: BTreeMap<NodeId, Option<SimNode>>,
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
    decisions: Vec<Decision>,
    last_activity_ms: u64,
    next_connection: usize,
}

impl Mesh {
    /// A mesh of every node of the config text, all alive, every link down,
    /// with one-way latency `rtt_ms / 2` per link.
    pub fn new(toml_text: &str) -> Self {
        let policy = policy_from_toml(toml_text);
        let base = georelay::clock::monotonic_now();
        let configured = policy
            .fleet
            .links
            .iter()
            .map(|link| (undirected(&link.a, &link.b), u64::from(link.rtt_ms)))
            .collect();
        let ids: Vec<NodeId> = policy.fleet.nodes.keys().cloned().collect();
        let mut mesh = Self {
            now_ms: START_MS,
            next_tick_ms: START_MS + TICK_MS,
            base,
            wall_offset_ms: BTreeMap::new(),
            latency: true,
            policies: vec![policy],
            nodes: BTreeMap::new(),
            configured,
            cut: BTreeSet::new(),
            connected: BTreeSet::new(),
            queues: BTreeMap::new(),
            clients: BTreeMap::new(),
            delivered: Vec::new(),
            lost_in_flight: 0,
            decisions: Vec::new(),
            last_activity_ms: START_MS,
            next_connection: 1,
        };
        for id in ids {
            let node = mesh.start_node(&id);
            mesh.nodes.insert(id, Some(node));
        }
        mesh
    }

    fn start_node(&self, id: &NodeId) -> SimNode {
        let drops = Arc::new(DropCounters::default());
        let routes = Arc::new(RouteTable::new(Arc::clone(&drops)));
        let core = NodeCore::new(
            id.clone(),
            Arc::clone(self.policy()),
            Arc::clone(&routes),
            Arc::new(AppCounterSet::default()),
            self.instant(),
            self.wall_ms(id),
        );
        SimNode {
            core,
            routes,
            drops,
            clients: BTreeMap::new(),
            links: BTreeMap::new(),
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
        self.nodes.keys().cloned().collect()
    }

    /// Every configured link (`a < b`).
    pub fn links(&self) -> Vec<Link> {
        self.configured.keys().cloned().collect()
    }

    /// A live node's core; panics for a dead or unknown node.
    pub fn core(&self, id: &str) -> &NodeCore {
        match self.nodes.get(id) {
            Some(Some(node)) => &node.core,
            Some(None) => panic!("node {id} is dead"),
            None => panic!("no node {id}"),
        }
    }

    /// A live node's plane; panics for a dead or unknown node.
    pub fn plane(&self, id: &str) -> &Plane {
        self.core(id).plane()
    }

    /// The control frames the subscriber session of `key` on `id` received
    /// so far (`TRACK_ADDED`, `SUBSCRIPTION_STATE`, ...), oldest first.
    pub fn subscriber_frames(&self, id: &str, key: &ChannelKey) -> Vec<Frame> {
        let Some(Some(node)) = self.nodes.get(id) else {
            return Vec::new();
        };
        node.clients
            .get(key)
            .and_then(|c| c.subscriber.as_ref())
            .map(|s| s.control.frames())
            .unwrap_or_default()
    }

    /// Whether the node is alive.
    pub fn is_alive(&self, id: &str) -> bool {
        matches!(self.nodes.get(id), Some(Some(_)))
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
        self.nodes
            .values()
            .flatten()
            .map(|n| n.core.plane().violations())
            .sum()
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
        match self.nodes.get(id) {
            Some(Some(node)) => node.core.plane().forwarding(key),
            _ => BTreeMap::new(),
        }
    }

    /// Sends one datagram of `origin`'s first local track through the real
    /// route tables (none unless a local publisher at `origin` has tracks):
    /// see [`Media`]. Every queue is drained before and after, so calls do
    /// not see each other's packets.
    pub fn media(&self, key: &ChannelKey, origin: &str) -> Media {
        let origin = node(origin);
        self.drain_all_queues();
        let mut media = Media::default();
        let Some(Some(at_origin)) = self.nodes.get(&origin) else {
            return media;
        };
        let publisher = at_origin.clients.get(key).and_then(|c| {
            let session = c.publisher.as_ref()?;
            Some((session.id, *c.tracks.iter().next()?))
        });
        if let Some((session, track)) = publisher {
            let datagram = MediaHeader {
                track,
                seq: 1,
                timestamp_us: 1,
            }
            .datagram(b"frame");
            at_origin.routes.client_datagram(session, track, datagram);
            self.carry_media(&mut media);
        }
        self.walk_tables(key, &origin, &mut media);
        self.drain_all_queues();
        media
    }

    /// Hands every datagram queued for a peer to that peer's route table
    /// until no copy is left (bounded: a forwarding loop would never end),
    /// and records which subscriber sessions were served.
    fn carry_media(&self, media: &mut Media) {
        const MAX_COPIES: usize = 10_000;
        let mut copies = 0;
        loop {
            let mut moved = false;
            for (id, sim) in self
                .nodes
                .iter()
                .filter_map(|(id, n)| Some((id, n.as_ref()?)))
            {
                for (peer, link) in &sim.links {
                    while let Some((datagram, _)) = link.datagrams.try_pop() {
                        moved = true;
                        copies += 1;
                        *media
                            .link_copies
                            .entry((id.clone(), peer.clone()))
                            .or_default() += 1;
                        let accepted = self
                            .nodes
                            .get(peer)
                            .and_then(Option::as_ref)
                            .filter(|_| self.connected.contains(&undirected(id, peer)))
                            .map(|n| n.routes.peer_datagram(id, datagram.clone()));
                        if accepted == Some(Forwarded::Yes) {
                            *media.received.entry(peer.clone()).or_default() += 1;
                        } else {
                            media.rejected.push((id.clone(), peer.clone()));
                        }
                    }
                }
            }
            if !moved {
                break;
            }
            if copies > MAX_COPIES {
                media.loops.push(vec![node("unbounded-forwarding")]);
                break;
            }
        }
        for (id, sim) in self
            .nodes
            .iter()
            .filter_map(|(id, n)| Some((id, n.as_ref()?)))
        {
            for clients in sim.clients.values() {
                if let Some(subscriber) = &clients.subscriber {
                    let mut got = false;
                    while subscriber.datagrams.try_pop().is_some() {
                        got = true;
                    }
                    if got {
                        media.delivered_local.insert(id.clone());
                    }
                }
            }
        }
    }

    /// Loops and stranded nodes, from the planes' forwarding tables.
    fn walk_tables(&self, key: &ChannelKey, origin: &NodeId, media: &mut Media) {
        let tables: BTreeMap<NodeId, Forwarding> = self
            .nodes
            .keys()
            .filter_map(|id| {
                self.forwarding(id, key)
                    .remove(origin)
                    .map(|entry| (id.clone(), entry))
            })
            .collect();
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
    }

    fn drain_all_queues(&self) {
        for sim in self.nodes.values().flatten() {
            for link in sim.links.values() {
                while link.datagrams.try_pop().is_some() {}
            }
            for clients in sim.clients.values() {
                for session in [&clients.publisher, &clients.subscriber]
                    .into_iter()
                    .flatten()
                {
                    while session.datagrams.try_pop().is_some() {}
                }
            }
        }
    }

    /// Drops counted by a node's route table, by reason label.
    pub fn drops(&self, id: &str, reason: georelay::relay::fanout::DropReason) -> u64 {
        match self.nodes.get(id) {
            Some(Some(sim)) => sim.drops.get(reason),
            _ => 0,
        }
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

    /// Kills a node: its core is gone, its links close and its neighbours
    /// get `peer_down`. Its clients' state is kept for [`Mesh::restart`].
    pub fn kill(&mut self, id: &str) {
        let id = node(id);
        let links: Vec<Link> = self
            .connected
            .iter()
            .filter(|(a, b)| a == &id || b == &id)
            .cloned()
            .collect();
        if let Some(slot) = self.nodes.get_mut(&id) {
            *slot = None;
        }
        for link in links {
            self.disconnect(&link);
        }
    }

    /// Restarts a dead node with a fresh core under the current policy
    /// (its wall clock read now), re-establishes its links that are not
    /// cut, and re-applies its clients' publications and subscriptions
    /// (they reconnect).
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
        let fresh = self.start_node(&id);
        self.nodes.insert(id.clone(), Some(fresh));
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
            self.apply_tracks(&id, key, tracks);
        }
        for key in &clients.subscribed {
            self.apply_interest(&id, key, true);
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
        self.apply_tracks(&id, key, tracks);
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
        self.apply_interest(&id, key, interested);
    }

    /// Opens a client session on `id` (a real core session).
    fn open_session(&mut self, id: &NodeId, key: &ChannelKey, publish: bool) -> Option<SimSession> {
        self.next_connection += 1;
        let control = Arc::new(SimControl::new(
            self.next_connection,
            std::time::Duration::ZERO,
        ));
        let sim = self.nodes.get_mut(id)?.as_mut()?;
        let (receiver, rx) = queues(&sim.drops);
        let datagrams = Arc::clone(&receiver.datagrams);
        let entry = SessionEntry {
            app: key.0.clone(),
            channel: key.1.clone(),
            user: if publish { "publisher" } else { "subscriber" }.to_string(),
            can_publish: publish,
            client_region: None,
            client_country: None,
            control: control.clone(),
            receiver,
        };
        let session = sim.core.add_session(entry, usize::MAX).ok()?;
        Some(SimSession {
            id: session,
            control,
            datagrams,
            _messages: rx,
        })
    }

    /// Makes the publisher session of `key` on `id` own exactly `tracks`.
    fn apply_tracks(&mut self, id: &NodeId, key: &ChannelKey, tracks: &[u64]) {
        if !self.is_alive(id.as_str()) {
            return;
        }
        let has_publisher = self
            .sim(id)
            .and_then(|s| s.clients.get(key))
            .is_some_and(|c| c.publisher.is_some());
        if !has_publisher && !tracks.is_empty() {
            let Some(session) = self.open_session(id, key, true) else {
                return;
            };
            if let Some(sim) = self.sim_mut(id) {
                sim.clients.entry(key.clone()).or_default().publisher = Some(session);
            }
        }
        let now = self.instant();
        let wanted: BTreeSet<u64> = tracks.iter().map(|t| track_key(key, *t)).collect();
        let Some(sim) = self.sim_mut(id) else {
            return;
        };
        let clients = sim.clients.entry(key.clone()).or_default();
        let Some(session) = clients.publisher.as_ref().map(|s| s.id) else {
            return;
        };
        let gone: Vec<u64> = clients.tracks.difference(&wanted).copied().collect();
        let new: Vec<u64> = wanted.difference(&clients.tracks).copied().collect();
        for track in gone {
            let _ = sim.core.unannounce(session, track, now);
            clients.tracks.remove(&track);
        }
        for track in new {
            let announce = Announce {
                track_id: track,
                kind: TrackKind::Video,
                e2ee: false,
                name: format!("camera-{track}"),
            };
            if sim
                .core
                .announce(session, &announce, usize::MAX, || track, now)
                .is_ok()
            {
                clients.tracks.insert(track);
            }
        }
        self.flush(id);
    }

    /// Opens or closes the subscriber session of `key` on `id`.
    fn apply_interest(&mut self, id: &NodeId, key: &ChannelKey, interested: bool) {
        if !self.is_alive(id.as_str()) {
            return;
        }
        let now = self.instant();
        if interested {
            let has = self
                .sim(id)
                .and_then(|s| s.clients.get(key))
                .is_some_and(|c| c.subscriber.is_some());
            if has {
                return;
            }
            let Some(session) = self.open_session(id, key, false) else {
                return;
            };
            let Some(sim) = self.sim_mut(id) else {
                return;
            };
            let _ = sim.core.subscribe(session.id, now);
            sim.clients.entry(key.clone()).or_default().subscriber = Some(session);
        } else {
            let Some(sim) = self.sim_mut(id) else {
                return;
            };
            let Some(session) = sim.clients.get_mut(key).and_then(|c| c.subscriber.take()) else {
                return;
            };
            sim.core.remove_session(session.id, now);
        }
        self.flush(id);
    }

    /// Reloads every live node, at the same instant, with a new config
    /// (same nodes and links; apps may change). The cores revoke client
    /// sessions on nodes no longer allowed for their app; the harness
    /// forgets those clients.
    pub fn set_policy(&mut self, toml_text: &str) {
        let policy = policy_from_toml(toml_text);
        self.policies.push(Arc::clone(&policy));
        for (id, clients) in &mut self.clients {
            clients
                .published
                .retain(|key, _| policy.node_allowed(&key.0, id));
            clients
                .subscribed
                .retain(|key| policy.node_allowed(&key.0, id));
        }
        let now = self.instant();
        for id in self.nodes() {
            let Some(sim) = self.sim_mut(&id) else {
                continue;
            };
            sim.core.set_policy(Arc::clone(&policy), now);
            // Revoked sessions are gone from the core: forget their handles.
            let core = &sim.core;
            for clients in sim.clients.values_mut() {
                if clients
                    .publisher
                    .as_ref()
                    .is_some_and(|s| core.session(s.id).is_none())
                {
                    clients.publisher = None;
                    clients.tracks.clear();
                }
                if clients
                    .subscriber
                    .as_ref()
                    .is_some_and(|s| core.session(s.id).is_none())
                {
                    clients.subscriber = None;
                }
            }
            self.flush(&id);
        }
    }

    // ----- time -----------------------------------------------------------

    /// The monotonic instant the cores see now.
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
    /// the core follows, does not move.
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

    /// Ticks every live node whose `poll_timeout` passed; returns how many
    /// messages they sent.
    fn tick(&mut self) -> usize {
        self.now_ms = self.now_ms.max(self.next_tick_ms);
        self.next_tick_ms += TICK_MS;
        let now = self.instant();
        let mut sent = 0;
        for id in self.nodes() {
            let Some(sim) = self.sim_mut(&id) else {
                continue;
            };
            if sim.core.poll_timeout() <= now {
                sim.core.tick(now);
                sent += self.flush(&id);
            }
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
        let now = self.instant();
        if let Some(sim) = self.sim_mut(&to) {
            sim.core.peer_msg(&from, flight.msg, now);
            self.flush(&to);
        }
    }

    // ----- plumbing -------------------------------------------------------

    fn sim(&self, id: &NodeId) -> Option<&SimNode> {
        self.nodes.get(id)?.as_ref()
    }

    fn sim_mut(&mut self, id: &NodeId) -> Option<&mut SimNode> {
        self.nodes.get_mut(id)?.as_mut()
    }

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
        let rtt = Duration::from_millis(self.configured.get(link).copied().unwrap_or(0));
        self.next_connection += 1;
        let connection = self.next_connection;
        let now = self.instant();
        for (me, peer) in [(a, b), (b, a)] {
            let Some(sim) = self.sim_mut(me) else {
                continue;
            };
            let control = Arc::new(SimControl::new(connection, rtt));
            let (receiver, rx) = queues(&sim.drops);
            sim.links.insert(
                peer.clone(),
                SimLink {
                    control: Arc::clone(&control),
                    datagrams: Arc::clone(&receiver.datagrams),
                    _messages: rx,
                },
            );
            sim.core
                .peer_up(peer.clone(), PeerEntry { control, receiver }, now);
            self.flush(me);
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
        let now = self.instant();
        for (me, peer) in [(a, b), (b, a)] {
            let Some(sim) = self.sim_mut(me) else {
                continue;
            };
            let Some(gone) = sim.links.remove(peer) else {
                continue;
            };
            // Whatever the core queued on the dead connection is lost.
            gone.control.take();
            sim.core.peer_down(peer, gone.control.connection_id(), now);
            self.flush(me);
        }
    }

    /// Carries out what a node's core produced: the frames it queued for
    /// peers go on the links (decoded back into mesh messages), its events
    /// are recorded. Returns how many messages it sent.
    fn flush(&mut self, id: &NodeId) -> usize {
        let Some(sim) = self.sim_mut(id) else {
            return 0;
        };
        let events = sim.core.take_events();
        let mut outgoing = Vec::new();
        for (peer, link) in &sim.links {
            for out in link.control.take() {
                if let Outbound::Frame(frame) = out {
                    let msg = PeerMsg::from_frame(frame)
                        .unwrap_or_else(|| panic!("{id} wrote a non-mesh frame to {peer}"));
                    outgoing.push((peer.clone(), msg));
                }
            }
        }
        for clients in sim.clients.values() {
            for session in [&clients.publisher, &clients.subscriber]
                .into_iter()
                .flatten()
            {
                session.control.take();
            }
        }
        for event in events {
            if let CoreEvent::Route {
                key,
                origin,
                outcome,
            } = event
            {
                self.decisions.push(Decision {
                    at_ms: self.now_ms,
                    node: id.clone(),
                    key,
                    origin,
                    outcome,
                });
            }
        }
        let sent = outgoing.len();
        for (peer, msg) in outgoing {
            self.send(id, peer, msg);
        }
        sent
    }

    fn send(&mut self, from: &NodeId, to: NodeId, msg: PeerMsg) {
        let link = undirected(from, &to);
        if !self.connected.contains(&link) {
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
