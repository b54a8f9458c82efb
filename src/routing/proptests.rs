//! Property tests of the routing core on random small graphs, checked against
//! a brute-force enumeration of every simple path.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::{AllowedRegions, DisconnectCause, NoRouteReason, Topology};
use crate::ids::{NodeId, RegionId};

/// Node names deliberately not in index order, so that the lexicographic
/// tie-break is exercised independently of insertion order.
const NAMES: [&str; 7] = ["m", "c", "x", "a", "q", "f", "k"];

#[derive(Clone, Debug)]
struct Link {
    a: usize,
    b: usize,
    cost_ms: u32,
    up: bool,
}

#[derive(Clone, Debug)]
struct Case {
    regions: Vec<usize>,
    links: Vec<Link>,
    allowed_mask: u8,
    from: usize,
    to: usize,
}

impl Case {
    fn node(&self, index: usize) -> NodeId {
        NodeId::from(NAMES[index])
    }

    fn region(&self, index: usize) -> RegionId {
        RegionId::new(format!("r{}", self.regions[index]))
    }

    fn allowed(&self) -> AllowedRegions {
        (0..4)
            .filter(|r| self.allowed_mask & (1 << r) != 0)
            .map(|r| RegionId::new(format!("r{r}")))
            .collect()
    }

    fn node_allowed(&self, index: usize) -> bool {
        self.allowed_mask & (1 << self.regions[index]) != 0
    }

    /// Builds the topology, listing nodes and links forwards or backwards (and
    /// links from either end) so determinism can be checked across orders.
    fn topology(&self, reversed: bool) -> Topology {
        let mut nodes: Vec<_> = (0..self.regions.len())
            .map(|i| (self.node(i), self.region(i)))
            .collect();
        let mut links: Vec<_> = self
            .links
            .iter()
            .map(|l| {
                if reversed {
                    (self.node(l.b), self.node(l.a), l.cost_ms)
                } else {
                    (self.node(l.a), self.node(l.b), l.cost_ms)
                }
            })
            .collect();
        if reversed {
            nodes.reverse();
            links.reverse();
        }
        let mut topology = Topology::new(nodes, links);
        for link in self.links.iter().filter(|l| !l.up) {
            topology.set_link_up(&self.node(link.a), &self.node(link.b), false);
        }
        topology
    }

    fn link_between(&self, a: usize, b: usize) -> Option<&Link> {
        self.links
            .iter()
            .find(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
    }

    /// Every simple path from `from` to `to` over configured links, each as
    /// (cost, hops, node ids, uses only up links, touches only allowed nodes).
    fn all_simple_paths(&self, from: usize, to: usize) -> Vec<BrutePath> {
        let mut found = Vec::new();
        let mut stack = vec![from];
        self.extend(to, &mut stack, &mut found);
        found
    }

    fn extend(&self, to: usize, stack: &mut Vec<usize>, found: &mut Vec<BrutePath>) {
        let Some(&last) = stack.last() else { return };
        if last == to {
            let mut cost_ms = 0u64;
            let mut all_up = true;
            for pair in stack.windows(2) {
                if let Some(link) = self.link_between(pair[0], pair[1]) {
                    cost_ms += u64::from(link.cost_ms);
                    all_up &= link.up;
                }
            }
            found.push(BrutePath {
                cost_ms,
                hops: stack.len() - 1,
                path: stack.iter().map(|&i| self.node(i)).collect(),
                all_up,
                all_allowed: stack.iter().all(|&i| self.node_allowed(i)),
            });
            return;
        }
        for next in 0..self.regions.len() {
            if !stack.contains(&next) && self.link_between(last, next).is_some() {
                stack.push(next);
                self.extend(to, stack, found);
                stack.pop();
            }
        }
    }
}

#[derive(Clone, Debug)]
struct BrutePath {
    cost_ms: u64,
    hops: usize,
    path: Vec<NodeId>,
    all_up: bool,
    all_allowed: bool,
}

impl BrutePath {
    fn order_key(&self) -> (u64, usize, &[NodeId]) {
        (self.cost_ms, self.hops, &self.path)
    }
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..=7, 2usize..=4).prop_flat_map(|(nodes, region_count)| {
        let pairs: Vec<(usize, usize)> = (0..nodes)
            .flat_map(|a| (a + 1..nodes).map(move |b| (a, b)))
            .collect();
        let pair_count = pairs.len();
        (
            proptest::collection::vec(0..region_count, nodes),
            proptest::collection::vec(
                proptest::option::weighted(0.5, (0u32..=12, proptest::bool::weighted(0.8))),
                pair_count,
            ),
            0u8..(1 << region_count),
            0..nodes,
            0..nodes,
        )
            .prop_map(
                move |(regions, link_choices, allowed_mask, from, to)| Case {
                    regions,
                    links: pairs
                        .iter()
                        .zip(link_choices)
                        .filter_map(|(&(a, b), choice)| {
                            choice.map(|(cost_ms, up)| Link { a, b, cost_ms, up })
                        })
                        .collect(),
                    allowed_mask,
                    from,
                    to,
                },
            )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn cheapest_path_matches_brute_force(case in case()) {
        let topology = case.topology(false);
        let allowed = case.allowed();
        let (from, to) = (case.node(case.from), case.node(case.to));
        let result = topology.cheapest_path(&allowed, &from, &to);
        let paths = case.all_simple_paths(case.from, case.to);
        let valid: Vec<&BrutePath> = paths.iter().filter(|p| p.all_up && p.all_allowed).collect();
        let best = valid.iter().min_by(|x, y| x.order_key().cmp(&y.order_key()));

        // (5) Determinism: the same graph listed in another order gives the
        // same answer, and so does asking again.
        prop_assert_eq!(&result, &case.topology(true).cheapest_path(&allowed, &from, &to));
        prop_assert_eq!(&result, &topology.cheapest_path(&allowed, &from, &to));

        match (&result, best) {
            (Ok(route), Some(best)) => {
                // (1) Only allowed nodes.
                prop_assert!(route.path.iter().all(|n| allowed.allows_node(&topology, n)));
                // (4) Simple, from `from` to `to`, only up links, cost adds up.
                prop_assert_eq!(route.path.first(), Some(&from));
                prop_assert_eq!(route.path.last(), Some(&to));
                let distinct: BTreeSet<&NodeId> = route.path.iter().collect();
                prop_assert_eq!(distinct.len(), route.path.len());
                let mut cost_ms = 0u64;
                for pair in route.path.windows(2) {
                    let link = topology.link(&pair[0], &pair[1]);
                    prop_assert!(link.is_some_and(|l| l.up), "link {:?} not up", pair);
                    cost_ms += link.map_or(0, |l| u64::from(l.cost_ms));
                }
                prop_assert_eq!(cost_ms, route.cost_ms);
                // (2) No allowed path is cheaper, and the documented
                // tie-break picks exactly the brute-force minimum.
                prop_assert!(valid.iter().all(|p| p.cost_ms >= route.cost_ms));
                prop_assert_eq!((route.cost_ms, route.hops(), route.path.as_slice()), best.order_key());
                // Hop-by-hop forwarding follows the same path and terminates.
                let mut at = from.clone();
                let mut walked = vec![at.clone()];
                for _ in 0..route.path.len() {
                    if at == to {
                        break;
                    }
                    let next = topology.next_hop(&allowed, &at, &to);
                    prop_assert!(next.is_ok(), "next hop from {} failed: {:?}", at, next);
                    at = next.unwrap_or_else(|_| at.clone());
                    walked.push(at.clone());
                }
                prop_assert_eq!(&walked, &route.path);
            }
            // (3) "No path" exactly when none exists, for a truthful reason.
            (Err(err), None) => {
                match &err.reason {
                    NoRouteReason::UnknownNode(node) => prop_assert!(false, "unknown node {}", node),
                    NoRouteReason::EndpointNotAllowed { node, region } => {
                        prop_assert!(*node == from || *node == to);
                        prop_assert!(!allowed.allows(region));
                    }
                    NoRouteReason::Disconnected { cause, .. } => {
                        prop_assert!(case.node_allowed(case.from) && case.node_allowed(case.to));
                        let configured_allowed = paths.iter().any(|p| p.all_allowed);
                        match cause {
                            DisconnectCause::LinksDown(down) => {
                                prop_assert!(configured_allowed);
                                prop_assert!(!down.is_empty());
                                for (a, b) in down {
                                    prop_assert!(topology.link(a, b).is_some_and(|l| !l.up));
                                }
                            }
                            DisconnectCause::DisallowedTransit { regions, via } => {
                                prop_assert!(!configured_allowed);
                                prop_assert!(!regions.is_empty());
                                prop_assert!(regions.iter().all(|r| !allowed.allows(r)));
                                let unrestricted = paths.iter().filter(|p| p.all_up).map(|p| p.cost_ms).min();
                                prop_assert_eq!(Some(via.cost_ms), unrestricted);
                            }
                            DisconnectCause::NotConnected => {
                                prop_assert!(!configured_allowed);
                                prop_assert!(!paths.iter().any(|p| p.all_up));
                            }
                        }
                    }
                }
            }
            (Ok(route), None) => prop_assert!(false, "route {:?} but brute force found none", route),
            (Err(err), Some(best)) => prop_assert!(false, "{} but {:?} exists", err, best),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn redirect_targets_are_allowed_bounded_and_home_first(
        case in case(),
        client_region in proptest::option::of(0usize..5),
        limit in 0usize..9,
    ) {
        let topology = case.topology(false);
        let allowed = case.allowed();
        let client_region = client_region.map(|r| RegionId::new(format!("r{r}")));
        let entry = case.node(case.from);
        let targets = topology.nearest_allowed(&allowed, client_region.as_ref(), &entry, limit);

        let allowed_count = (0..case.regions.len()).filter(|&i| case.node_allowed(i)).count();
        prop_assert_eq!(targets.len(), limit.min(allowed_count));
        prop_assert!(targets.iter().all(|n| allowed.allows_node(&topology, n)));
        let distinct: BTreeSet<&NodeId> = targets.iter().collect();
        prop_assert_eq!(distinct.len(), targets.len());
        let home = |n: &NodeId| topology.region_of(n) == client_region.as_ref();
        let first_away = targets.iter().position(|n| !home(n)).unwrap_or(targets.len());
        prop_assert!(targets[first_away..].iter().all(|n| !home(n)));
        prop_assert_eq!(
            &targets,
            &case.topology(true).nearest_allowed(&allowed, client_region.as_ref(), &entry, limit)
        );
    }
}
