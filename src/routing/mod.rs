//! The sans-IO geofenced routing core: one [`Topology`] answers
//! `georelay route`, admission (redirect targets) and the mesh (next hops).
//!
//! Deterministic and synchronous: no tokio, no sockets, no clock. The relay
//! feeds it link state (`set_link_up`, `set_link_cost`) and asks it questions;
//! every answer is a pure function of the topology and the question.
//!
//! - [`Topology::cheapest_path`]: Dijkstra over nodes in the app's allowed
//!   regions and links that are up. Ties: fewer hops, then the node ids along
//!   the path compared lexicographically. When there is no such path the
//!   answer is [`NoRoute`] (`ROUTE_UNAVAILABLE`) with a reason that says what
//!   separates the nodes: an unknown or disallowed endpoint, links that are
//!   down, or transit only through disallowed regions. A route never detours
//!   through a disallowed node.
//! - [`Topology::next_hop`]: the neighbour to forward to; hop-by-hop
//!   forwarding follows exactly the source's cheapest path (loop-free).
//! - [`Topology::nearest_allowed`]: redirect targets (see below).
//!
//! Paths are computed per subscription or per topology change, not per
//! packet.
//!
//! # Direction
//!
//! Costs are symmetric, but among equal-cost, equal-hop paths the tie-break
//! reads node ids from the origin, so `A -> B` and `B -> A` may pick mirror
//! paths that differ. Callers that need one path per pair (the mesh pulling a
//! track) compute it in one agreed direction, e.g. subscriber node towards the
//! publisher's node, hop by hop with [`Topology::next_hop`].
//!
//! # Redirect targets
//!
//! "Nearest" follows country → region → node, with link costs:
//! 1. The *origin* is the set of nodes in the client's region (the region of
//!    its geolocated country) when that region has nodes; otherwise the
//!    `entry` node the client reached; otherwise (unknown entry) nothing.
//! 2. A node's distance is the cheapest link-cost sum from the origin over
//!    links that are up, ignoring the app's policy: it only measures
//!    proximity, no media travels along it (the client connects directly).
//! 3. Allowed nodes are ordered: the client's own region first, then by
//!    distance (nodes the origin cannot reach last), then by node id.
//! 4. Disallowed nodes are never returned; at most `limit` nodes are.
//!
//! The entry node is itself a candidate when allowed; a draining node that
//! wants alternatives asks for one more and drops itself.

mod nearest;
mod path;
mod topology;

#[cfg(test)]
mod proptests;

pub use path::{DisconnectCause, NoRoute, NoRouteReason, Route};
pub use topology::{AllowedRegions, Topology};

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::config::Fleet;
    use crate::error::ErrorCode;
    use crate::ids::{NodeId, RegionId};

    fn node(id: &str) -> NodeId {
        NodeId::from(id)
    }

    fn allow(regions: &[&str]) -> AllowedRegions {
        regions.iter().map(|r| RegionId::from(*r)).collect()
    }

    fn ids(nodes: &[NodeId]) -> Vec<&str> {
        nodes.iter().map(NodeId::as_str).collect()
    }

    /// The example fleet of the repo's regions.toml.
    const NODES: [(&str, &str); 6] = [
        ("eu-fra-1", "eu"),
        ("eu-ams-1", "eu"),
        ("uk-lon-1", "uk"),
        ("us-iad-1", "us"),
        ("us-sfo-1", "us"),
        ("ap-sin-1", "apac"),
    ];
    const LINKS: [(&str, &str, u32); 7] = [
        ("eu-fra-1", "uk-lon-1", 12),
        ("uk-lon-1", "eu-ams-1", 8),
        ("eu-fra-1", "eu-ams-1", 30),
        ("uk-lon-1", "us-iad-1", 70),
        ("us-iad-1", "us-sfo-1", 60),
        ("us-sfo-1", "ap-sin-1", 170),
        ("eu-fra-1", "ap-sin-1", 160),
    ];

    fn example() -> Topology {
        Topology::new(
            NODES.map(|(n, r)| (node(n), RegionId::from(r))),
            LINKS.map(|(a, b, cost)| (node(a), node(b), cost)),
        )
    }

    /// The same fleet as regions.toml text, with an app denying apac.
    fn example_toml() -> String {
        let mut text = String::new();
        for (region, country) in [("eu", "DE"), ("uk", "GB"), ("us", "US"), ("apac", "SG")] {
            text += &format!("[regions.{region}]\ncountries = [\"{country}\"]\n");
        }
        for (index, (id, region)) in NODES.iter().enumerate() {
            text += &format!(
                "[nodes.{id}]\nregion = \"{region}\"\nlisten = \"127.0.0.{n}:4433\"\nadmin = \"127.0.0.{n}:9090\"\n",
                n = index + 1
            );
        }
        for (a, b, rtt) in LINKS {
            text += &format!("[[links]]\nbetween = [\"{a}\", \"{b}\"]\nrtt_ms = {rtt}\n");
        }
        text + "[apps.no-apac]\nsecret = \"s\"\ndeny_regions = [\"apac\"]\n"
    }

    #[test]
    fn from_fleet_matches_the_configured_graph_and_policy() {
        let fleet = match Fleet::parse(&example_toml(), Path::new("regions.toml")) {
            Ok(fleet) => fleet,
            Err(errors) => panic!("{errors}"),
        };
        assert_eq!(Topology::from_fleet(&fleet), example());
        let app = fleet.app("no-apac").expect("app");
        assert_eq!(
            AllowedRegions::for_app(&fleet, app),
            allow(&["eu", "uk", "us"])
        );
    }

    fn path(
        topology: &Topology,
        allowed: &AllowedRegions,
        from: &str,
        to: &str,
    ) -> (Vec<String>, u64) {
        match topology.cheapest_path(allowed, &node(from), &node(to)) {
            Ok(route) => (
                route.path.iter().map(ToString::to_string).collect(),
                route.cost_ms,
            ),
            Err(err) => panic!("expected a route {from} -> {to}, got: {err}"),
        }
    }

    #[test]
    fn eu_only_app_takes_the_direct_link_not_the_cheaper_uk_transit() {
        let (hops, cost) = path(&example(), &allow(&["eu"]), "eu-fra-1", "eu-ams-1");
        assert_eq!(hops, ["eu-fra-1", "eu-ams-1"]);
        assert_eq!(cost, 30);
    }

    #[test]
    fn eu_and_uk_app_takes_the_cheaper_path_through_london() {
        let (hops, cost) = path(&example(), &allow(&["eu", "uk"]), "eu-fra-1", "eu-ams-1");
        assert_eq!(hops, ["eu-fra-1", "uk-lon-1", "eu-ams-1"]);
        assert_eq!(cost, 20);
        let (hops, cost) = path(&example(), &AllowedRegions::all(), "eu-ams-1", "us-sfo-1");
        assert_eq!(hops, ["eu-ams-1", "uk-lon-1", "us-iad-1", "us-sfo-1"]);
        assert_eq!(cost, 138);
    }

    #[test]
    fn eu_and_us_app_has_no_route_because_transit_needs_uk() {
        let err = example()
            .cheapest_path(&allow(&["eu", "us"]), &node("eu-fra-1"), &node("us-iad-1"))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::RouteUnavailable);
        let NoRouteReason::Disconnected {
            cause: DisconnectCause::DisallowedTransit { regions, via },
            ..
        } = &err.reason
        else {
            panic!("unexpected reason: {err:?}");
        };
        assert_eq!(
            regions.iter().map(RegionId::as_str).collect::<Vec<_>>(),
            ["uk"]
        );
        assert_eq!(ids(&via.path), ["eu-fra-1", "uk-lon-1", "us-iad-1"]);
        let message = err.to_string();
        assert!(
            message.starts_with(
                "eu-fra-1 and us-iad-1 are connected only through regions not allowed for this app: uk"
            ),
            "{message}"
        );
    }

    #[test]
    fn unknown_and_disallowed_endpoints_are_named() {
        let topology = example();
        let eu = allow(&["eu"]);
        let err = topology
            .cheapest_path(&eu, &node("eu-fra-1"), &node("nowhere"))
            .unwrap_err();
        assert_eq!(err.reason, NoRouteReason::UnknownNode(node("nowhere")));
        let err = topology
            .cheapest_path(&eu, &node("uk-lon-1"), &node("eu-fra-1"))
            .unwrap_err();
        assert_eq!(
            err.reason,
            NoRouteReason::EndpointNotAllowed {
                node: node("uk-lon-1"),
                region: RegionId::from("uk")
            }
        );
        assert_eq!(
            err.to_string(),
            "uk-lon-1 is in region uk, which this app does not allow"
        );
    }

    #[test]
    fn a_down_link_reroutes_then_fails_closed_naming_the_link() {
        let mut topology = example();
        let eu_uk = allow(&["eu", "uk"]);
        assert!(topology.set_link_up(&node("uk-lon-1"), &node("eu-ams-1"), false));
        let (hops, cost) = path(&topology, &eu_uk, "eu-fra-1", "eu-ams-1");
        assert_eq!(hops, ["eu-fra-1", "eu-ams-1"]);
        assert_eq!(cost, 30);
        topology.set_link_up(&node("eu-fra-1"), &node("eu-ams-1"), false);
        let err = topology
            .cheapest_path(&allow(&["eu"]), &node("eu-fra-1"), &node("eu-ams-1"))
            .unwrap_err();
        assert_eq!(
            err.reason,
            NoRouteReason::Disconnected {
                from: node("eu-fra-1"),
                to: node("eu-ams-1"),
                cause: DisconnectCause::LinksDown(vec![(node("eu-fra-1"), node("eu-ams-1"))]),
            }
        );
        assert_eq!(
            err.to_string(),
            "no allowed path from eu-fra-1 to eu-ams-1 while links are down: eu-fra-1 <-> eu-ams-1"
        );
        assert!(topology.set_link_up(&node("eu-fra-1"), &node("eu-ams-1"), true));
        assert_eq!(
            path(&topology, &allow(&["eu"]), "eu-fra-1", "eu-ams-1").1,
            30
        );
    }

    #[test]
    fn a_measured_cost_changes_the_choice() {
        let mut topology = example();
        topology.set_link_cost(&node("eu-fra-1"), &node("eu-ams-1"), 15);
        let (hops, cost) = path(&topology, &AllowedRegions::all(), "eu-fra-1", "eu-ams-1");
        assert_eq!(hops, ["eu-fra-1", "eu-ams-1"]);
        assert_eq!(cost, 15);
    }

    #[test]
    fn same_node_is_a_zero_cost_path_and_its_own_next_hop() {
        let topology = example();
        let (hops, cost) = path(&topology, &allow(&["us"]), "us-iad-1", "us-iad-1");
        assert_eq!(hops, ["us-iad-1"]);
        assert_eq!(cost, 0);
        assert_eq!(
            topology.next_hop(&allow(&["us"]), &node("us-iad-1"), &node("us-iad-1")),
            Ok(node("us-iad-1"))
        );
    }

    #[test]
    fn next_hop_is_the_second_node_of_the_cheapest_path() {
        let topology = example();
        let eu_uk = allow(&["eu", "uk"]);
        assert_eq!(
            topology.next_hop(&eu_uk, &node("eu-fra-1"), &node("eu-ams-1")),
            Ok(node("uk-lon-1"))
        );
        assert_eq!(
            topology.next_hop(&allow(&["eu"]), &node("eu-fra-1"), &node("eu-ams-1")),
            Ok(node("eu-ams-1"))
        );
        assert!(
            topology
                .next_hop(&allow(&["eu", "us"]), &node("eu-fra-1"), &node("us-iad-1"))
                .is_err()
        );
    }

    #[test]
    fn equal_cost_paths_are_broken_by_hops_then_node_ids() {
        // a-b-d and a-c-d both cost 10; a-d costs 10 with one hop.
        let region = RegionId::from("r");
        let build = |direct: bool| {
            let mut links = vec![
                (node("a"), node("c"), 5),
                (node("c"), node("d"), 5),
                (node("a"), node("b"), 5),
                (node("b"), node("d"), 5),
            ];
            if direct {
                links.push((node("a"), node("d"), 10));
            }
            Topology::new(
                ["d", "c", "b", "a"].map(|n| (node(n), region.clone())),
                links,
            )
        };
        let all = AllowedRegions::all();
        assert_eq!(path(&build(true), &all, "a", "d").0, ["a", "d"]);
        assert_eq!(path(&build(false), &all, "a", "d").0, ["a", "b", "d"]);
        assert_eq!(path(&build(false), &all, "d", "a").0, ["d", "b", "a"]);
    }

    #[test]
    fn redirect_targets_prefer_the_clients_region_then_distance() {
        let topology = example();
        let eu = RegionId::from("eu");
        let us = RegionId::from("us");
        let eu_us = allow(&["eu", "us"]);
        // A German client that reached London gets the EU nodes, then the US.
        let targets = topology.nearest_allowed(&eu_us, Some(&eu), &node("uk-lon-1"), 10);
        assert_eq!(
            ids(&targets),
            ["eu-ams-1", "eu-fra-1", "us-iad-1", "us-sfo-1"]
        );
        // A US client: US nodes first, then EU by distance from the US nodes
        // (ams is 78 from iad via lon, fra is 82).
        let targets = topology.nearest_allowed(&eu_us, Some(&us), &node("uk-lon-1"), 3);
        assert_eq!(ids(&targets), ["us-iad-1", "us-sfo-1", "eu-ams-1"]);
        // Unknown country: by distance from the entry node; London itself is
        // never offered to an app that does not allow uk.
        let targets =
            topology.nearest_allowed(&allow(&["eu", "apac"]), None, &node("uk-lon-1"), 10);
        assert_eq!(ids(&targets), ["eu-ams-1", "eu-fra-1", "ap-sin-1"]);
        // A client in a region the app does not allow: the allowed nodes
        // nearest to that region (iad 78, sfo 138, sin 160 from the EU nodes),
        // whatever node it reached.
        let targets =
            topology.nearest_allowed(&allow(&["us", "apac"]), Some(&eu), &node("us-sfo-1"), 10);
        assert_eq!(ids(&targets), ["us-iad-1", "us-sfo-1", "ap-sin-1"]);
        assert!(
            topology
                .nearest_allowed(&eu_us, Some(&eu), &node("uk-lon-1"), 0)
                .is_empty()
        );
    }

    #[test]
    fn redirect_targets_skip_down_links_and_list_unreachable_nodes_last() {
        let mut topology = example();
        topology.set_link_up(&node("eu-fra-1"), &node("ap-sin-1"), false);
        topology.set_link_up(&node("us-sfo-1"), &node("ap-sin-1"), false);
        let targets =
            topology.nearest_allowed(&allow(&["us", "apac"]), None, &node("eu-fra-1"), 10);
        assert_eq!(ids(&targets), ["us-iad-1", "us-sfo-1", "ap-sin-1"]);
        let targets = topology.nearest_allowed(&allow(&["us", "apac"]), None, &node("unknown"), 10);
        assert_eq!(ids(&targets), ["ap-sin-1", "us-iad-1", "us-sfo-1"]);
    }
}
