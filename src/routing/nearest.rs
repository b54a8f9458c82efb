//! Redirect targets: the allowed nodes nearest to a client.
//!
//! The heuristic is documented in the `routing` module docs ("Redirect
//! targets").

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::ids::{NodeId, RegionId};

use super::topology::{AllowedRegions, Topology};

impl Topology {
    /// Up to `limit` allowed nodes, nearest to the client first (the exact
    /// order is in the [`crate::routing`] docs). `client_region` is the
    /// region of the client's geolocated country, `None` when unknown;
    /// `entry` is the node the client connected to.
    pub fn nearest_allowed(
        &self,
        allowed: &AllowedRegions,
        client_region: Option<&RegionId>,
        entry: &NodeId,
        limit: usize,
    ) -> Vec<NodeId> {
        let home: Vec<NodeId> = client_region
            .map(|region| self.nodes_in(region).cloned().collect())
            .unwrap_or_default();
        let origin = if !home.is_empty() {
            home
        } else if self.contains(entry) {
            vec![entry.clone()]
        } else {
            Vec::new()
        };
        let distances = self.distances_from(&origin);
        let mut candidates: Vec<(bool, Option<u64>, &NodeId)> = self
            .nodes()
            .filter(|(_, region)| allowed.allows(region))
            .map(|(node, region)| {
                let away_from_home = client_region != Some(region);
                (away_from_home, distances.get(node).copied(), node)
            })
            .collect();
        candidates
            .sort_by_key(|&(away, distance, node)| (away, distance.is_none(), distance, node));
        candidates
            .into_iter()
            .take(limit)
            .map(|(_, _, node)| node.clone())
            .collect()
    }

    /// Multi-source Dijkstra over up links, every node passable: the cost of
    /// the cheapest path from any origin node to each reachable node.
    fn distances_from(&self, origin: &[NodeId]) -> BTreeMap<NodeId, u64> {
        let mut settled: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut frontier: BinaryHeap<Reverse<(u64, NodeId)>> = origin
            .iter()
            .map(|node| Reverse((0, node.clone())))
            .collect();
        while let Some(Reverse((distance, node))) = frontier.pop() {
            if settled.contains_key(&node) {
                continue;
            }
            for (peer, cost_ms, up) in self.neighbours(&node) {
                if up && !settled.contains_key(peer) {
                    frontier.push(Reverse((distance + u64::from(cost_ms), peer.clone())));
                }
            }
            settled.insert(node, distance);
        }
        settled
    }
}
