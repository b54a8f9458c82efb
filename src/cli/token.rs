//! `georelay token`: mint a signed client token.

use clap::Args;

use super::{CliError, CliResult, ConfigArg};

/// Arguments of `georelay token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The app the token is for.
    #[arg(long)]
    app: String,
    /// The channel the token grants.
    #[arg(long)]
    channel: String,
    /// The user id.
    #[arg(long)]
    user: String,
    /// publish or subscribe.
    #[arg(long)]
    role: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

pub(super) fn run(args: TokenArgs) -> CliResult {
    Err(CliError::Invalid(format!("{args:?}: token is not built yet")))
}
