//! `georelay certs`: write a dev CA and per-node certificates.

use clap::Args;

use super::{CliError, CliResult, ConfigArg};

/// Arguments of `georelay certs`.
#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Directory to write `ca.pem`, `ca.key` and `<node>.pem`/`<node>.key` into.
    #[arg(long)]
    out: std::path::PathBuf,
}

pub(super) fn run(args: CertsArgs) -> CliResult {
    Err(CliError::Invalid(format!("{args:?}: certs is not built yet")))
}
