//! The media fast path of one node: the per-track route table, the
//! per-packet forwarding that reads it, and the rebuild of a channel's
//! routes from the plane's forwarding and the local channel directory.
//!
//! This is the only place a media packet is handled after its header was
//! parsed: [`RouteTable::client_datagram`], [`RouteTable::peer_datagram`]
//! and [`RouteTable::message`] look the track up (a read lock, never the
//! control mutex), check that the sender may send it, count it, and hand a
//! cheap `Bytes` clone to each receiver's outlet (straight into a client
//! connection's send buffer, or onto a mesh link's bounded queue).
//! Rebuilds happen on control events only ([`build_channel_routes`], then
//! [`RouteTable::replace_channel`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use bytes::{Bytes, BytesMut};

use crate::ids::{AppId, NodeId};
use crate::metadata::{Direction, TrafficKey, TrafficMeter, TrafficPeer};
use crate::wire::TrackInfo;

use super::directory::Directory;
use super::fanout::{
    AppCounters, DatagramQueue, DropCounters, DropReason, FlowCounters, MessageQueue,
};
use super::plane::{ChannelKey, Forwarding};

/// Where a receiver's media goes: its datagram and message queues.
#[derive(Clone, Debug)]
pub struct Receiver {
    /// Media datagrams to the receiver.
    pub datagrams: Arc<DatagramQueue>,
    /// Reliable messages to the receiver.
    pub messages: MessageQueue,
}

/// One receiver of a track and the flow its packets are counted against.
#[derive(Clone, Debug)]
pub struct Outlet {
    /// The receiver's queues.
    pub receiver: Receiver,
    /// What a packet sent to it counts against (out, to clients or to the
    /// peer).
    pub flow: Arc<FlowCounters>,
}

/// The fast path of one track at this node.
#[derive(Debug)]
pub struct TrackRoute {
    /// The app the track belongs to.
    pub app: AppId,
    /// What a packet of the track arriving here counts against (in, from
    /// clients or from the upstream peer).
    pub ingress: Arc<FlowCounters>,
    /// The local session that publishes it, if the track originates here.
    pub publisher: Option<u64>,
    /// The peer it must arrive from, if it originates elsewhere.
    pub upstream: Option<NodeId>,
    outlets: Vec<Outlet>,
}

impl TrackRoute {
    /// A route of `app` to `outlets`, accepted only from `publisher` (a
    /// local session) or `upstream` (a peer), counted in against `ingress`.
    pub fn new(
        app: AppId,
        ingress: Arc<FlowCounters>,
        publisher: Option<u64>,
        upstream: Option<NodeId>,
        outlets: Vec<Outlet>,
    ) -> Self {
        Self {
            app,
            ingress,
            publisher,
            upstream,
            outlets,
        }
    }

    /// Counts the datagram in and queues it for every receiver.
    pub fn forward_datagram(&self, datagram: Bytes) {
        self.ingress.count_in(datagram.len());
        for outlet in &self.outlets {
            outlet
                .receiver
                .datagrams
                .push(datagram.clone(), &outlet.flow);
        }
    }

    /// Counts a framed message in and queues it for every receiver.
    pub fn forward_message(&self, framed: Bytes) {
        self.ingress.count_in(framed.len());
        for outlet in &self.outlets {
            outlet.receiver.messages.push(framed.clone(), &outlet.flow);
        }
    }

    /// How many receivers the track has here.
    pub fn fanout(&self) -> usize {
        self.outlets.len()
    }

    /// Whether `queue` is one of the track's receivers.
    pub fn delivers_to(&self, queue: &Arc<DatagramQueue>) -> bool {
        self.outlets
            .iter()
            .any(|o| Arc::ptr_eq(&o.receiver.datagrams, queue))
    }
}

/// What happened to a packet on the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarded {
    /// Queued for every receiver of its track (possibly none).
    Yes,
    /// Dropped, for this reason (also counted in the node's drops).
    Dropped(DropReason),
}

/// Per-app packet and byte counters of a node, and the [`FlowCounters`]
/// of each (app, direction, peer), created on first use. With a
/// [`TrafficMeter`] (traffic records on), each flow also counts into the
/// meter's counter of its key. Keys come from the config (apps, node ids),
/// so the set is bounded by the config's size.
#[derive(Debug, Default)]
pub struct AppCounterSet {
    by_app: RwLock<BTreeMap<AppId, Arc<AppCounters>>>,
    flows: RwLock<HashMap<TrafficKey, Arc<FlowCounters>>>,
    meter: Option<Arc<TrafficMeter>>,
}

impl AppCounterSet {
    /// A set whose flows also count into `meter` (traffic records).
    pub fn with_meter(meter: Arc<TrafficMeter>) -> Self {
        Self {
            meter: Some(meter),
            ..Self::default()
        }
    }

    /// The traffic meter, when traffic records are on.
    pub fn meter(&self) -> Option<&Arc<TrafficMeter>> {
        self.meter.as_ref()
    }

    /// The counters of `app`'s media in `direction` with `peer`. Resolve it
    /// when a route is built and keep it; never per packet.
    pub fn flow(&self, app: &AppId, direction: Direction, peer: TrafficPeer) -> Arc<FlowCounters> {
        let key = TrafficKey {
            app: app.clone(),
            direction,
            peer,
        };
        if let Some(flow) = self
            .flows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Arc::clone(flow);
        }
        let app_counters = self.get(app);
        let mut flows = self.flows.write().unwrap_or_else(|e| e.into_inner());
        let traffic = self.meter.as_ref().map(|meter| meter.counter(key.clone()));
        Arc::clone(
            flows
                .entry(key)
                .or_insert_with(|| Arc::new(FlowCounters::new(app_counters, traffic))),
        )
    }

    /// The counters of `app`.
    pub fn get(&self, app: &AppId) -> Arc<AppCounters> {
        if let Some(c) = self
            .by_app
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
        {
            return Arc::clone(c);
        }
        let mut all = self.by_app.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(all.entry(app.clone()).or_default())
    }

    /// Every app's counters, by app.
    pub fn all(&self) -> Vec<(AppId, Arc<AppCounters>)> {
        self.by_app
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(app, c)| (app.clone(), Arc::clone(c)))
            .collect()
    }
}

/// The route table: track key → [`TrackRoute`], readable by many media
/// tasks at once, rewritten one channel at a time.
#[derive(Debug)]
pub struct RouteTable {
    routes: RwLock<HashMap<u64, Arc<TrackRoute>>>,
    /// The tracks each channel contributed, so a rebuild replaces them all.
    by_channel: std::sync::Mutex<HashMap<ChannelKey, Vec<u64>>>,
    drops: Arc<DropCounters>,
}

impl RouteTable {
    /// An empty table that counts drops in `drops`.
    pub fn new(drops: Arc<DropCounters>) -> Self {
        Self {
            routes: RwLock::new(HashMap::new()),
            by_channel: std::sync::Mutex::new(HashMap::new()),
            drops,
        }
    }

    /// The node's drop counters.
    pub fn drops(&self) -> &Arc<DropCounters> {
        &self.drops
    }

    /// The route of a track, if this node carries it.
    pub fn route(&self, track: u64) -> Option<Arc<TrackRoute>> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&track)
            .cloned()
    }

    /// How many tracks have a route here.
    pub fn len(&self) -> usize {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no track has a route here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn drop_packet(&self, reason: DropReason) -> Forwarded {
        self.drops.count(reason);
        Forwarded::Dropped(reason)
    }

    /// A datagram of `track` from local session `session`: forwarded only
    /// if that session publishes the track.
    pub fn client_datagram(&self, session: u64, track: u64, datagram: Bytes) -> Forwarded {
        match self.route(track) {
            Some(route) if route.publisher == Some(session) => {
                route.forward_datagram(datagram);
                Forwarded::Yes
            }
            _ => self.drop_packet(DropReason::UnknownTrack),
        }
    }

    /// A datagram from mesh peer `peer`: forwarded only if that peer is the
    /// track's upstream here.
    pub fn peer_datagram(&self, peer: &NodeId, datagram: Bytes) -> Forwarded {
        match crate::wire::MediaHeader::parse_track(&datagram) {
            Ok(track) => match self.route(track) {
                Some(route) if route.upstream.as_ref() == Some(peer) => {
                    route.forward_datagram(datagram);
                    Forwarded::Yes
                }
                _ => self.drop_packet(DropReason::UnknownTrack),
            },
            Err(_) => self.drop_packet(DropReason::Malformed),
        }
    }

    /// A reliable message of `track` from a local session or a peer.
    pub fn message(&self, from: Sender<'_>, track: u64, payload: &[u8]) -> Forwarded {
        let Some(route) = self.route(track) else {
            return self.drop_packet(DropReason::UnknownTrack);
        };
        let accepted = match from {
            Sender::Session(session) => route.publisher == Some(session),
            Sender::Peer(peer) => route.upstream.as_ref() == Some(peer),
        };
        if !accepted {
            return self.drop_packet(DropReason::UnknownTrack);
        }
        let mut framed = BytesMut::with_capacity(payload.len() + 16);
        crate::wire::encode_message(track, payload, &mut framed);
        route.forward_message(framed.freeze());
        Forwarded::Yes
    }

    /// Replaces every route of channel `key` with `fresh`.
    pub fn replace_channel(&self, key: &ChannelKey, fresh: Vec<(u64, Arc<TrackRoute>)>) {
        let mut by_channel = self.by_channel.lock().unwrap_or_else(|e| e.into_inner());
        let old = by_channel.remove(key).unwrap_or_default();
        let keys: Vec<u64> = fresh.iter().map(|(t, _)| *t).collect();
        {
            let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
            for track in old {
                routes.remove(&track);
            }
            routes.extend(fresh);
        }
        if !keys.is_empty() {
            by_channel.insert(key.clone(), keys);
        }
    }

    /// Forgets every route (node stop).
    pub fn clear(&self) {
        self.by_channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Who sent a reliable message.
#[derive(Clone, Copy, Debug)]
pub enum Sender<'a> {
    /// A local client session.
    Session(u64),
    /// A mesh peer.
    Peer(&'a NodeId),
}

/// What a route rebuild needs to know about this node's receivers.
pub trait Receivers {
    /// A local session's queues.
    fn session(&self, id: u64) -> Option<&Receiver>;
    /// A connected peer's queues.
    fn peer(&self, id: &NodeId) -> Option<&Receiver>;
}

/// The fresh routes of one channel at node `me`: one per visible track
/// with forwarding here, to the local subscribers (never the publisher
/// itself) when the channel has local interest, and to each downstream
/// peer, each counted against its flow in `counters`.
pub fn build_channel_routes(
    me: &NodeId,
    visible: &[(NodeId, TrackInfo)],
    forwarding: &BTreeMap<NodeId, Forwarding>,
    local: ChannelView<'_>,
    receivers: &impl Receivers,
    counters: &AppCounterSet,
) -> Vec<(u64, Arc<TrackRoute>)> {
    let app = &local.key.0;
    let mut to_clients: Option<Arc<FlowCounters>> = None;
    let mut fresh = Vec::new();
    for (origin, info) in visible {
        let Some(fwd) = forwarding.get(origin) else {
            continue;
        };
        let publisher = if origin == me {
            local.directory.owner(local.key, info.track)
        } else {
            None
        };
        let mut out = Vec::new();
        if fwd.local {
            for session in local.directory.subscribers(local.key) {
                if Some(session) == publisher {
                    continue;
                }
                if let Some(receiver) = receivers.session(session) {
                    out.push(Outlet {
                        receiver: receiver.clone(),
                        flow: Arc::clone(to_clients.get_or_insert_with(|| {
                            counters.flow(app, Direction::Out, TrafficPeer::Clients)
                        })),
                    });
                }
            }
        }
        for peer in &fwd.downstream {
            if let Some(receiver) = receivers.peer(peer) {
                out.push(Outlet {
                    receiver: receiver.clone(),
                    flow: counters.flow(app, Direction::Out, TrafficPeer::Node(peer.clone())),
                });
            }
        }
        let from = match &fwd.upstream {
            Some(upstream) if publisher.is_none() => TrafficPeer::Node(upstream.clone()),
            _ => TrafficPeer::Clients,
        };
        fresh.push((
            info.track,
            Arc::new(TrackRoute::new(
                app.clone(),
                counters.flow(app, Direction::In, from),
                publisher,
                fwd.upstream.clone(),
                out,
            )),
        ));
    }
    fresh
}

/// A channel of the local directory.
#[derive(Clone, Copy, Debug)]
pub struct ChannelView<'a> {
    /// The directory.
    pub directory: &'a Directory,
    /// The channel.
    pub key: &'a ChannelKey,
}

#[cfg(test)]
mod tests;
