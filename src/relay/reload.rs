//! The one reload path of a serving process: SIGHUP and `POST /reload`
//! both call [`Reloader::reload`], which runs [`Reloader::reload_blocking`]
//! on tokio's blocking pool (file reads, secret resolution, opening the
//! GeoIP database and checking TLS files never stall the async workers).
//!
//! A reload re-reads, in order, and applies only if every step succeeds:
//! 1. the configuration file (regions, nodes, links, apps), with every
//!    problem reported as `file:line:column`;
//! 2. each app's token secret (`secret_env`, `secret_file`);
//! 3. the GeoIP database and overrides;
//! 4. the TLS files named by `[tls]` (CA and node certificates), checked;
//! 5. then puts the new policy in force on every node of the process
//!    (sessions no longer allowed are revoked, routes recomputed), rotates
//!    each node's TLS material to those files ([`NodeTls::reload_from_files`]:
//!    new handshakes use it, open connections continue), and calls every
//!    [`Reloader::on_applied`] hook (metadata retention).
//!
//! An invalid file leaves the old policy in force and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::admin::ReloadReport;
use crate::ids::NodeId;

use crate::tls::NodeTls;

use super::hub::Hub;
use super::policy::{Policy, PolicyError};

/// Why a reload was refused; the old policy stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration, a secret or the GeoIP database is invalid; the
    /// message lists every problem (`file:line:column` for the file).
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// A TLS file named by `[tls]` is missing or invalid.
    #[error("{path}: {source}")]
    Tls {
        /// The configuration file whose `[tls]` names the files.
        path: PathBuf,
        /// What is wrong.
        source: crate::tls::TlsError,
    },
    /// The blocking reload task failed to run.
    #[error("reload task failed: {0}")]
    Task(String),
}

/// Where the new configuration comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadSource {
    /// The configuration file the process was started with, re-read.
    ConfigFile,
}

/// Called with the policy just put in force (after every node has it).
pub type AppliedHook = Box<dyn Fn(&Policy) + Send + Sync>;

/// Everything one reload touches in a serving process: see the module docs.
pub struct Reloader {
    path: PathBuf,
    hubs: Mutex<Vec<Arc<Hub>>>,
    node_tls: Mutex<Vec<NodeTls>>,
    hooks: Mutex<Vec<AppliedHook>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader of the configuration at `path`, with no node yet.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            hubs: Mutex::new(Vec::new()),
            node_tls: Mutex::new(Vec::new()),
            hooks: Mutex::new(Vec::new()),
        }
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a node that reloads put their policy in force on.
    pub fn add_hub(&self, hub: Arc<Hub>) {
        self.hubs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(hub);
    }

    /// Adds a node's TLS material, rotated to the `[tls]` files on reload.
    pub fn add_node_tls(&self, tls: NodeTls) {
        self.node_tls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tls);
    }

    /// Runs `hook` after every successful reload (e.g. metadata retention).
    pub fn on_applied(&self, hook: impl Fn(&Policy) + Send + Sync + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(hook));
    }

    /// Reloads off the async workers (tokio's blocking pool).
    pub async fn reload(
        self: Arc<Self>,
        source: ReloadSource,
    ) -> Result<ReloadReport, ReloadError> {
        tokio::task::spawn_blocking(move || self.reload_blocking(&source))
            .await
            .map_err(|e| ReloadError::Task(e.to_string()))?
    }

    /// The reload itself, blocking: see the module docs.
    pub fn reload_blocking(&self, source: &ReloadSource) -> Result<ReloadReport, ReloadError> {
        let policy = match source {
            ReloadSource::ConfigFile => Policy::load(&self.path)?,
        };
        let tls_checked = self.check_tls(&policy)?;
        let policy = Arc::new(policy);
        let hubs = self
            .hubs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut report = ReloadReport {
            policy_version: policy.version.to_string(),
            ..ReloadReport::default()
        };
        for hub in &hubs {
            let applied = hub.set_policy(Arc::clone(&policy));
            report.revoked_sessions += applied.revoked_sessions;
            report.rerouted += applied.rerouted;
        }
        let tls_failures = self.rotate_tls(&policy);
        for hook in self
            .hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            hook(&policy);
        }
        report.message = format!(
            "policy reloaded from {} on {} node(s): {} app(s), GeoIP {}, TLS files {}; {} session(s) revoked",
            self.path.display(),
            hubs.len(),
            policy.fleet.apps.len(),
            policy.fleet.geoip.database.as_ref().map_or(
                "overrides only".to_string(),
                |db| format!("database {}", db.display())
            ),
            if tls_checked {
                "checked"
            } else {
                "not configured (dev CA)"
            },
            report.revoked_sessions
        );
        for failure in tls_failures {
            report.message.push_str("; ");
            report.message.push_str(&failure);
        }
        tracing::info!(message = %report.message, "reload");
        Ok(report)
    }

    /// Checks the `[tls]` files for every node of this process, if the
    /// configuration names them; `false` when it does not (dev CA).
    /// Re-reads each node's TLS files as `policy` names them: new handshakes
    /// use the new material, open connections continue. A node whose files
    /// do not load keeps its old material; the failures are returned for the
    /// report.
    fn rotate_tls(&self, policy: &Policy) -> Vec<String> {
        self.node_tls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|tls| match tls.reload_from_files(&policy.fleet) {
                Ok(rotation) => {
                    if rotation.changed() {
                        tracing::info!(?rotation, "TLS material rotated");
                    }
                    None
                }
                Err(err) => {
                    tracing::error!(%err, "TLS reload failed; the old certificate stays in force");
                    Some(format!(
                        "TLS reload failed, the old certificate stays: {err}"
                    ))
                }
            })
            .collect()
    }

    fn check_tls(&self, policy: &Policy) -> Result<bool, ReloadError> {
        if policy.fleet.tls.ca.is_none() {
            return Ok(false);
        }
        let nodes: Vec<NodeId> = self
            .hubs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|h| h.me().clone())
            .collect();
        for node in &nodes {
            crate::tls::FleetPki::from_fleet_for(&policy.fleet, node).map_err(|source| {
                ReloadError::Tls {
                    path: self.path.clone(),
                    source,
                }
            })?;
        }
        Ok(true)
    }
}
