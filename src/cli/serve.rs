//! `georelay serve`: run one node or the whole fleet in one process.

use clap::Args;

use super::{CliError, CliResult, ConfigArg};

/// Arguments of `georelay serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The node to run (a key of `[nodes.*]`).
    #[arg(long, conflicts_with = "all")]
    node: Option<String>,
    /// Run every node of the file in this process (dev/demo).
    #[arg(long)]
    all: bool,
}

pub(super) fn run(args: ServeArgs) -> CliResult {
    Err(CliError::Invalid(format!("{args:?}: serve is not built yet")))
}
