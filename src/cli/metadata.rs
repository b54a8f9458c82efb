//! `georelay metadata report`: usage and quality from the metadata store.

use clap::Subcommand;

use super::{CliError, CliResult, ConfigArg};

/// Subcommands of `georelay metadata`.
#[derive(Debug, Subcommand)]
pub(crate) enum MetadataCommand {
    /// Usage and quality summary.
    Report {
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub(super) fn run(command: MetadataCommand) -> CliResult {
    Err(CliError::Invalid(format!("{command:?}: metadata is not built yet")))
}
