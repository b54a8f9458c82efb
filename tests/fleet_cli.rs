//! `georelay fleet reload|status` against nodes' admin APIs. Each node here
//! is an in-process admin server that follows the contract (bearer token,
//! `POST /reload` with the config as body validated and written by
//! `config::apply_pushed_config` over the node's own copy of the file,
//! `/status` with the `policy_version` of that copy), so the tests show the
//! client's side: a rollout moves every node to the new version, a missing
//! token, a down node and an invalid file are reported as the contract says.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use georelay::config::{Fleet, PushedConfigError, apply_pushed_config};
use serde_json::{Value, json};

const TOKEN: &str = "fleet-test-token-7f2c";
const TOKEN_ENV: &str = "GEORELAY_FLEET_TEST_TOKEN";

struct NodeServer {
    id: &'static str,
    region: &'static str,
    config: PathBuf,
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {TOKEN}").as_str())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(json!({"error": "UNAUTHORIZED", "message": "missing or wrong bearer token"})),
    )
        .into_response()
}

async fn reload(State(node): State<Arc<NodeServer>>, headers: HeaderMap, body: String) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    match apply_pushed_config(&node.config, &body) {
        Ok(fleet) => axum::Json(json!({
            "revoked_sessions": 0,
            "rerouted": 0,
            "message": "applied",
            "policy_version": fleet.policy_version().to_string(),
        }))
        .into_response(),
        Err(PushedConfigError::Invalid(errors)) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid configuration", "details": errors.to_string()})),
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn status(State(node): State<Arc<NodeServer>>) -> axum::Json<Value> {
    let version = Fleet::load(&node.config).unwrap().policy_version();
    axum::Json(json!({
        "node": node.id, "region": node.region, "uptime_s": 5, "sessions": 2,
        "apps": {}, "links": {"eu-ams-1": {"up": true, "rtt_ms": 1.0}, "uk-lon-1": {"up": false, "rtt_ms": null}},
        "drops": {}, "policy_version": version.to_string(),
    }))
}

/// Starts one node's admin server on an ephemeral loopback port.
async fn serve_node(node: NodeServer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|| async { axum::Json(json!({"ready": true, "reasons": []})) }),
        )
        .route("/status", get(status))
        .route("/reload", post(reload))
        .with_state(Arc::new(node));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn fleet_text(admins: &[SocketAddr; 3], globex_regions: &str) -> String {
    format!(
        r#"
[regions.eu]
countries = ["DE"]
[regions.uk]
countries = ["GB"]
[nodes.eu-fra-1]
region = "eu"
listen = "127.0.0.1:1"
admin = "{}"
[nodes.eu-ams-1]
region = "eu"
listen = "127.0.0.1:2"
admin = "{}"
[nodes.uk-lon-1]
region = "uk"
listen = "127.0.0.1:3"
admin = "{}"
[[links]]
between = ["eu-fra-1", "uk-lon-1"]
rtt_ms = 12
[apps.globex]
secret = "dev"
allow_regions = {globex_regions}
"#,
        admins[0], admins[1], admins[2]
    )
}

async fn georelay(args: Vec<String>, token: bool) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_georelay"));
        command.args(&args).env_remove(TOKEN_ENV);
        if token {
            command.env(TOKEN_ENV, TOKEN);
        }
        command.output().unwrap()
    })
    .await
    .unwrap()
}

fn args(verb: &str, config: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["fleet".to_owned(), verb.to_owned(), "--config".to_owned()];
    args.push(config.to_str().unwrap().to_owned());
    args.extend([
        "--token-env".to_owned(),
        TOKEN_ENV.to_owned(),
        "--timeout-ms".to_owned(),
        "3000".to_owned(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_moves_every_node_to_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut admins = Vec::new();
    let mut node_files = Vec::new();
    for (id, region) in [("eu-fra-1", "eu"), ("eu-ams-1", "eu"), ("uk-lon-1", "uk")] {
        let host = dir.path().join(id);
        std::fs::create_dir(&host).unwrap();
        let config = host.join("regions.toml");
        node_files.push(config.clone());
        admins.push(serve_node(NodeServer { id, region, config }).await);
    }
    let admins: [SocketAddr; 3] = admins.try_into().unwrap();
    let old = fleet_text(&admins, r#"["eu", "uk"]"#);
    let new = fleet_text(&admins, r#"["eu"]"#);
    for file in &node_files {
        std::fs::write(file, &old).unwrap();
    }
    let operator = dir.path().join("regions.toml");
    std::fs::write(&operator, &old).unwrap();
    let old_version = Fleet::load(&operator).unwrap().policy_version().to_string();

    let status = georelay(args("status", &operator, &["--json"]), true).await;
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report = json_of(&status);
    assert_eq!(report["other_version"], json!([]));
    let fra = &report["nodes"][0];
    assert_eq!(
        (&fra["node"], &fra["policy_version"]),
        (&json!("eu-ams-1"), &json!(old_version))
    );
    assert_eq!(
        (&fra["links_up"], &fra["links"], &fra["sessions"]),
        (&json!(1), &json!(2), &json!(2))
    );

    // The operator edits the file: every node now runs another version.
    std::fs::write(&operator, &new).unwrap();
    let new_version = Fleet::load(&operator).unwrap().policy_version().to_string();
    assert_ne!(new_version, old_version);
    let status = georelay(args("status", &operator, &[]), true).await;
    assert_eq!(status.status.code(), Some(3));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("uk-lon-1 runs {old_version}")),
        "{text}"
    );

    // Without the token every node refuses, and nothing changes.
    let refused = georelay(args("reload", &operator, &["--json"]), false).await;
    assert_eq!(
        refused.status.code(),
        Some(2),
        "an unset --token-env is bad input"
    );
    let no_token = vec![
        "fleet".into(),
        "reload".into(),
        "--config".into(),
        operator.to_str().unwrap().into(),
    ];
    let refused = georelay(no_token, false).await;
    assert_eq!(refused.status.code(), Some(1));
    let text = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(text.matches("FAILED").count(), 3, "{text}");
    assert!(text.contains("HTTP 401: UNAUTHORIZED"), "{text}");
    for file in &node_files {
        assert_eq!(std::fs::read_to_string(file).unwrap(), old);
    }

    // The rollout.
    let rollout = georelay(args("reload", &operator, &["--json"]), true).await;
    assert_eq!(
        rollout.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rollout.stdout)
    );
    let report = json_of(&rollout);
    assert_eq!(report["policy_version"], json!(new_version));
    for node in report["nodes"].as_array().unwrap() {
        assert_eq!(
            (&node["ok"], &node["policy_version"]),
            (&json!(true), &json!(new_version)),
            "{node}"
        );
    }
    for file in &node_files {
        assert_eq!(
            std::fs::read_to_string(file).unwrap(),
            new,
            "each node wrote the pushed file"
        );
    }
    let status = georelay(args("status", &operator, &["--json"]), true).await;
    assert_eq!(status.status.code(), Some(0));

    // An invalid file is refused locally: nothing is sent.
    std::fs::write(&operator, new.replace(r#"["eu"]"#, r#"["mars"]"#)).unwrap();
    let invalid = georelay(args("reload", &operator, &[]), true).await;
    assert_eq!(invalid.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("unknown region \"mars\""));
    for file in &node_files {
        assert_eq!(std::fs::read_to_string(file).unwrap(), new);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_fails_the_rollout_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fra.toml");
    let fra = serve_node(NodeServer {
        id: "eu-fra-1",
        region: "eu",
        config: config.clone(),
    })
    .await;
    // Bound then closed: nothing listens there any more.
    let closed_port = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (ams, down) = (closed_port(), closed_port());
    let text = fleet_text(&[fra, ams, down], r#"["eu"]"#);
    std::fs::write(&config, &text).unwrap();
    let operator = dir.path().join("regions.toml");
    std::fs::write(&operator, &text).unwrap();
    let rollout = georelay(args("reload", &operator, &[]), true).await;
    assert_eq!(rollout.status.code(), Some(1));
    let out = String::from_utf8_lossy(&rollout.stdout);
    assert!(out.contains("eu-fra-1         eu       ok: runs"), "{out}");
    assert!(
        out.contains(&format!(
            "uk-lon-1         uk       FAILED at {down}: cannot connect"
        )),
        "{out}"
    );
    assert!(String::from_utf8_lossy(&rollout.stderr).contains("2 of 3 nodes did not apply"));
    let status = georelay(args("status", &operator, &[]), true).await;
    assert_eq!(status.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&status.stdout).contains("unreachable: cannot connect"));
}
