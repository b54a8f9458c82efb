//! `georelay check`: validate the configuration and summarise it.

use clap::Args;

use super::{CliError, CliResult, ConfigArg};

/// Arguments of `georelay check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
}

pub(super) fn run(args: CheckArgs) -> CliResult {
    Err(CliError::Invalid(format!("{}: check is not built yet", args.config.config.display())))
}
