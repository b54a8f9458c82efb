//! `georelay route`: explain an app's path between two nodes.

use clap::Args;

use super::{CliError, CliResult, ConfigArg};

/// Arguments of `georelay route`.
#[derive(Debug, Args)]
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
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: RouteArgs) -> CliResult {
    Err(CliError::Invalid(format!("{args:?}: route is not built yet")))
}
