//! The process-wide Prometheus recorder behind `GET /metrics`, and the names
//! of every georelay metric, so that the relay and the docs use the same
//! strings.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Metric and label names. Every series carries the `node` label, because
/// `serve --all` runs several nodes in one process behind one recorder.
pub mod metric_names {
    /// Accepted QUIC connections (counter), labels `node`, `kind`.
    pub const CONNECTIONS_TOTAL: &str = "georelay_connections_total";
    /// Open client sessions (gauge), labels `node`, `app`.
    pub const SESSIONS: &str = "georelay_sessions";
    /// Media packets received, from clients and peers (counter), labels `node`, `app`.
    pub const PACKETS_IN_TOTAL: &str = "georelay_packets_in_total";
    /// Media packets forwarded, to clients and peers (counter), labels `node`, `app`.
    pub const PACKETS_OUT_TOTAL: &str = "georelay_packets_out_total";
    /// Media bytes received (counter), labels `node`, `app`.
    pub const BYTES_IN_TOTAL: &str = "georelay_bytes_in_total";
    /// Media bytes forwarded (counter), labels `node`, `app`.
    pub const BYTES_OUT_TOTAL: &str = "georelay_bytes_out_total";
    /// Packets dropped instead of delayed (counter), labels `node`, `reason`.
    pub const DROPS_TOTAL: &str = "georelay_drops_total";
    /// Connections or requests refused (counter), labels `node`, `code`
    /// (a stable error code name such as `GEOFENCE_DENIED`).
    pub const REFUSALS_TOTAL: &str = "georelay_refusals_total";
    /// Connections the accept gate refused before or right after the
    /// handshake (counter), labels `node`, `reason` (`node_full`,
    /// `address_full`, `awaiting_hello_full`).
    pub const CONNECTIONS_REFUSED_TOTAL: &str = "georelay_connections_refused_total";
    /// Stateless Retries sent to validate a client address (counter), label
    /// `node`.
    pub const RETRIES_TOTAL: &str = "georelay_retries_total";
    /// QUIC handshake time, from the accept loop taking the connection to
    /// the handshake's end (histogram, seconds), label `node`.
    pub const HANDSHAKE_DURATION_SECONDS: &str = "georelay_handshake_duration_seconds";
    /// Geofence decisions (counter), labels `node`, `app`, `decision`
    /// (`admitted`, `redirected`, `denied`, `route_chosen`,
    /// `route_unavailable`, `revoked`).
    pub const GEOFENCE_DECISIONS_TOTAL: &str = "georelay_geofence_decisions_total";
    /// Mesh links currently up (gauge), label `node`.
    pub const MESH_LINKS_UP: &str = "georelay_mesh_links_up";
    /// Metadata events dropped because the writer's channel was full
    /// (counter), label `node`.
    pub const METADATA_EVENTS_DROPPED_TOTAL: &str = "georelay_metadata_events_dropped_total";
    /// The policy a node enforces (gauge, 1 for the version in force, 0 for
    /// one it enforced before a reload), labels `node` and `version`.
    pub const POLICY_INFO: &str = "georelay_policy_info";

    /// Label: the node id.
    pub const LABEL_NODE: &str = "node";
    /// Label: the app id.
    pub const LABEL_APP: &str = "app";
    /// Label: `client` or `mesh`.
    pub const LABEL_KIND: &str = "kind";
    /// Label: why a packet was dropped.
    pub const LABEL_REASON: &str = "reason";
    /// Label: a stable error code name.
    pub const LABEL_CODE: &str = "code";
    /// Label: a policy version (16 hex characters).
    pub const LABEL_VERSION: &str = "version";
    /// Label: the kind of geofence decision.
    pub const LABEL_DECISION: &str = "decision";

    /// `kind` value of SDK client connections.
    pub const KIND_CLIENT: &str = "client";
    /// `kind` value of browser WebTransport sessions (ALPN `h3`).
    pub const KIND_WEBTRANSPORT: &str = "webtransport";
    /// `kind` value of browser WebSocket fallback sessions.
    pub const KIND_WEBSOCKET: &str = "websocket";
    /// `reason` value of datagrams a WebSocket fallback session's
    /// drop-oldest queue discarded.
    pub const REASON_WEBSOCKET_QUEUE: &str = "websocket_queue";
    /// `kind` value of mesh connections.
    pub const KIND_MESH: &str = "mesh";
}

/// Buckets of the handshake duration histogram, in seconds: 1 ms to 5 s.
pub const HANDSHAKE_BUCKETS_SECONDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How often [`super::serve`] folds histogram samples into their buckets, so
/// memory stays bounded between scrapes.
pub(super) const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global `metrics` recorder (once per process) and returns a
/// handle that renders it. Later calls return the same handle.
///
/// If another recorder was installed first (by an embedding program), the
/// returned handle renders a recorder that receives nothing, and a warning
/// is logged.
pub fn install_metrics_recorder() -> PrometheusHandle {
    HANDLE.get_or_init(build_and_install).clone()
}

/// The handle installed by [`install_metrics_recorder`], if any.
pub(super) fn installed_handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

fn build_and_install() -> PrometheusHandle {
    let builder = PrometheusBuilder::new();
    let builder = match builder.set_buckets_for_metric(
        Matcher::Full(metric_names::HANDSHAKE_DURATION_SECONDS.to_owned()),
        &HANDSHAKE_BUCKETS_SECONDS,
    ) {
        Ok(builder) => builder,
        // Unreachable with a non-empty bucket list; fall back to summaries.
        Err(_) => PrometheusBuilder::new(),
    };
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if let Err(err) = metrics::set_global_recorder(recorder) {
        tracing::warn!(error = %err, "a metrics recorder was already installed; /metrics will be empty");
    }
    describe_metrics();
    super::process::describe();
    handle.run_upkeep();
    handle
}

fn describe_metrics() {
    use metric_names::*;
    describe_counter!(
        CONNECTIONS_TOTAL,
        Unit::Count,
        "QUIC connections accepted, by kind (client or mesh)"
    );
    describe_gauge!(SESSIONS, Unit::Count, "Open client sessions, by app");
    describe_counter!(
        PACKETS_IN_TOTAL,
        Unit::Count,
        "Media packets received from clients and peer nodes, by app"
    );
    describe_counter!(
        PACKETS_OUT_TOTAL,
        Unit::Count,
        "Media packets forwarded to clients and peer nodes, by app"
    );
    describe_counter!(
        BYTES_IN_TOTAL,
        Unit::Bytes,
        "Media bytes received from clients and peer nodes, by app"
    );
    describe_counter!(
        BYTES_OUT_TOTAL,
        Unit::Bytes,
        "Media bytes forwarded to clients and peer nodes, by app"
    );
    describe_counter!(
        DROPS_TOTAL,
        Unit::Count,
        "Packets dropped rather than delayed, by reason"
    );
    describe_counter!(
        REFUSALS_TOTAL,
        Unit::Count,
        "Connections and requests refused, by error code"
    );
    describe_histogram!(
        HANDSHAKE_DURATION_SECONDS,
        Unit::Seconds,
        "QUIC handshake time of accepted connections"
    );
    describe_counter!(
        GEOFENCE_DECISIONS_TOTAL,
        Unit::Count,
        "Geofence decisions, by app and decision"
    );
    describe_gauge!(MESH_LINKS_UP, Unit::Count, "Mesh links currently up");
    describe_counter!(
        METADATA_EVENTS_DROPPED_TOTAL,
        Unit::Count,
        "Metadata events dropped because the store's channel was full"
    );
}
