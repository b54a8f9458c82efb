//! The per-node admin HTTP surface, served on the node's `admin` address:
//!
//! | Route                 | Answer                                                |
//! |-----------------------|-------------------------------------------------------|
//! | `GET /metrics`        | Prometheus text (`text/plain; version=0.0.4`)         |
//! | `GET /healthz`        | 200 `ok` while the process runs                       |
//! | `GET /readyz`         | 200 or 503, JSON [`Readiness`] with the reasons       |
//! | `GET /status`         | JSON [`StatusReport`] (DESIGN.md, "Admin HTTP")       |
//! | `POST /reload`        | 200 [`ReloadReport`], or 400 with validation errors; 401 without the admin token |
//! | `GET /debug/channels` | JSON list of [`ChannelSeen`]                          |
//!
//! Any other path is 404; a known path with another method is 405. The
//! relay supplies the data through [`NodeIntrospect`]; this module owns only
//! HTTP, its authentication ([`AdminAuth`], see [`auth`]), the Prometheus
//! recorder and the metric names. `/metrics` also carries the process's own
//! figures ([`process`]).

pub mod auth;
pub mod process;
mod recorder;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

pub use self::auth::{AdminAuth, AdminAuthError, AdminToken, check_admin_exposure};
pub use self::recorder::{HANDSHAKE_BUCKETS_SECONDS, install_metrics_recorder, metric_names};

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What the admin surface asks of a running node.
pub trait NodeIntrospect: Send + Sync + 'static {
    /// The node's counters for `GET /status`.
    fn status(&self) -> StatusReport;
    /// Whether the node should receive traffic, for `GET /readyz`.
    fn readiness(&self) -> Readiness;
    /// Re-reads and validates the configuration, then applies it. `Err`
    /// carries the validation errors; the old policy then stays in force.
    fn reload(&self) -> BoxFuture<'static, Result<ReloadReport, String>>;
    /// `POST /reload` with a body: validates `config` (a complete
    /// regions.toml; diagnostics name it `<request body>`), writes it over
    /// the node's config file atomically and applies it like
    /// [`NodeIntrospect::reload`]. The default refuses (a node without a
    /// config file to replace).
    fn reload_with_config(
        &self,
        config: String,
    ) -> BoxFuture<'static, Result<ReloadReport, String>> {
        let _ = config;
        Box::pin(async { Err("this node does not accept a pushed configuration".to_owned()) })
    }
    /// Every (app, channel) name this node has ever seen, for leak tests.
    fn debug_channels(&self) -> Vec<ChannelSeen>;
    /// Copies counters the node keeps itself into the metrics recorder, just
    /// before `/metrics` renders. The default does nothing.
    fn export_metrics(&self) {}
}

/// `GET /status`: who the node is and what it carried.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct StatusReport {
    /// The node id.
    pub node: String,
    /// The node's region id.
    pub region: String,
    /// The version of the policy the node enforces (16 hex characters).
    pub policy_version: String,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Open client sessions.
    pub sessions: u64,
    /// Media counters by app id, from clients and peers alike.
    pub apps: BTreeMap<String, AppTraffic>,
    /// Mesh links by peer node id.
    pub links: BTreeMap<String, LinkStatus>,
    /// Dropped packets by reason.
    pub drops: BTreeMap<String, u64>,
    /// Connected mesh peers whose `PEER_HELLO` named another policy version
    /// than this node's (or none: an older georelay), by node id.
    #[serde(default)]
    pub peers_on_other_versions: Vec<PeerVersion>,
}

/// A mesh peer and the policy version it reported.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerVersion {
    /// The peer's node id.
    pub node: String,
    /// The version it enforces; `None` when its `PEER_HELLO` had none.
    pub policy_version: Option<String>,
}

/// One app's media counters on one node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppTraffic {
    /// Media packets received (from clients and peers).
    pub packets_in: u64,
    /// Media packets forwarded (to clients and peers).
    pub packets_out: u64,
    /// Media bytes received.
    pub bytes_in: u64,
    /// Media bytes forwarded.
    pub bytes_out: u64,
}

/// The state of one mesh link.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkStatus {
    /// Whether the link is connected.
    pub up: bool,
    /// The measured round-trip time, when up.
    pub rtt_ms: Option<f64>,
}

/// `GET /readyz`: ready, or the reasons why not.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Whether the node should receive traffic.
    pub ready: bool,
    /// Why not (e.g. `mesh link to us-iad-1 down`); empty when ready.
    pub reasons: Vec<String>,
}

/// `POST /reload`: what applying the new configuration did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Sessions closed with `GEOFENCE_REVOKED`.
    pub revoked_sessions: u64,
    /// Routes torn down and recomputed.
    pub rerouted: u64,
    /// The version of the policy now in force (16 hex characters).
    pub policy_version: String,
    /// A human summary.
    pub message: String,
}

/// An (app, channel) name a node has seen, from a client or a peer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelSeen {
    /// The app id.
    pub app: String,
    /// The channel name.
    pub channel: String,
}

/// The body of a 400 answer to `POST /reload`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReloadRejected {
    /// Always `"invalid configuration"`.
    pub error: String,
    /// The validation errors, one per line, as `georelay check` prints them.
    pub details: String,
}

#[derive(Clone)]
struct AdminState {
    node: Arc<dyn NodeIntrospect>,
    metrics: PrometheusHandle,
}

/// The admin routes over `node`, rendering metrics from `metrics`, without
/// a token: reads are open and mutating endpoints are served only when the
/// listener is on loopback. Nodes with `[admin]` configured use
/// [`router_with_auth`].
pub fn router(node: Arc<dyn NodeIntrospect>, metrics: PrometheusHandle) -> Router {
    router_with_auth(node, metrics, AdminAuth::without_token())
}

/// The admin routes over `node`, each request checked by `auth` first.
pub fn router_with_auth(
    node: Arc<dyn NodeIntrospect>,
    metrics: PrometheusHandle,
    auth: AdminAuth,
) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(get_healthz))
        .route("/readyz", get(get_readyz))
        .route("/status", get(get_status))
        .route("/reload", post(post_reload))
        .route("/debug/channels", get(get_debug_channels))
        .with_state(AdminState { node, metrics })
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::require_auth,
        ))
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes
/// the requests in flight. While serving it also runs the metrics
/// recorder's upkeep, which bounds histogram memory between scrapes. Every
/// request learns whether the listener is on loopback (the rule for
/// mutating endpoints without a token).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let loopback = listener
        .local_addr()
        .map(|addr| addr.ip().to_canonical().is_loopback())?;
    let router = router.layer(axum::Extension(auth::ListenerIsLoopback(loopback)));
    let (stop_upkeep, upkeep_stopped) = tokio::sync::oneshot::channel::<()>();
    let upkeep = recorder::installed_handle().map(|handle| {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(recorder::UPKEEP_INTERVAL);
            tokio::pin!(upkeep_stopped);
            loop {
                tokio::select! {
                    _ = &mut upkeep_stopped => break,
                    _ = ticks.tick() => handle.run_upkeep(),
                }
            }
        })
    });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    // The receiver may be gone if no recorder is installed; nothing to stop then.
    let _ = stop_upkeep.send(());
    if let Some(upkeep) = upkeep {
        // A panicked upkeep task has nothing left to clean up.
        let _ = upkeep.await;
    }
    served
}

async fn get_metrics(State(state): State<AdminState>) -> Response {
    state.node.export_metrics();
    process::collect();
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn get_healthz() -> &'static str {
    "ok"
}

async fn get_readyz(State(state): State<AdminState>) -> Response {
    let readiness = state.node.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

async fn get_status(State(state): State<AdminState>) -> axum::Json<StatusReport> {
    axum::Json(state.node.status())
}

/// The media type of a configuration pushed to `POST /reload`.
pub const TOML_CONTENT_TYPE: &str = "application/toml";

async fn post_reload(
    State(state): State<AdminState>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    let outcome = if body.is_empty() {
        state.node.reload().await
    } else {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim);
        if content_type != Some(TOML_CONTENT_TYPE) {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                axum::Json(ReloadRejected {
                    error: "unsupported media type".to_owned(),
                    details: format!("a pushed configuration must be sent as {TOML_CONTENT_TYPE}"),
                }),
            )
                .into_response();
        }
        state.node.reload_with_config(body).await
    };
    match outcome {
        Ok(report) => (StatusCode::OK, axum::Json(report)).into_response(),
        Err(details) => (
            StatusCode::BAD_REQUEST,
            axum::Json(ReloadRejected {
                error: "invalid configuration".to_owned(),
                details,
            }),
        )
            .into_response(),
    }
}

async fn get_debug_channels(State(state): State<AdminState>) -> axum::Json<Vec<ChannelSeen>> {
    axum::Json(state.node.debug_channels())
}
