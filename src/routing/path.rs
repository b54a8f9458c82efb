//! Geofenced cheapest-path selection (Dijkstra with a total, deterministic
//! order on paths), next hops for the mesh, and the typed "no route" answer.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt;

use crate::error::ErrorCode;
use crate::ids::{NodeId, RegionId};

use super::topology::{AllowedRegions, Topology};

/// A path between two nodes through allowed nodes and up links.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The nodes in order: `path[0]` is the origin, the last is the
    /// destination. From a node to itself the path is that one node.
    pub path: Vec<NodeId>,
    /// The sum of the link costs along the path.
    pub cost_ms: u64,
}

impl Route {
    /// The number of links the path uses.
    pub fn hops(&self) -> usize {
        self.path.len().saturating_sub(1)
    }
}

/// Why there is no allowed path: the answer behind `ROUTE_UNAVAILABLE`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NoRoute {
    /// What is missing.
    pub reason: NoRouteReason,
}

impl NoRoute {
    /// The stable code this maps to on the wire, in logs and in the CLI.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::RouteUnavailable
    }
}

impl From<NoRouteReason> for NoRoute {
    fn from(reason: NoRouteReason) -> Self {
        Self { reason }
    }
}

/// The reason a route is unavailable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoRouteReason {
    /// The node is not part of the fleet.
    UnknownNode(NodeId),
    /// An endpoint itself lies in a region the app does not allow.
    EndpointNotAllowed {
        /// The endpoint.
        node: NodeId,
        /// Its region, which the app's policy excludes.
        region: RegionId,
    },
    /// Both endpoints are allowed, but no path of allowed nodes and up links
    /// joins them.
    Disconnected {
        /// The origin.
        from: NodeId,
        /// The destination.
        to: NodeId,
        /// What separates them.
        cause: DisconnectCause,
    },
}

/// What separates two allowed nodes, most actionable first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectCause {
    /// An allowed path exists in the configuration, but links on it are down
    /// now. Lists the down links of the cheapest such path (each as
    /// `(a, b)` in path order); the route comes back when they do.
    LinksDown(Vec<(NodeId, NodeId)>),
    /// The nodes are connected (over up links) only through regions the app
    /// does not allow. `via` is the cheapest such unrestricted path and
    /// `regions` the disallowed regions it crosses.
    DisallowedTransit {
        /// The disallowed regions on `via`.
        regions: BTreeSet<RegionId>,
        /// The cheapest path over up links, ignoring the policy.
        via: Route,
    },
    /// No path joins them at all, whatever the policy: the fleet has no such
    /// links, or all candidates are down and cross disallowed regions.
    NotConnected,
}

impl fmt::Display for NoRouteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoRouteReason::UnknownNode(node) => write!(f, "unknown node {node}"),
            NoRouteReason::EndpointNotAllowed { node, region } => {
                write!(
                    f,
                    "{node} is in region {region}, which this app does not allow"
                )
            }
            NoRouteReason::Disconnected { from, to, cause } => match cause {
                DisconnectCause::LinksDown(links) => {
                    write!(
                        f,
                        "no allowed path from {from} to {to} while links are down: "
                    )?;
                    write_list(f, links.iter().map(|(a, b)| format!("{a} <-> {b}")))
                }
                DisconnectCause::DisallowedTransit { regions, via } => {
                    write!(
                        f,
                        "{from} and {to} are connected only through regions not allowed for this app: "
                    )?;
                    write_list(f, regions.iter())?;
                    write!(f, " (cheapest such path: ")?;
                    write_path(f, via)?;
                    write!(f, ", {} ms)", via.cost_ms)
                }
                DisconnectCause::NotConnected => {
                    write!(f, "no path joins {from} and {to} in the fleet right now")
                }
            },
        }
    }
}

fn write_list<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    items: impl IntoIterator<Item = T>,
) -> fmt::Result {
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

fn write_path(f: &mut fmt::Formatter<'_>, route: &Route) -> fmt::Result {
    for (index, node) in route.path.iter().enumerate() {
        if index > 0 {
            f.write_str(" -> ")?;
        }
        write!(f, "{node}")?;
    }
    Ok(())
}

/// Which links a search may use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Links {
    /// Only links that are up: the live view.
    Up,
    /// Every configured link: used to explain a failure.
    All,
}

/// A candidate path, ordered by the tie-break rule: cost, then hop count,
/// then the node ids along the path compared lexicographically.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    cost_ms: u64,
    hops: usize,
    path: Vec<NodeId>,
}

impl Topology {
    /// The cheapest path from `from` to `to` that touches only nodes in
    /// allowed regions and uses only links that are up.
    ///
    /// Ties are broken by fewer hops, then by the sequence of node ids
    /// compared lexicographically from `from`, so the answer is a function
    /// of the inputs alone. The order is a total order on simple paths that
    /// grows when a path is extended, so Dijkstra finds its exact minimum,
    /// and every suffix of a chosen path is itself the chosen path from its
    /// first node ([`Topology::next_hop`] relies on this).
    pub fn cheapest_path(
        &self,
        allowed: &AllowedRegions,
        from: &NodeId,
        to: &NodeId,
    ) -> Result<Route, NoRoute> {
        for endpoint in [from, to] {
            let Some(region) = self.region_of(endpoint) else {
                return Err(NoRouteReason::UnknownNode(endpoint.clone()).into());
            };
            if !allowed.allows(region) {
                return Err(NoRouteReason::EndpointNotAllowed {
                    node: endpoint.clone(),
                    region: region.clone(),
                }
                .into());
            }
        }
        if let Some(route) = self.search(allowed, Links::Up, from, to) {
            return Ok(route);
        }
        let cause = self.disconnect_cause(allowed, from, to);
        Err(NoRouteReason::Disconnected {
            from: from.clone(),
            to: to.clone(),
            cause,
        }
        .into())
    }

    /// The neighbour of `from` to send `to`'s traffic to: the second node of
    /// [`Topology::cheapest_path`]. From a node to itself it is that node
    /// (deliver locally).
    ///
    /// Following next hops node by node gives exactly the cheapest path from
    /// the first node, as long as every node sees the same topology: the
    /// path order is suffix-consistent, so hop-by-hop forwarding cannot loop.
    pub fn next_hop(
        &self,
        allowed: &AllowedRegions,
        from: &NodeId,
        to: &NodeId,
    ) -> Result<NodeId, NoRoute> {
        let route = self.cheapest_path(allowed, from, to)?;
        Ok(route.path.get(1).unwrap_or(from).clone())
    }

    fn disconnect_cause(
        &self,
        allowed: &AllowedRegions,
        from: &NodeId,
        to: &NodeId,
    ) -> DisconnectCause {
        if let Some(configured) = self.search(allowed, Links::All, from, to) {
            let down = configured
                .path
                .windows(2)
                .filter_map(|pair| match pair {
                    [a, b] if self.link(a, b).is_some_and(|link| !link.up) => {
                        Some((a.clone(), b.clone()))
                    }
                    _ => None,
                })
                .collect();
            return DisconnectCause::LinksDown(down);
        }
        match self.search(&AllowedRegions::all(), Links::Up, from, to) {
            Some(via) => DisconnectCause::DisallowedTransit {
                regions: via
                    .path
                    .iter()
                    .filter_map(|node| self.region_of(node))
                    .filter(|region| !allowed.allows(region))
                    .cloned()
                    .collect(),
                via,
            },
            None => DisconnectCause::NotConnected,
        }
    }

    /// Dijkstra over allowed nodes from `from` to `to` under the
    /// [`Candidate`] order. Each node is settled once and pushes each of its
    /// links once, so the heap never holds more than twice the link count.
    fn search(
        &self,
        allowed: &AllowedRegions,
        links: Links,
        from: &NodeId,
        to: &NodeId,
    ) -> Option<Route> {
        if !allowed.allows_node(self, from) || !allowed.allows_node(self, to) {
            return None;
        }
        let mut settled: BTreeSet<NodeId> = BTreeSet::new();
        let mut frontier = BinaryHeap::new();
        frontier.push(Reverse(Candidate {
            cost_ms: 0,
            hops: 0,
            path: vec![from.clone()],
        }));
        while let Some(Reverse(candidate)) = frontier.pop() {
            let Some(node) = candidate.path.last().cloned() else {
                continue;
            };
            if !settled.insert(node.clone()) {
                continue;
            }
            if &node == to {
                return Some(Route {
                    path: candidate.path,
                    cost_ms: candidate.cost_ms,
                });
            }
            for (peer, cost_ms, up) in self.neighbours(&node) {
                let usable = up || links == Links::All;
                if !usable || settled.contains(peer) || !allowed.allows_node(self, peer) {
                    continue;
                }
                let mut path = candidate.path.clone();
                path.push(peer.clone());
                frontier.push(Reverse(Candidate {
                    cost_ms: candidate.cost_ms + u64::from(cost_ms),
                    hops: candidate.hops + 1,
                    path,
                }));
            }
        }
        None
    }
}
