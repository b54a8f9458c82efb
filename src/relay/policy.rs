//! The policy snapshot a node runs under: the validated fleet, each app's
//! allowed regions, token keys and the geo lookup.
//!
//! A snapshot is immutable; a reload builds a new one and swaps it in, so a
//! packet or a decision always sees one consistent policy.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::auth::Keyring;
use crate::config::{AppSecretError, ConfigErrors, Fleet, PolicyVersion};
use crate::geo::{Geo, GeoError};
use crate::ids::{AppId, NodeId};
use crate::routing::{AllowedRegions, Topology};

/// Why a policy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The configuration file is invalid; every problem is listed.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// An app's token secret could not be resolved (e.g. unset variable).
    #[error(transparent)]
    Secret(#[from] AppSecretError),
    /// The GeoIP database could not be opened.
    #[error(transparent)]
    Geo(#[from] GeoError),
}

/// One consistent policy: see the module docs.
#[derive(Debug)]
pub struct Policy {
    /// The validated configuration.
    pub fleet: Arc<Fleet>,
    /// The configured topology with every link up: used for redirects.
    pub topology: Topology,
    /// Token keys of every app.
    pub keyring: Keyring,
    /// Client geolocation.
    pub geo: Arc<Geo>,
    /// The version of this policy ([`Fleet::policy_version`]), computed
    /// once per load.
    pub version: PolicyVersion,
    allowed: BTreeMap<AppId, AllowedRegions>,
}

impl Policy {
    /// Loads and validates `path`, resolves every app's secret and opens the
    /// GeoIP database.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        Self::from_fleet(Fleet::load(path)?)
    }

    /// Builds a policy from an already validated fleet.
    pub fn from_fleet(fleet: Fleet) -> Result<Self, PolicyError> {
        let keyring = Keyring::from_fleet(&fleet)?;
        let geo = Arc::new(Geo::from_config(&fleet.geoip)?);
        let allowed = fleet
            .apps
            .values()
            .map(|app| {
                (
                    app.id.clone(),
                    AllowedRegions::from(fleet.allowed_regions(app)),
                )
            })
            .collect();
        Ok(Self {
            topology: Topology::from_fleet(&fleet),
            version: fleet.policy_version(),
            fleet: Arc::new(fleet),
            keyring,
            geo,
            allowed,
        })
    }

    /// The regions an app may touch; `None` for an unknown app.
    pub fn allowed(&self, app: &AppId) -> Option<&AllowedRegions> {
        self.allowed.get(app)
    }

    /// Whether `node` may carry anything of `app`. Unknown apps and unknown
    /// nodes are never allowed.
    pub fn node_allowed(&self, app: &AppId, node: &NodeId) -> bool {
        match (self.allowed.get(app), self.fleet.nodes.get(node.as_str())) {
            (Some(allowed), Some(node)) => allowed.allows(&node.region),
            _ => false,
        }
    }
}
