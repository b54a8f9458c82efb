//! `georelay loadgen`: synthetic SDK clients against a running fleet.

use clap::Args;

use super::{CliError, CliResult, ConfigArg};

/// Arguments of `georelay loadgen`.
#[derive(Debug, Args)]
pub(crate) struct LoadgenArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The app to load.
    #[arg(long)]
    app: String,
}

pub(super) fn run(args: LoadgenArgs) -> CliResult {
    Err(CliError::Invalid(format!("{args:?}: loadgen is not built yet")))
}
