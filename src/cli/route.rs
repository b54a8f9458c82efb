//! `georelay route`: explain the path an app's media would take between two
//! nodes (all links up, configured costs), or why there is none.

use anyhow::anyhow;
use clap::Args;
use serde::Serialize;

use super::{CliError, CliResult, ConfigArg};
use crate::config::Fleet;
use crate::ids::{NodeId, RegionId};
use crate::routing::{AllowedRegions, NoRoute, Route, Topology};

/// Arguments of `georelay route`.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: 0 when an allowed path exists; 1 when there is none \
(ROUTE_UNAVAILABLE, printed with its reason, also with --json); \
2 on invalid input (unreadable or invalid config, unknown app or node).")]
pub(crate) struct RouteArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The app whose policy applies.
    #[arg(long)]
    app: String,
    /// The publisher's node.
    #[arg(long)]
    from: String,
    /// The subscriber's node.
    #[arg(long)]
    to: String,
    /// Print one JSON object: `{"app","from","to","path","cost_ms"}`, or
    /// `{"app","from","to","error","reason"}` when there is no route.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct FoundJson<'a> {
    app: &'a str,
    from: &'a str,
    to: &'a str,
    path: Vec<&'a str>,
    cost_ms: u64,
}

#[derive(Serialize)]
struct UnavailableJson<'a> {
    app: &'a str,
    from: &'a str,
    to: &'a str,
    error: &'static str,
    reason: String,
}

pub(super) fn run(args: RouteArgs) -> CliResult {
    let fleet =
        Fleet::load(&args.config.config).map_err(|errors| CliError::Invalid(errors.to_string()))?;
    let Some(app) = fleet.app(&args.app) else {
        return Err(CliError::Invalid(format!(
            "--app: unknown app {:?} in {}; known apps: {}",
            args.app,
            args.config.config.display(),
            join(fleet.apps.keys()),
        )));
    };
    for (flag, node) in [("--from", &args.from), ("--to", &args.to)] {
        if fleet.node(node).is_none() {
            return Err(CliError::Invalid(format!(
                "{flag}: unknown node {node:?} in {}; known nodes: {}",
                args.config.config.display(),
                join(fleet.nodes.keys()),
            )));
        }
    }
    let topology = Topology::from_fleet(&fleet);
    let allowed = AllowedRegions::for_app(&fleet, app);
    let (from, to) = (
        NodeId::from(args.from.as_str()),
        NodeId::from(args.to.as_str()),
    );
    match topology.cheapest_path(&allowed, &from, &to) {
        Ok(route) => {
            if args.json {
                print_json(&FoundJson {
                    app: &args.app,
                    from: &args.from,
                    to: &args.to,
                    path: route.path.iter().map(NodeId::as_str).collect(),
                    cost_ms: route.cost_ms,
                })?;
            } else {
                let unrestricted = topology
                    .cheapest_path(&AllowedRegions::all(), &from, &to)
                    .ok();
                print!(
                    "{}",
                    describe(
                        &args.app,
                        &topology,
                        &allowed,
                        &route,
                        unrestricted.as_ref()
                    )
                );
            }
            Ok(())
        }
        Err(no_route) => {
            if args.json {
                print_json(&UnavailableJson {
                    app: &args.app,
                    from: &args.from,
                    to: &args.to,
                    error: no_route.code().name(),
                    reason: no_route.to_string(),
                })?;
            } else {
                println!("{}", describe_unavailable(&args.app, &from, &to, &no_route));
            }
            Err(CliError::Runtime(anyhow!(
                "{}: no allowed path for app {} from {from} to {to}",
                no_route.code(),
                args.app
            )))
        }
    }
}

fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string(value).map_err(|err| CliError::Runtime(err.into()))?;
    println!("{text}");
    Ok(())
}

fn join<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn region_label(topology: &Topology, node: &NodeId) -> String {
    topology
        .region_of(node)
        .map_or_else(|| "?".to_owned(), RegionId::to_string)
}

/// The human answer: each hop with its cost, the total, and a note when the
/// app's policy excluded a cheaper unrestricted path.
fn describe(
    app: &str,
    topology: &Topology,
    allowed: &AllowedRegions,
    route: &Route,
    unrestricted: Option<&Route>,
) -> String {
    let mut out = format!(
        "app {app}: {} -> {}\n",
        route.path.first().map_or("?", NodeId::as_str),
        route.path.last().map_or("?", NodeId::as_str),
    );
    let mut previous: Option<&NodeId> = None;
    for node in &route.path {
        let region = region_label(topology, node);
        match previous {
            None => out.push_str(&format!("  {node} ({region})\n")),
            Some(prev) => {
                let cost = topology
                    .neighbours(prev)
                    .find(|(peer, _, _)| *peer == node)
                    .map_or(0, |(_, cost, _)| cost);
                out.push_str(&format!("  -> {node} ({region}): {cost} ms\n"));
            }
        }
        previous = Some(node);
    }
    let hops = route.hops();
    let plural = if hops == 1 { "" } else { "s" };
    out.push_str(&format!(
        "total: {} ms, {hops} hop{plural}\n",
        route.cost_ms
    ));
    if let Some(cheaper) = unrestricted.filter(|cheaper| cheaper.cost_ms < route.cost_ms) {
        let interior = cheaper
            .path
            .get(1..cheaper.path.len().saturating_sub(1))
            .unwrap_or_default();
        let excluded: std::collections::BTreeSet<&RegionId> = cheaper
            .path
            .iter()
            .filter_map(|node| topology.region_of(node))
            .filter(|region| !allowed.allows(region))
            .collect();
        let noun = if excluded.len() == 1 {
            "region"
        } else {
            "regions"
        };
        out.push_str(&format!(
            "note: cheaper path via {} ({} ms) excluded: {noun} {} not allowed for {app}\n",
            join(interior),
            cheaper.cost_ms,
            join(excluded),
        ));
    }
    out
}

fn describe_unavailable(app: &str, from: &NodeId, to: &NodeId, no_route: &NoRoute) -> String {
    format!("app {app}: {from} -> {to}\n{}: {no_route}", no_route.code())
}
