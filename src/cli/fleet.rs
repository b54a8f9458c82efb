//! `georelay fleet reload|status`: operate a multi-host fleet through each
//! node's admin API, from one machine.
//!
//! Both read the fleet config (`--config`): the nodes and their admin
//! addresses, and the admin token's source (`[admin] token_env` or
//! `token_file`, relative to the config file; `--token-env` overrides it).
//! The token goes in `Authorization: Bearer` on every request (the nodes
//! need it for `POST /reload`, and for reads with `protect_reads = true`).
//!
//! - `fleet reload` validates the file locally (exit 2 if invalid, nothing
//!   is sent), then sends it to every node's `POST /reload` as the body
//!   (`Content-Type: application/toml`), all nodes at once. Each node
//!   validates it, writes it atomically over its own config file and applies
//!   it. Per node it reports the policy version the node now runs (which
//!   must be the file's) or why it failed; exit 1 if any node failed.
//! - `fleet status` asks every node for `/healthz`, `/readyz` and `/status`
//!   and shows each node's health, policy version, sessions and links, and
//!   which nodes run another version than the file's. Exit 0 when every node
//!   answered and runs the file's version, 3 when all answered but versions
//!   differ, 1 when a node did not answer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt as _, Full};
use serde::Serialize;
use serde_json::Value;

use super::{CliError, CliResult, ConfigArg};
use crate::config::{Fleet, Node};

/// Subcommands of `georelay fleet`.
#[derive(Debug, Subcommand)]
pub(crate) enum FleetCommand {
    /// Push the config file to every node (`POST /reload` with the file as
    /// body) and report the policy version each node now runs.
    Reload(FleetArgs),
    /// Each node's health, policy version, sessions and links, and which
    /// nodes run another version than the config file.
    Status(FleetArgs),
}

/// Arguments of `georelay fleet reload|status`.
#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Read the admin token from this environment variable instead of the
    /// config's `[admin]` source.
    #[arg(long)]
    token_env: Option<String>,
    /// How long to wait for each node, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(command: FleetCommand) -> CliResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match command {
        FleetCommand::Reload(args) => runtime.block_on(reload(args)),
        FleetCommand::Status(args) => runtime.block_on(status(args)),
    }
}

/// What the command needs from the config file.
struct Target {
    text: String,
    fleet: Fleet,
    token: Option<String>,
    timeout: Duration,
}

fn target(args: &FleetArgs) -> Result<Target, CliError> {
    let path = &args.config.config;
    let text = std::fs::read_to_string(path).map_err(|err| {
        CliError::Invalid(format!("{}:1:1: cannot read config: {err}", path.display()))
    })?;
    let fleet =
        Fleet::parse(&text, path).map_err(|errors| CliError::Invalid(errors.to_string()))?;
    let token = match &args.token_env {
        Some(env) => Some(read_env_token(env, "--token-env")?),
        None => admin_token(&text, path)?,
    };
    Ok(Target {
        text,
        fleet,
        token,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
    })
}

fn read_env_token(env: &str, field: &str) -> Result<String, CliError> {
    match std::env::var(env) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        _ => Err(CliError::Invalid(format!(
            "{field}: environment variable {env} is not set (it holds the admin token)"
        ))),
    }
}

/// The admin token named by the config's `[admin]` table (`token_env`, or
/// `token_file` relative to the config file), if any.
fn admin_token(text: &str, path: &Path) -> Result<Option<String>, CliError> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|err| CliError::Invalid(format!("{}: {err}", path.display())))?;
    let Some(admin) = table.get("admin").and_then(toml::Value::as_table) else {
        return Ok(None);
    };
    if let Some(env) = admin.get("token_env").and_then(toml::Value::as_str) {
        return read_env_token(env, &format!("{}: admin.token_env", path.display())).map(Some);
    }
    if let Some(file) = admin.get("token_file").and_then(toml::Value::as_str) {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file = dir.join(file);
        let token = std::fs::read_to_string(&file).map_err(|err| {
            CliError::Invalid(format!(
                "{}: admin.token_file: cannot read {}: {err}",
                path.display(),
                file.display()
            ))
        })?;
        return Ok(Some(token.trim().to_owned()));
    }
    Ok(None)
}

/// An HTTP answer: status code and body.
struct Answer {
    status: u16,
    body: Bytes,
}

/// One HTTP/1.1 request to a node's admin address, bounded by `timeout`.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    toml_body: Option<&str>,
    timeout: Duration,
) -> Result<Answer, String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|err| format!("cannot connect: {err}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|err| format!("HTTP handshake: {err}"))?;
        let connection = tokio::spawn(connection);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string());
        if let Some(token) = token {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match toml_body {
            Some(text) => {
                builder = builder.header(hyper::header::CONTENT_TYPE, "application/toml");
                Bytes::copy_from_slice(text.as_bytes())
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(body))
            .map_err(|err| format!("building the request: {err}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| format!("{method} {path}: {err}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| format!("{method} {path}: reading the answer: {err}"))?
            .to_bytes();
        connection.abort();
        Ok(Answer { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

/// The `error`/`message`/`details` of a JSON error body, or the text.
fn error_text(answer: &Answer) -> String {
    let body = String::from_utf8_lossy(&answer.body);
    let detail = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .map(|json| {
            ["error", "message", "details"]
                .iter()
                .filter_map(|field| json[field].as_str())
                .collect::<Vec<_>>()
                .join(": ")
        })
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| body.trim().to_owned());
    format!("HTTP {}: {detail}", answer.status)
}

/// One node's answer to `fleet reload`.
#[derive(Clone, Debug, Serialize)]
struct ReloadOutcome {
    node: String,
    region: String,
    admin: String,
    ok: bool,
    /// The version the node runs now, as it reported it.
    policy_version: Option<String>,
    revoked_sessions: Option<u64>,
    rerouted: Option<u64>,
    message: Option<String>,
    error: Option<String>,
}

async fn reload_node(node: &Node, target: &Target, expected: &str) -> ReloadOutcome {
    let mut outcome = ReloadOutcome {
        node: node.id.to_string(),
        region: node.region.to_string(),
        admin: node.admin.to_string(),
        ok: false,
        policy_version: None,
        revoked_sessions: None,
        rerouted: None,
        message: None,
        error: None,
    };
    let answer = request(
        node.admin,
        "POST",
        "/reload",
        target.token.as_deref(),
        Some(&target.text),
        target.timeout,
    )
    .await;
    let answer = match answer {
        Ok(answer) if answer.status == 200 => answer,
        Ok(answer) => {
            outcome.error = Some(error_text(&answer));
            return outcome;
        }
        Err(err) => {
            outcome.error = Some(err);
            return outcome;
        }
    };
    let Ok(report) = serde_json::from_slice::<Value>(&answer.body) else {
        outcome.error = Some("the answer is not JSON".to_owned());
        return outcome;
    };
    outcome.policy_version = report["policy_version"].as_str().map(str::to_owned);
    outcome.revoked_sessions = report["revoked_sessions"].as_u64();
    outcome.rerouted = report["rerouted"].as_u64();
    outcome.message = report["message"].as_str().map(str::to_owned);
    match outcome.policy_version.as_deref() {
        Some(version) if version == expected => outcome.ok = true,
        Some(version) => {
            outcome.error = Some(format!(
                "the node runs policy {version}, not the pushed file's {expected}"
            ))
        }
        None => {
            outcome.error = Some(
                "the node reloaded but reports no policy_version (an older georelay?)".to_owned(),
            )
        }
    }
    outcome
}

async fn reload(args: FleetArgs) -> CliResult {
    let target = target(&args)?;
    let expected = target.fleet.policy_version().to_string();
    let outcomes = futures_util::future::join_all(
        target
            .fleet
            .nodes
            .values()
            .map(|node| reload_node(node, &target, &expected)),
    )
    .await;
    let failed = outcomes.iter().filter(|outcome| !outcome.ok).count();
    if args.json {
        let json = serde_json::json!({
            "config": args.config.config,
            "policy_version": expected,
            "nodes": outcomes,
        });
        println!("{json}");
    } else {
        println!(
            "pushed {} (policy version {expected}) to {} nodes",
            args.config.config.display(),
            outcomes.len()
        );
        for outcome in &outcomes {
            match (&outcome.error, &outcome.policy_version) {
                (None, Some(version)) => println!(
                    "  {:<16} {:<8} ok: runs {version}; {} revoked, {} rerouted{}",
                    outcome.node,
                    outcome.region,
                    outcome.revoked_sessions.unwrap_or(0),
                    outcome.rerouted.unwrap_or(0),
                    outcome
                        .message
                        .as_deref()
                        .map_or_else(String::new, |message| format!(" ({message})"))
                ),
                (error, _) => println!(
                    "  {:<16} {:<8} FAILED at {}: {}",
                    outcome.node,
                    outcome.region,
                    outcome.admin,
                    error.as_deref().unwrap_or("unknown")
                ),
            }
        }
    }
    if failed > 0 {
        return Err(CliError::Runtime(anyhow::anyhow!(
            "{failed} of {} nodes did not apply policy {expected}",
            outcomes.len()
        )));
    }
    Ok(())
}

/// One node's answer to `fleet status`.
#[derive(Clone, Debug, Default, Serialize)]
struct NodeState {
    node: String,
    region: String,
    admin: String,
    reachable: bool,
    healthy: bool,
    ready: bool,
    ready_reasons: Vec<String>,
    policy_version: Option<String>,
    sessions: Option<u64>,
    links_up: u64,
    links: u64,
    uptime_s: Option<u64>,
    peers_on_other_versions: Vec<crate::admin::PeerVersion>,
    error: Option<String>,
}

async fn node_state(node: &Node, target: &Target) -> NodeState {
    let mut state = NodeState {
        node: node.id.to_string(),
        region: node.region.to_string(),
        admin: node.admin.to_string(),
        ..NodeState::default()
    };
    let get = |path: &'static str| {
        request(
            node.admin,
            "GET",
            path,
            target.token.as_deref(),
            None,
            target.timeout,
        )
    };
    let (healthz, readyz, status) = tokio::join!(get("/healthz"), get("/readyz"), get("/status"));
    match healthz {
        Ok(answer) => {
            state.reachable = true;
            state.healthy = answer.status == 200;
        }
        Err(err) => {
            state.error = Some(err);
            return state;
        }
    }
    if let Ok(answer) = readyz
        && let Ok(json) = serde_json::from_slice::<Value>(&answer.body)
    {
        state.ready = json["ready"].as_bool().unwrap_or(false);
        state.ready_reasons = json["reasons"]
            .as_array()
            .map(|reasons| {
                reasons
                    .iter()
                    .filter_map(|reason| reason.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
    }
    match status {
        Ok(answer) if answer.status == 200 => {
            if let Ok(json) = serde_json::from_slice::<Value>(&answer.body) {
                state.policy_version = json["policy_version"].as_str().map(str::to_owned);
                state.sessions = json["sessions"].as_u64();
                state.uptime_s = json["uptime_s"].as_u64();
                state.peers_on_other_versions =
                    serde_json::from_value(json["peers_on_other_versions"].clone())
                        .unwrap_or_default();
                if let Some(links) = json["links"].as_object() {
                    state.links = links.len() as u64;
                    state.links_up = links
                        .values()
                        .filter(|link| link["up"].as_bool() == Some(true))
                        .count() as u64;
                }
            }
        }
        Ok(answer) => state.error = Some(format!("/status: {}", error_text(&answer))),
        Err(err) => state.error = Some(format!("/status: {err}")),
    }
    state
}

async fn status(args: FleetArgs) -> CliResult {
    let target = target(&args)?;
    let expected = target.fleet.policy_version().to_string();
    let states = futures_util::future::join_all(
        target
            .fleet
            .nodes
            .values()
            .map(|node| node_state(node, &target)),
    )
    .await;
    let other_version: Vec<&NodeState> = states
        .iter()
        .filter(|state| state.reachable && state.policy_version.as_deref() != Some(&expected))
        .collect();
    let unreachable = states.iter().filter(|state| !state.reachable).count();
    if args.json {
        let json = serde_json::json!({
            "config": args.config.config,
            "policy_version": expected,
            "nodes": states,
            "other_version": other_version.iter().map(|state| &state.node).collect::<Vec<_>>(),
        });
        println!("{json}");
    } else {
        print!("{}", status_table(&args.config.config, &expected, &states));
        if other_version.is_empty() {
            println!("every node that answered runs {expected}");
        } else {
            println!("nodes running another version than {expected}:");
            for state in &other_version {
                println!(
                    "  {} runs {}",
                    state.node,
                    state
                        .policy_version
                        .as_deref()
                        .unwrap_or("an unknown version")
                );
            }
        }
    }
    if unreachable > 0 {
        return Err(CliError::Runtime(anyhow::anyhow!(
            "{unreachable} of {} nodes did not answer",
            states.len()
        )));
    }
    if !other_version.is_empty() {
        return Err(CliError::Findings(format!(
            "{} of {} nodes run another policy version than {expected}",
            other_version.len(),
            states.len()
        )));
    }
    Ok(())
}

fn status_table(config: &Path, expected: &str, states: &[NodeState]) -> String {
    let mut out = format!(
        "fleet {} (policy version {expected})\n{:<16} {:<8} {:<22} {:<9} {:<6} {:<17} {:>8} {:>6} {:>9}\n",
        config.display(),
        "node",
        "region",
        "admin",
        "health",
        "ready",
        "policy version",
        "sessions",
        "links",
        "uptime s"
    );
    for state in states {
        if !state.reachable {
            out.push_str(&format!(
                "{:<16} {:<8} {:<22} unreachable: {}\n",
                state.node,
                state.region,
                state.admin,
                state.error.as_deref().unwrap_or("no answer")
            ));
            continue;
        }
        let version = state.policy_version.as_deref().unwrap_or("unknown");
        let marker = if version == expected { "" } else { " *" };
        out.push_str(&format!(
            "{:<16} {:<8} {:<22} {:<9} {:<6} {:<17} {:>8} {:>6} {:>9}{}\n",
            state.node,
            state.region,
            state.admin,
            if state.healthy { "ok" } else { "failing" },
            if state.ready { "yes" } else { "no" },
            format!("{version}{marker}"),
            state
                .sessions
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            format!("{}/{}", state.links_up, state.links),
            state
                .uptime_s
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            if state.ready_reasons.is_empty() {
                String::new()
            } else {
                format!("  ({})", state.ready_reasons.join("; "))
            }
        ));
        if !state.peers_on_other_versions.is_empty() {
            let peers: Vec<String> = state
                .peers_on_other_versions
                .iter()
                .map(|peer| {
                    format!(
                        "{} runs {}",
                        peer.node,
                        peer.policy_version
                            .as_deref()
                            .unwrap_or("an unknown version")
                    )
                })
                .collect();
            out.push_str(&format!(
                "{:<16} mesh peers on another version: {}\n",
                "",
                peers.join(", ")
            ));
        }
        if let Some(error) = &state.error {
            out.push_str(&format!("{:<16} {error}\n", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_comes_from_the_config_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("regions.toml");
        std::fs::write(dir.path().join("admin.token"), "s3cret-token\n").unwrap();
        let from_file = admin_token("[admin]\ntoken_file = \"admin.token\"\n", &path).unwrap();
        assert_eq!(from_file.as_deref(), Some("s3cret-token"));
        assert_eq!(admin_token("[regions.eu]\n", &path).unwrap(), None);
        let missing = admin_token("[admin]\ntoken_file = \"absent.token\"\n", &path);
        assert!(
            matches!(missing, Err(CliError::Invalid(message)) if message.contains("admin.token_file"))
        );
        let unset = admin_token(
            "[admin]\ntoken_env = \"GEORELAY_TEST_SURELY_UNSET_TOKEN\"\n",
            &path,
        );
        assert!(
            matches!(unset, Err(CliError::Invalid(message)) if message.contains("GEORELAY_TEST_SURELY_UNSET_TOKEN"))
        );
    }
}
