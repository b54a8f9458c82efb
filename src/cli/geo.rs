//! `georelay geo lookup`: geolocate an address with the fleet's overrides and
//! GeoIP database, and name the region its country belongs to.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;

use super::{CliError, CliResult, ConfigArg};
use crate::config::Fleet;
use crate::geo::{CountryLookup, Geo, MaxMindDb};
use crate::ids::{CountryCode, RegionId};

/// Subcommands of `georelay geo`.
#[derive(Debug, Subcommand)]
pub(crate) enum GeoCommand {
    /// Print the country and region for an address.
    ///
    /// Overrides from the config are checked first (longest prefix wins),
    /// then the database. Without a config file, `--db` alone works (no
    /// region).
    Lookup {
        /// The address to look up (IPv4 or IPv6).
        ip: String,
        #[command(flatten)]
        config: ConfigArg,
        /// A MaxMind DB to use instead of the one the config names.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Print `{"ip":..,"country":..,"region":..}`.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(command: GeoCommand) -> CliResult {
    match command {
        GeoCommand::Lookup {
            ip,
            config,
            db,
            json,
        } => lookup(&ip, &config.config, db, json),
    }
}

fn lookup(ip: &str, config_path: &std::path::Path, db: Option<PathBuf>, json: bool) -> CliResult {
    let ip: IpAddr = ip.parse().map_err(|_| {
        CliError::Invalid(format!(
            "invalid IP address {ip:?}: expected IPv4 (192.0.2.1) or IPv6 (2001:db8::1)"
        ))
    })?;
    let fleet = if db.is_some() && !config_path.exists() {
        None
    } else {
        Some(Fleet::load(config_path).map_err(|errors| CliError::Invalid(errors.to_string()))?)
    };
    let geo = build_geo(fleet.as_ref(), db)?;
    let country = geo.lookup(ip);
    let region = match (&fleet, country) {
        (Some(fleet), Some(country)) => fleet.region_of_country(country),
        _ => None,
    };
    println!("{}", render(ip, country, region, json)?);
    Ok(())
}

/// The config's overrides (if loaded) with `--db` or else the config's
/// database.
fn build_geo(fleet: Option<&Fleet>, db: Option<PathBuf>) -> Result<Geo, CliError> {
    let overrides = fleet
        .map(|fleet| fleet.geoip.overrides.clone())
        .unwrap_or_default();
    let database_path = db.or_else(|| fleet.and_then(|fleet| fleet.geoip.database.clone()));
    let database = match database_path {
        Some(path) => Some(Arc::new(
            MaxMindDb::open(&path).map_err(|err| CliError::Invalid(err.to_string()))?,
        ) as Arc<dyn CountryLookup>),
        None => None,
    };
    Ok(Geo::new(overrides, database))
}

/// The `--json` shape of the contract, fields in this order.
#[derive(serde::Serialize)]
struct LookupJson {
    ip: String,
    country: Option<String>,
    region: Option<String>,
}

fn render(
    ip: IpAddr,
    country: Option<CountryCode>,
    region: Option<&RegionId>,
    json: bool,
) -> Result<String, CliError> {
    if json {
        let line = LookupJson {
            ip: ip.to_string(),
            country: country.map(|c| c.to_string()),
            region: region.map(|r| r.to_string()),
        };
        serde_json::to_string(&line).map_err(|err| CliError::Runtime(err.into()))
    } else {
        let country = country.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
        let region = region.map_or_else(|| "unknown".to_owned(), |r| r.to_string());
        Ok(format!("{ip}  country {country}  region {region}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_and_json_with_unknowns() {
        let ip: IpAddr = "::ffff:127.1.0.1"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let country = CountryCode::parse("DE");
        let region = RegionId::new("eu");
        assert_eq!(
            render(ip, country, Some(&region), false).ok().as_deref(),
            Some("::ffff:127.1.0.1  country DE  region eu")
        );
        assert_eq!(
            render(ip, None, None, true).ok().as_deref(),
            Some(r#"{"ip":"::ffff:127.1.0.1","country":null,"region":null}"#)
        );
    }
}
