//! The admin HTTP surface against a fake node: routes, status codes, JSON
//! shapes and the Prometheus text, through `oneshot` (no sockets), plus one
//! real loopback request through `serve`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use futures_util::future::BoxFuture;
use georelay::admin::{
    self, AppTraffic, ChannelSeen, LinkStatus, NodeIntrospect, Readiness, ReloadReport,
    StatusReport, metric_names,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

/// A node whose answers the test sets.
#[derive(Default)]
struct FakeNode {
    readiness: Mutex<Readiness>,
    reload_outcome: Mutex<Option<Result<ReloadReport, String>>>,
    reloads: Mutex<u32>,
}

impl NodeIntrospect for FakeNode {
    fn status(&self) -> StatusReport {
        StatusReport {
            node: "eu-fra-1".to_owned(),
            region: "eu".to_owned(),
            policy_version: "0123456789abcdef".to_owned(),
            uptime_s: 12,
            sessions: 3,
            apps: BTreeMap::from([(
                "acme-health".to_owned(),
                AppTraffic {
                    packets_in: 10,
                    packets_out: 20,
                    bytes_in: 9000,
                    bytes_out: 18000,
                },
            )]),
            links: BTreeMap::from([(
                "us-iad-1".to_owned(),
                LinkStatus {
                    up: true,
                    rtt_ms: Some(80.5),
                },
            )]),
            drops: BTreeMap::from([("slow_subscriber".to_owned(), 4)]),
            peers_on_other_versions: vec![georelay::admin::PeerVersion {
                node: "us-iad-1".to_owned(),
                policy_version: Some("fedcba9876543210".to_owned()),
            }],
        }
    }

    fn readiness(&self) -> Readiness {
        self.readiness.lock().expect("lock").clone()
    }

    fn reload(&self) -> BoxFuture<'static, Result<ReloadReport, String>> {
        *self.reloads.lock().expect("lock") += 1;
        let outcome = self
            .reload_outcome
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_else(|| Err("no outcome set".to_owned()));
        Box::pin(async move { outcome })
    }

    fn debug_channels(&self) -> Vec<ChannelSeen> {
        vec![ChannelSeen {
            app: "acme-health".to_owned(),
            channel: "ward-7".to_owned(),
        }]
    }
}

fn app(node: Arc<FakeNode>) -> axum::Router {
    admin::router(node, admin::install_metrics_recorder())
}

async fn call(node: Arc<FakeNode>, method: Method, uri: &str) -> (StatusCode, String, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let response = app(node).oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).expect("JSON body")
}

#[tokio::test]
async fn status_has_the_contract_shape_with_links_and_drops() {
    let (status, content_type, body) =
        call(Arc::new(FakeNode::default()), Method::GET, "/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    assert_eq!(
        json_of(&body),
        json!({
            "node": "eu-fra-1", "region": "eu", "policy_version": "0123456789abcdef",
            "uptime_s": 12, "sessions": 3,
            "apps": {"acme-health": {"packets_in": 10, "packets_out": 20,
                                     "bytes_in": 9000, "bytes_out": 18000}},
            "links": {"us-iad-1": {"up": true, "rtt_ms": 80.5}},
            "drops": {"slow_subscriber": 4},
            "peers_on_other_versions": [{"node": "us-iad-1", "policy_version": "fedcba9876543210"}]
        })
    );
    let parsed: StatusReport = serde_json::from_str(&body).expect("round trip");
    assert_eq!(parsed, FakeNode::default().status());
}

#[tokio::test]
async fn readyz_answers_503_with_reasons_until_ready() {
    let node = Arc::new(FakeNode::default());
    *node.readiness.lock().expect("lock") = Readiness {
        ready: false,
        reasons: vec!["mesh link to us-iad-1 down".to_owned()],
    };
    let (status, _, body) = call(node.clone(), Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json_of(&body),
        json!({"ready": false, "reasons": ["mesh link to us-iad-1 down"]})
    );

    *node.readiness.lock().expect("lock") = Readiness {
        ready: true,
        reasons: Vec::new(),
    };
    let (status, _, body) = call(node, Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["ready"], json!(true));
}

#[tokio::test]
async fn healthz_and_debug_channels() {
    let node = Arc::new(FakeNode::default());
    let (status, _, body) = call(node.clone(), Method::GET, "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let (status, _, body) = call(node, Method::GET, "/debug/channels").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json_of(&body),
        json!([{"app": "acme-health", "channel": "ward-7"}])
    );
}

#[tokio::test]
async fn reload_reports_success_or_propagates_validation_errors() {
    let node = Arc::new(FakeNode::default());
    let errors = "regions.toml:12:5: apps.acme.allow_regions[1]: unknown region \"mars\"\n\
                  regions.toml:20:1: nodes.x.region: unknown region \"moon\"";
    *node.reload_outcome.lock().expect("lock") = Some(Err(errors.to_owned()));
    let (status, _, body) = call(node.clone(), Method::POST, "/reload").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let rejected = json_of(&body);
    assert_eq!(rejected["error"], json!("invalid configuration"));
    assert_eq!(rejected["details"], json!(errors));

    let report = ReloadReport {
        revoked_sessions: 2,
        rerouted: 5,
        policy_version: "0123456789abcdef".to_owned(),
        message: "policy reloaded".to_owned(),
    };
    *node.reload_outcome.lock().expect("lock") = Some(Ok(report.clone()));
    let (status, _, body) = call(node.clone(), Method::POST, "/reload").await;
    assert_eq!(status, StatusCode::OK);
    let parsed: ReloadReport = serde_json::from_str(&body).expect("report");
    assert_eq!(parsed, report);
    assert_eq!(*node.reloads.lock().expect("lock"), 2);
}

#[tokio::test]
async fn metrics_render_what_was_recorded_as_prometheus_text() {
    let first = admin::install_metrics_recorder();
    // Idempotent: a second install renders the same recorder.
    let again = admin::install_metrics_recorder();
    metrics::counter!(
        metric_names::PACKETS_IN_TOTAL,
        metric_names::LABEL_NODE => "metrics-test-node",
        metric_names::LABEL_APP => "acme-health"
    )
    .increment(7);
    metrics::histogram!(
        metric_names::HANDSHAKE_DURATION_SECONDS,
        metric_names::LABEL_NODE => "metrics-test-node"
    )
    .record(0.003);
    assert!(first.render().contains("metrics-test-node"));
    assert!(again.render().contains("metrics-test-node"));

    let (status, content_type, body) =
        call(Arc::new(FakeNode::default()), Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/plain; version=0.0.4");
    assert!(
        body.contains(
            "georelay_packets_in_total{node=\"metrics-test-node\",app=\"acme-health\"} 7"
        ),
        "{body}"
    );
    assert!(
        body.contains("# TYPE georelay_packets_in_total counter"),
        "{body}"
    );
    assert!(
        body.contains("# HELP georelay_packets_in_total"),
        "metrics are described: {body}"
    );
    assert!(
        body.contains(
            "georelay_handshake_duration_seconds_bucket{node=\"metrics-test-node\",le=\"0.005\"} 1"
        ),
        "handshake buckets: {body}"
    );
    assert!(
        body.contains(
            "georelay_handshake_duration_seconds_bucket{node=\"metrics-test-node\",le=\"0.0025\"} 0"
        ),
        "handshake buckets: {body}"
    );
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let node = Arc::new(FakeNode::default());
    let (status, _, _) = call(node.clone(), Method::GET, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(node.clone(), Method::GET, "/reload").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = call(node.clone(), Method::POST, "/status").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = call(node.clone(), Method::DELETE, "/metrics").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(*node.reloads.lock().expect("lock"), 0);
}

#[tokio::test]
async fn serve_answers_on_loopback_and_stops_on_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(admin::serve(
        listener,
        app(Arc::new(FakeNode::default())),
        async move {
            let _ = stopped.await;
        },
    ));

    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("answered in time")
    .expect("read");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("ok"), "{response}");

    stop.send(()).expect("server still running");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops in time")
        .expect("task")
        .expect("serve ok");
}
