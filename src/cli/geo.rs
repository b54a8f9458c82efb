//! `georelay geo lookup`: geolocate an address.

use clap::Subcommand;

use super::{CliError, CliResult, ConfigArg};

/// Subcommands of `georelay geo`.
#[derive(Debug, Subcommand)]
pub(crate) enum GeoCommand {
    /// Print the country and region for an address.
    Lookup {
        /// The address to look up (IPv4 or IPv6).
        ip: String,
        #[command(flatten)]
        config: ConfigArg,
        /// A MaxMind DB to use instead of the one the config names.
        #[arg(long)]
        db: Option<std::path::PathBuf>,
        /// Print `{"ip":..,"country":..,"region":..}`.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(command: GeoCommand) -> CliResult {
    Err(CliError::Invalid(format!("{command:?}: geo is not built yet")))
}
