//! `georelay token`: mint a signed client token from an app's secret.

use clap::Args;

use super::{CliError, CliResult, ConfigArg};
use crate::auth::{self, Claims, Role, TokenError, TokenKey};
use crate::clock::{Clock, SystemClock};
use crate::config::Fleet;
use crate::ids::AppId;

/// Arguments of `georelay token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The app the token is for (a key of `[apps.*]`).
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
    /// Lifetime in seconds (at least 1).
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

pub(super) fn run(args: TokenArgs) -> CliResult {
    let role: Role = args
        .role
        .parse()
        .map_err(|err| CliError::Invalid(format!("--role: {err}")))?;
    if args.ttl == 0 {
        return Err(CliError::Invalid(
            "--ttl: must be at least 1 second".to_owned(),
        ));
    }
    let fleet =
        Fleet::load(&args.config.config).map_err(|errors| CliError::Invalid(errors.to_string()))?;
    let Some(app) = fleet.app(&args.app) else {
        let known: Vec<&str> = fleet.apps.keys().map(AppId::as_str).collect();
        return Err(CliError::Invalid(format!(
            "--app: unknown app {:?} in {} (apps: {})",
            args.app,
            fleet.path.display(),
            known.join(", ")
        )));
    };
    let secret = app
        .resolve_secret()
        .map_err(|err| CliError::Invalid(format!("{}: {err}", fleet.path.display())))?;
    let claims = Claims {
        app: app.id.clone(),
        channel: args.channel,
        user: args.user,
        role,
        expires_at: SystemClock.now_unix_secs().saturating_add(args.ttl),
    };
    if let Err(err) = claims.validate() {
        let reason = match err {
            TokenError::Malformed(reason) => reason.to_owned(),
            other => other.to_string(),
        };
        return Err(CliError::Invalid(format!("invalid claims: {reason}")));
    }
    println!("{}", auth::mint(&claims, &TokenKey::new(secret.as_bytes())));
    Ok(())
}
