//! The `georelay` command line: argument definitions and dispatch.
//!
//! Each subcommand lives in its own file and returns a [`CliResult`]; `main`
//! turns it into the exit code of the contract: 0 on success, 2 on invalid
//! input or config, 1 on a runtime failure, 3 when `metadata audit` found a
//! violation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod certs;
mod check;
mod fleet;
mod geo;
mod loadgen;
mod metadata;
mod route;
mod serve;
mod token;

/// The outcome of a subcommand that did not succeed.
#[derive(Debug)]
pub enum CliError {
    /// Invalid input or config: exit code 2. The message names the file,
    /// line and column, or the field.
    Invalid(String),
    /// A runtime failure: exit code 1.
    Runtime(anyhow::Error),
    /// The command ran and found what it looks for (an audit violation):
    /// exit code 3, with this summary on stderr.
    Findings(String),
}

impl From<anyhow::Error> for CliError {
    fn from(err: anyhow::Error) -> Self {
        CliError::Runtime(err)
    }
}

/// What every subcommand returns.
pub type CliResult = Result<(), CliError>;

/// georelay: a geofenced QUIC relay fleet for real-time media.
#[derive(Debug, Parser)]
#[command(name = "georelay", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the fleet configuration is read from.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Path to the fleet configuration.
    #[arg(long, default_value = "regions.toml")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration and print a summary of regions, nodes, links and apps.
    Check(check::CheckArgs),
    /// Run one node, or every node of the file in one process.
    Serve(serve::ServeArgs),
    /// Print a signed token for a client.
    Token(token::TokenArgs),
    /// IP geolocation tools.
    Geo {
        #[command(subcommand)]
        command: geo::GeoCommand,
    },
    /// Explain the path an app's media would take between two nodes, or why there is none.
    Route(route::RouteArgs),
    /// Write a development CA and one certificate/key pair per node.
    Certs(certs::CertsArgs),
    /// Synthetic SDK clients against a running fleet.
    Loadgen(loadgen::LoadgenArgs),
    /// The bare quinn forwarder `loadgen --baseline` starts (internal).
    #[command(hide = true)]
    BaselineForwarder(loadgen::ForwarderArgs),
    /// Operational metadata tools.
    Metadata {
        #[command(subcommand)]
        command: metadata::MetadataCommand,
    },
    /// Operate a multi-host fleet through the nodes' admin API.
    Fleet {
        #[command(subcommand)]
        command: fleet::FleetCommand,
    },
}

/// Parses the command line, runs the subcommand and maps the result to the
/// contract's exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Token(args) => token::run(args),
        Command::Geo { command } => geo::run(command),
        Command::Route(args) => route::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Loadgen(args) => loadgen::run(args),
        Command::BaselineForwarder(args) => loadgen::run_forwarder(args),
        Command::Metadata { command } => metadata::run(command),
        Command::Fleet { command } => fleet::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Invalid(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
        Err(CliError::Runtime(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
        Err(CliError::Findings(summary)) => {
            eprintln!("{summary}");
            ExitCode::from(3)
        }
    }
}
