//! Admission of a client session, sans-IO: the four checks of the contract,
//! in order, as one pure function over the policy snapshot.
//!
//! 1. the token (signature, expiry, app and channel of the `HELLO`);
//! 2. the client's country, from its source address;
//! 3. the app's client-country rules (`GEOFENCE_DENIED`);
//! 4. whether this node's region is allowed for the app; if not,
//!    `GEOFENCE_REDIRECT` to the nearest allowed nodes (the routing core's
//!    [`crate::routing::Topology::nearest_allowed`]).

use std::net::{IpAddr, SocketAddr};

use crate::auth::{Claims, TokenError};
use crate::config::UnknownCountry;
use crate::error::ErrorCode;
use crate::ids::{AppId, CountryCode, NodeId, RegionId};
use crate::wire::PROTOCOL_VERSION;

use super::policy::Policy;

/// How many redirect targets a refusal carries at most.
pub const REDIRECT_TARGETS: usize = 3;

/// What a client asks for in its `HELLO`.
#[derive(Clone, Debug)]
pub struct AdmissionRequest<'a> {
    /// Protocol version the client speaks.
    pub version: u64,
    /// The app the client says it belongs to.
    pub app: &'a str,
    /// The channel it wants to join.
    pub channel: &'a str,
    /// Its signed token.
    pub token: &'a str,
    /// Its source address as the node sees it.
    pub client_ip: IpAddr,
}

/// A client that passed every check.
#[derive(Clone, Debug)]
pub struct Admitted {
    /// The verified token claims.
    pub claims: Claims,
    /// The client's geolocated country, if known.
    pub country: Option<CountryCode>,
    /// The region of that country, if any region lists it.
    pub client_region: Option<RegionId>,
}

/// A refusal: the code, a human reason, and where to go instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The stable error code.
    pub code: ErrorCode,
    /// Why, for humans; never contains the token or the client's address.
    pub message: String,
    /// Nodes to try instead (redirects and revocations).
    pub redirect: Vec<(NodeId, SocketAddr)>,
}

impl Refusal {
    /// A refusal without redirect targets.
    pub fn plain(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            redirect: Vec::new(),
        }
    }
}

impl From<TokenError> for Refusal {
    fn from(err: TokenError) -> Self {
        Refusal::plain(err.code(), format!("token rejected: {err}"))
    }
}

/// Runs the admission checks for a client connecting to node `me`.
pub fn admit(
    policy: &Policy,
    me: &NodeId,
    request: &AdmissionRequest<'_>,
    now_unix: u64,
) -> Result<Admitted, Refusal> {
    if request.version != PROTOCOL_VERSION {
        return Err(Refusal::plain(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not supported; this node speaks {PROTOCOL_VERSION}",
                request.version
            ),
        ));
    }
    let app_id = AppId::new(request.app);
    let claims = policy
        .keyring
        .verify(request.token, Some(&app_id), now_unix)?;
    if claims.channel != request.channel {
        return Err(Refusal::plain(
            ErrorCode::Unauthorized,
            "token rejected: it grants another channel",
        ));
    }
    let Some(app) = policy.fleet.app(request.app) else {
        return Err(Refusal::plain(
            ErrorCode::Unauthorized,
            "token rejected: unknown app",
        ));
    };

    let country = policy.geo.lookup(request.client_ip);
    let client_region = country
        .and_then(|c| policy.fleet.region_of_country(c))
        .cloned();
    match country {
        Some(country) if !app.client_countries.allows(country) => {
            return Err(Refusal::plain(
                ErrorCode::GeofenceDenied,
                format!("clients in {country} may not use app {}", app.id),
            ));
        }
        None if app.unknown_client_country == UnknownCountry::Deny => {
            return Err(Refusal::plain(
                ErrorCode::GeofenceDenied,
                format!("app {} refuses clients whose country is unknown", app.id),
            ));
        }
        _ => {}
    }

    if !policy.node_allowed(&app.id, me) {
        let mut refusal = Refusal::plain(
            ErrorCode::GeofenceRedirect,
            format!("node {me} is outside the regions app {} allows", app.id),
        );
        refusal.redirect = redirect_targets(policy, &app.id, client_region.as_ref(), me);
        return Err(refusal);
    }
    Ok(Admitted {
        claims,
        country,
        client_region,
    })
}

/// The nearest allowed nodes other than `me`, with their client addresses.
pub fn redirect_targets(
    policy: &Policy,
    app: &AppId,
    client_region: Option<&RegionId>,
    me: &NodeId,
) -> Vec<(NodeId, SocketAddr)> {
    let Some(allowed) = policy.allowed(app) else {
        return Vec::new();
    };
    policy
        .topology
        .nearest_allowed(allowed, client_region, me, REDIRECT_TARGETS + 1)
        .into_iter()
        .filter(|node| node != me)
        .filter_map(|node| {
            let listen = policy.fleet.nodes.get(node.as_str())?.listen;
            Some((node, listen))
        })
        .take(REDIRECT_TARGETS)
        .collect()
}

/// Redirect targets in wire form.
pub fn targets_to_wire(targets: &[(NodeId, SocketAddr)]) -> Vec<crate::wire::Target> {
    targets
        .iter()
        .map(|(node, addr)| crate::wire::Target {
            node: node.to_string(),
            addr: addr.to_string(),
        })
        .collect()
}
