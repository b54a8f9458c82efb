//! The fleet graph: nodes with their regions, undirected links with a cost and
//! a live up/down state, and an app's set of allowed regions.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{App, Fleet};
use crate::ids::{NodeId, RegionId};

/// The live state of one undirected link, stored once per direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkState {
    /// The cost used for path selection: the configured `rtt_ms`, or a
    /// measured RTT that replaced it.
    pub(crate) cost_ms: u32,
    /// Whether the link is usable right now. Links start up.
    pub(crate) up: bool,
}

/// Nodes with their regions and undirected links with costs and live state.
///
/// Built once from the fleet configuration ([`Topology::from_fleet`]) and then
/// updated by the mesh as links go down, come back or measure a new RTT. All
/// queries are pure functions of this state; iteration orders are by node id,
/// so every answer is deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    regions: BTreeMap<NodeId, RegionId>,
    adjacency: BTreeMap<NodeId, BTreeMap<NodeId, LinkState>>,
}

impl Topology {
    /// Builds a topology from `(node, region)` pairs and `(a, b, cost_ms)`
    /// links. Every link starts up.
    ///
    /// The config loader has already rejected bad input; for other callers
    /// the rules are: a link to itself or to a node that is not listed is
    /// ignored, and a repeated link (in either direction) replaces the earlier
    /// one. A node listed twice keeps its last region.
    pub fn new(
        nodes: impl IntoIterator<Item = (NodeId, RegionId)>,
        links: impl IntoIterator<Item = (NodeId, NodeId, u32)>,
    ) -> Self {
        let regions: BTreeMap<NodeId, RegionId> = nodes.into_iter().collect();
        let mut adjacency: BTreeMap<NodeId, BTreeMap<NodeId, LinkState>> = regions
            .keys()
            .map(|node| (node.clone(), BTreeMap::new()))
            .collect();
        for (a, b, cost_ms) in links {
            if a == b || !regions.contains_key(&a) || !regions.contains_key(&b) {
                continue;
            }
            let state = LinkState { cost_ms, up: true };
            adjacency
                .entry(a.clone())
                .or_default()
                .insert(b.clone(), state);
            adjacency.entry(b).or_default().insert(a, state);
        }
        Self { regions, adjacency }
    }

    /// The fleet's nodes and `[[links]]` (cost = configured `rtt_ms`), every
    /// link up.
    pub fn from_fleet(fleet: &Fleet) -> Self {
        Self::new(
            fleet
                .nodes
                .values()
                .map(|node| (node.id.clone(), node.region.clone())),
            fleet
                .links
                .iter()
                .map(|link| (link.a.clone(), link.b.clone(), link.rtt_ms)),
        )
    }

    /// Sets a link up or down. Returns whether the state changed; `false` also
    /// when no such link exists.
    pub fn set_link_up(&mut self, a: &NodeId, b: &NodeId, up: bool) -> bool {
        let changed = match self.link_mut(a, b) {
            Some(state) if state.up != up => {
                state.up = up;
                true
            }
            _ => false,
        };
        if changed {
            if let Some(reverse) = self.link_mut(b, a) {
                reverse.up = up;
            }
        }
        changed
    }

    /// Replaces a link's cost, e.g. with a measured RTT. Unknown links are
    /// ignored.
    pub fn set_link_cost(&mut self, a: &NodeId, b: &NodeId, cost_ms: u32) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(state) = self.link_mut(x, y) {
                state.cost_ms = cost_ms;
            }
        }
    }

    /// The region a node belongs to; `None` for an unknown node.
    pub fn region_of(&self, node: &NodeId) -> Option<&RegionId> {
        self.regions.get(node)
    }

    /// Whether the node is part of this topology.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.regions.contains_key(node)
    }

    /// Every node with its region, ordered by node id.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeId, &RegionId)> {
        self.regions.iter()
    }

    /// The nodes of one region, ordered by node id.
    pub fn nodes_in<'a>(&'a self, region: &'a RegionId) -> impl Iterator<Item = &'a NodeId> {
        self.regions
            .iter()
            .filter(move |(_, r)| *r == region)
            .map(|(node, _)| node)
    }

    /// A node's neighbours with the link cost and whether the link is up,
    /// ordered by neighbour id. Empty for an unknown node.
    pub fn neighbours(&self, node: &NodeId) -> impl Iterator<Item = (&NodeId, u32, bool)> {
        self.adjacency
            .get(node)
            .into_iter()
            .flat_map(|links| links.iter())
            .map(|(peer, state)| (peer, state.cost_ms, state.up))
    }

    /// Every link once, as `(a, b, cost_ms, up)` with `a < b`, in order.
    pub fn links(&self) -> impl Iterator<Item = (&NodeId, &NodeId, u32, bool)> {
        self.adjacency.iter().flat_map(|(a, links)| {
            links
                .iter()
                .filter(move |(b, _)| a < *b)
                .map(move |(b, state)| (a, b, state.cost_ms, state.up))
        })
    }

    /// Whether a link joins `a` and `b` and is up.
    pub fn link_is_up(&self, a: &NodeId, b: &NodeId) -> bool {
        self.link(a, b).is_some_and(|link| link.up)
    }

    /// The state of the link between `a` and `b`, if there is one.
    pub(crate) fn link(&self, a: &NodeId, b: &NodeId) -> Option<LinkState> {
        self.adjacency.get(a)?.get(b).copied()
    }

    fn link_mut(&mut self, a: &NodeId, b: &NodeId) -> Option<&mut LinkState> {
        self.adjacency.get_mut(a)?.get_mut(b)
    }
}

/// The regions an app's media and control metadata may touch.
///
/// Built from an explicit set ([`From<BTreeSet<RegionId>>`]), or
/// [`AllowedRegions::all`] for the unrestricted view used to explain what a
/// policy excluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedRegions(Option<BTreeSet<RegionId>>);

impl AllowedRegions {
    /// Every region is allowed.
    pub fn all() -> Self {
        Self(None)
    }

    /// The regions `app` allows in `fleet` (a deny list resolved against the
    /// configured regions).
    pub fn for_app(fleet: &Fleet, app: &App) -> Self {
        Self::from(fleet.allowed_regions(app))
    }

    /// Whether media may touch nodes of `region`.
    pub fn allows(&self, region: &RegionId) -> bool {
        self.0.as_ref().is_none_or(|set| set.contains(region))
    }

    /// Whether media may touch `node`; `false` for a node the topology does
    /// not know.
    pub fn allows_node(&self, topology: &Topology, node: &NodeId) -> bool {
        topology
            .region_of(node)
            .is_some_and(|region| self.allows(region))
    }

    /// The explicit set, or `None` when every region is allowed.
    pub fn regions(&self) -> Option<&BTreeSet<RegionId>> {
        self.0.as_ref()
    }
}

impl From<BTreeSet<RegionId>> for AllowedRegions {
    fn from(regions: BTreeSet<RegionId>) -> Self {
        Self(Some(regions))
    }
}

impl FromIterator<RegionId> for AllowedRegions {
    fn from_iter<I: IntoIterator<Item = RegionId>>(iter: I) -> Self {
        Self(Some(iter.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::from(id)
    }

    fn small() -> Topology {
        Topology::new(
            [
                (node("a"), RegionId::from("r1")),
                (node("b"), RegionId::from("r1")),
                (node("c"), RegionId::from("r2")),
            ],
            [
                (node("a"), node("b"), 5),
                (node("b"), node("c"), 7),
                (node("a"), node("a"), 1),
                (node("a"), node("zz"), 1),
                (node("c"), node("b"), 9),
            ],
        )
    }

    #[test]
    fn self_links_and_unknown_endpoints_are_ignored_and_repeats_replace() {
        let topology = small();
        let links: Vec<_> = topology
            .links()
            .map(|(a, b, cost, up)| (a.as_str(), b.as_str(), cost, up))
            .collect();
        assert_eq!(links, [("a", "b", 5, true), ("b", "c", 9, true)]);
        assert!(!topology.contains(&node("zz")));
        assert_eq!(topology.neighbours(&node("zz")).count(), 0);
    }

    #[test]
    fn link_state_changes_are_symmetric_and_reported() {
        let mut topology = small();
        assert!(topology.set_link_up(&node("b"), &node("a"), false));
        assert!(!topology.set_link_up(&node("a"), &node("b"), false));
        assert!(!topology.link_is_up(&node("b"), &node("a")));
        assert!(topology.link_is_up(&node("c"), &node("b")));
        assert!(!topology.link_is_up(&node("a"), &node("c")));
        assert_eq!(
            topology.link(&node("a"), &node("b")).map(|l| l.up),
            Some(false)
        );
        assert!(!topology.set_link_up(&node("a"), &node("c"), false));
        assert!(topology.set_link_up(&node("a"), &node("b"), true));
        topology.set_link_cost(&node("c"), &node("b"), 3);
        let from_b: Vec<_> = topology
            .neighbours(&node("b"))
            .map(|(peer, cost, up)| (peer.as_str(), cost, up))
            .collect();
        assert_eq!(from_b, [("a", 5, true), ("c", 3, true)]);
        assert_eq!(
            topology.link(&node("c"), &node("b")).map(|l| l.cost_ms),
            Some(3)
        );
    }

    #[test]
    fn allowed_regions_filter_nodes() {
        let topology = small();
        let only_r2: AllowedRegions = [RegionId::from("r2")].into_iter().collect();
        assert!(only_r2.allows_node(&topology, &node("c")));
        assert!(!only_r2.allows_node(&topology, &node("a")));
        assert!(!only_r2.allows_node(&topology, &node("zz")));
        assert!(AllowedRegions::all().allows_node(&topology, &node("a")));
        assert!(!AllowedRegions::all().allows_node(&topology, &node("zz")));
        let r1 = RegionId::from("r1");
        let in_r1: Vec<_> = topology.nodes_in(&r1).map(NodeId::as_str).collect();
        assert_eq!(in_r1, ["a", "b"]);
    }
}
