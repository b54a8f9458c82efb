//! `georelay check`: validate the configuration and print a summary of its
//! regions, nodes, links and apps; on errors, print every diagnostic (one per
//! line, `file:line:column: path: message`) and exit 2.

use clap::Args;

use super::{CliError, CliResult, ConfigArg};
use crate::config::Fleet;

/// Arguments of `georelay check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
}

pub(super) fn run(args: CheckArgs) -> CliResult {
    let fleet = Fleet::load(&args.config.config).map_err(|errors| {
        let count = errors.0.len();
        let noun = if count == 1 { "error" } else { "errors" };
        CliError::Invalid(format!(
            "{errors}\n{count} {noun} in {}",
            args.config.config.display()
        ))
    })?;
    print!("{}", fleet.summary());
    Ok(())
}
