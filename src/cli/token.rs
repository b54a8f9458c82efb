//! `georelay token`: mint a signed client token: `gr1` or a JWT (`HS256`
//! from the app's secret, or `ES256`/`EdDSA` from a private key file).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{CliError, CliResult, ConfigArg};
use crate::auth::{self, Claims, JwtSigningKey, Role, TokenError, TokenKey};
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
    /// Token format: `gr1` (compact, HMAC under the app's secret) or `jwt`.
    #[arg(long, value_enum, default_value_t = TokenFormat::Gr1)]
    format: TokenFormat,
    /// With `--format jwt`: sign with this PEM PKCS#8 private key (P-256 →
    /// ES256, Ed25519 → EdDSA) instead of HS256 under the app's secret. The
    /// app must have the matching `jwt_public_key_file` to admit it.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

/// The token formats `georelay token` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TokenFormat {
    /// `gr1.<payload>.<tag>` (docs/TOKENS.md).
    Gr1,
    /// A standard JWT (RFC 7519).
    Jwt,
}

pub(super) fn run(args: TokenArgs) -> CliResult {
    let role: Role = args
        .role
        .parse()
        .map_err(|err| CliError::Invalid(format!("--role: {err}")))?;
    if args.key.is_some() && args.format != TokenFormat::Jwt {
        return Err(CliError::Invalid(
            "--key: only with --format jwt".to_owned(),
        ));
    }
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
    let now = SystemClock.now_unix_secs();
    let claims = Claims {
        app: app.id.clone(),
        channel: args.channel,
        user: args.user,
        role,
        expires_at: now.saturating_add(args.ttl),
    };
    if let Err(err) = claims.validate() {
        let reason = match err {
            TokenError::Malformed(reason) => reason.to_owned(),
            other => other.to_string(),
        };
        return Err(CliError::Invalid(format!("invalid claims: {reason}")));
    }
    let token = match (args.format, &args.key) {
        (TokenFormat::Jwt, Some(path)) => {
            let pem = std::fs::read(path).map_err(|err| {
                CliError::Invalid(format!("--key: cannot read {}: {err}", path.display()))
            })?;
            let key = JwtSigningKey::from_pkcs8_pem(&pem)
                .map_err(|err| CliError::Invalid(format!("--key {}: {err}", path.display())))?;
            auth::mint_jwt(&claims, &key, now).map_err(CliError::Invalid)?
        }
        (format, _) => {
            let secret = app
                .resolve_secret()
                .map_err(|err| CliError::Invalid(format!("{}: {err}", fleet.path.display())))?;
            if format == TokenFormat::Jwt {
                auth::mint_jwt(&claims, &JwtSigningKey::hs256(secret.as_bytes()), now)
                    .map_err(CliError::Invalid)?
            } else {
                auth::mint(&claims, &TokenKey::new(secret.as_bytes()))
            }
        }
    };
    println!("{token}");
    Ok(())
}
