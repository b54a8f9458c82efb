//! Admin API authentication (`[admin]`): bearer token on mutating endpoints,
//! optional protection of reads, the 401 shape, through `oneshot` (no
//! sockets) and once over real HTTP on loopback; and `serve` refusing to
//! start with a non-loopback admin address and no token.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use futures_util::future::BoxFuture;
use georelay::admin::{
    self, AdminAuth, AdminToken, ChannelSeen, NodeIntrospect, Readiness, ReloadReport, StatusReport,
};
use georelay::config::{AdminTokenSource, Fleet};
use georelay::ids::NodeId;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

const TOKEN: &str = "s3cret-admin-token-for-tests";

/// A node that counts reloads.
#[derive(Default)]
struct CountingNode {
    reloads: AtomicU32,
}

impl NodeIntrospect for CountingNode {
    fn status(&self) -> StatusReport {
        StatusReport {
            node: "eu-fra-1".to_owned(),
            ..StatusReport::default()
        }
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            ready: true,
            reasons: Vec::new(),
        }
    }

    fn reload(&self) -> BoxFuture<'static, Result<ReloadReport, String>> {
        self.reloads.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Ok(ReloadReport {
                message: "reloaded".to_owned(),
                ..ReloadReport::default()
            })
        })
    }

    fn debug_channels(&self) -> Vec<ChannelSeen> {
        Vec::new()
    }
}

fn token_auth(protect_reads: bool) -> AdminAuth {
    AdminAuth::with_token(
        AdminToken::new(TOKEN.as_bytes(), "test").expect("token"),
        protect_reads,
    )
}

async fn call(
    node: &Arc<CountingNode>,
    auth: AdminAuth,
    method: Method,
    uri: &str,
    authorization: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let router = admin::router_with_auth(
        Arc::clone(node) as Arc<dyn NodeIntrospect>,
        admin::install_metrics_recorder(),
        auth,
    );
    let response = router
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, challenge, json)
}

#[tokio::test]
async fn reload_needs_the_bearer_token_and_a_wrong_one_gets_the_401_shape() {
    let node = Arc::new(CountingNode::default());
    let bearer = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {TOKEN}x");
    for (authorization, reason) in [
        (None, "needs Authorization"),
        (Some(wrong.as_str()), "wrong"),
        (Some(TOKEN), "needs Authorization"),
    ] {
        let (status, challenge, body) = call(
            &node,
            token_auth(false),
            Method::POST,
            "/reload",
            authorization,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        assert_eq!(body["error"], json!("UNAUTHORIZED"));
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(reason)),
            "{body}"
        );
        assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
    }
    assert_eq!(node.reloads.load(Ordering::SeqCst), 0, "nothing reloaded");

    let (status, _, body) = call(
        &node,
        token_auth(false),
        Method::POST,
        "/reload",
        Some(&bearer),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], json!("reloaded"));
    assert_eq!(node.reloads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn reads_are_open_unless_protect_reads() {
    let node = Arc::new(CountingNode::default());
    for uri in [
        "/status",
        "/metrics",
        "/healthz",
        "/readyz",
        "/debug/channels",
    ] {
        let (open, _, _) = call(&node, token_auth(false), Method::GET, uri, None).await;
        assert_eq!(open, StatusCode::OK, "{uri}");
        let (closed, challenge, _) = call(&node, token_auth(true), Method::GET, uri, None).await;
        assert_eq!(closed, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        let bearer = format!("Bearer {TOKEN}");
        let (granted, _, _) = call(&node, token_auth(true), Method::GET, uri, Some(&bearer)).await;
        assert_eq!(granted, StatusCode::OK, "{uri}");
    }
}

/// Sends one raw HTTP/1.1 request to `addr`, returns the status line and body.
async fn http(addr: std::net::SocketAddr, request: &str) -> (String, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("answer in time");
    let status = answer.lines().next().unwrap_or("").to_owned();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn over_http_the_token_from_a_file_guards_reload() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("token file");
    let token = AdminToken::resolve(&AdminTokenSource::File(path)).expect("token from file");
    let node = Arc::new(CountingNode::default());
    let router = admin::router_with_auth(
        Arc::clone(&node) as Arc<dyn NodeIntrospect>,
        admin::install_metrics_recorder(),
        AdminAuth::with_token(token, false),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(admin::serve(listener, router, async {
        let _ = stopped.await;
    }));

    let (status, body) = http(
        addr,
        "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains("401"), "{status}");
    let body: Value = serde_json::from_str(&body).expect("JSON 401 body");
    assert_eq!(body["error"], json!("UNAUTHORIZED"));

    let request = format!(
        "POST /reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (status, _) = http(addr, &request).await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(node.reloads.load(Ordering::SeqCst), 1);

    let _ = stop.send(());
    server.await.expect("join").expect("served");
}

const EXPOSED: &str = r#"
[regions.eu]
countries = ["DE"]
[nodes.eu-fra-1]
region = "eu"
listen = "127.10.0.1:4433"
admin = "192.0.2.10:9090"
"#;

#[test]
fn serve_refuses_a_non_loopback_admin_address_without_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("regions.toml");
    std::fs::write(&config, EXPOSED).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_georelay"))
        .args(["serve", "--node", "eu-fra-1", "--config"])
        .arg(&config)
        .output()
        .expect("run serve");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("eu-fra-1") && stderr.contains("192.0.2.10:9090"),
        "{stderr}"
    );

    let fleet = Fleet::parse(EXPOSED, Path::new("regions.toml")).expect("valid");
    assert!(admin::check_admin_exposure(&fleet, &[NodeId::new("eu-fra-1")]).is_err());
    let guarded = format!("{EXPOSED}\n[admin]\ntoken_env = \"GEORELAY_TEST_ADMIN_TOKEN_UNSET\"\n");
    let fleet = Fleet::parse(&guarded, Path::new("regions.toml")).expect("valid");
    let err = admin::check_admin_exposure(&fleet, &[]).expect_err("variable unset");
    assert!(
        err.to_string().contains("GEORELAY_TEST_ADMIN_TOKEN_UNSET"),
        "{err}"
    );
}

#[test]
fn admin_table_errors_have_positions() {
    let both = format!("{EXPOSED}\n[admin]\ntoken_env = \"A\"\ntoken_file = \"a\"\n");
    let errors = Fleet::parse(&both, Path::new("regions.toml")).expect_err("both");
    assert!(
        errors
            .to_string()
            .contains("admin.token_file: set token_env or token_file, not both"),
        "{errors}"
    );
    let reads = format!("{EXPOSED}\n[admin]\nprotect_reads = true\n");
    let errors = Fleet::parse(&reads, Path::new("regions.toml")).expect_err("no token");
    assert!(
        errors
            .to_string()
            .contains("admin.protect_reads: protect_reads = true needs a token"),
        "{errors}"
    );
    let typo = format!("{EXPOSED}\n[admin]\ntoken_evn = \"A\"\n");
    let errors = Fleet::parse(&typo, Path::new("regions.toml")).expect_err("typo");
    assert!(
        errors.to_string().contains("did you mean \"token_env\""),
        "{errors}"
    );
}
