//! Policy versions across separate `serve --node` processes: every node of
//! one config reports the same `policy_version` in `/status` and
//! `/metrics`; a node that takes a changed config pushed to `POST /reload`
//! (validated, written atomically, applied by the one reload path) reports
//! the new one; `georelay fleet status` shows both and names the node that
//! runs the other version, and each node's `/status` (and `fleet status`)
//! lists its mesh peer on the other version, learnt from the `PEER_HELLO`
//! the reloaded node repeats. A bad push is refused with `<request body>`
//! positions and changes nothing.

mod support;

use std::net::SocketAddr;

use georelay::config::Fleet;
use support::fleet::FleetSpec;
use support::served::ServedFleet;

/// `POST /reload` with `body` as `content_type`; (status, body).
async fn push(admin: SocketAddr, content_type: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    let request = format!(
        "POST /reload HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_config_one_version_and_a_pushed_change_shows_in_status_metrics_and_fleet_status() {
    let mut fleet = ServedFleet::configure(&FleetSpec::default());
    // Certificate files of one fleet CA, so that the two processes link.
    fleet.use_certs(&FleetSpec::default());
    fleet.serve_nodes(&["eu-fra-1", "eu-ams-1"], "info");
    let original = std::fs::read_to_string(fleet.config()).expect("config");
    let old_version = Fleet::load(&fleet.config())
        .expect("valid")
        .policy_version()
        .to_string();
    for node in ["eu-fra-1", "eu-ams-1"] {
        fleet.wait_until(node, |_answers| true).await;
        assert_eq!(
            fleet.status(node).await.policy_version,
            old_version,
            "{node}"
        );
    }
    fleet.wait_links("eu-fra-1", &["eu-ams-1"]).await;
    for node in ["eu-fra-1", "eu-ams-1"] {
        assert_eq!(
            fleet.status(node).await.peers_on_other_versions,
            [],
            "{node}: its peer runs the same version"
        );
    }
    let ams_admin = fleet.addr("eu-ams-1", 9090);
    let metrics = support::fleet::http_get(ams_admin, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "georelay_policy_info{{node=\"eu-ams-1\",version=\"{old_version}\"}} 1"
        )),
        "{metrics}"
    );

    // A bad push: refused with positions in the body, nothing written or applied.
    let (code, body) = push(ams_admin, "application/toml", "[regions.eu\n").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("<request body>:1:"), "{body}");
    let (code, body) = push(ams_admin, "text/plain", &original).await;
    assert_eq!(code, 415, "{body}");
    assert_eq!(
        std::fs::read_to_string(fleet.config()).expect("config"),
        original
    );
    assert_eq!(fleet.status("eu-ams-1").await.policy_version, old_version);

    // A changed geofence pushed to one node only.
    let changed = original.replacen(r#"deny = ["RU"]"#, r#"deny = ["RU", "BY"]"#, 1);
    assert_ne!(changed, original);
    let (code, body) = push(ams_admin, "application/toml; charset=utf-8", &changed).await;
    assert_eq!(code, 200, "{body}");
    let report: georelay::admin::ReloadReport = serde_json::from_str(&body).expect("report");
    let new_version = Fleet::load(&fleet.config())
        .expect("the pushed config was written")
        .policy_version()
        .to_string();
    assert_ne!(new_version, old_version);
    assert_eq!(report.policy_version, new_version);
    assert_eq!(fleet.status("eu-ams-1").await.policy_version, new_version);
    assert_eq!(fleet.status("eu-fra-1").await.policy_version, old_version);
    let metrics = support::fleet::http_get(ams_admin, "/metrics").await;
    for (version, value) in [(&new_version, 1), (&old_version, 0)] {
        assert!(
            metrics.contains(&format!(
                "georelay_policy_info{{node=\"eu-ams-1\",version=\"{version}\"}} {value}"
            )),
            "{version} {value}: {metrics}"
        );
    }

    // Each end of the live link learns the other's version from PEER_HELLO.
    let peer_on = |node: &str, version: &str| georelay::admin::PeerVersion {
        node: node.to_owned(),
        policy_version: Some(version.to_owned()),
    };
    let expected = peer_on("eu-ams-1", &new_version);
    fleet
        .wait_until("eu-fra-1", |status| {
            status.peers_on_other_versions == [expected.clone()]
        })
        .await;
    assert_eq!(
        fleet.status("eu-ams-1").await.peers_on_other_versions,
        [peer_on("eu-fra-1", &old_version)]
    );

    // `fleet status` against the new file: ams runs it, fra runs another.
    let output = fleet_status(fleet.config(), &["--json"]).await;
    assert!(
        !output.status.success(),
        "versions differ: not a clean status"
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(json["policy_version"], serde_json::json!(new_version));
    let version_of = |node: &str| {
        json["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["node"] == node)
            .map(|n| n["policy_version"].clone())
            .expect("node listed")
    };
    assert_eq!(version_of("eu-ams-1"), serde_json::json!(new_version));
    assert_eq!(version_of("eu-fra-1"), serde_json::json!(old_version));
    assert_eq!(json["other_version"], serde_json::json!(["eu-fra-1"]));
    let peers_of = |node: &str| {
        json["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["node"] == node)
            .map(|n| n["peers_on_other_versions"].clone())
            .expect("node listed")
    };
    assert_eq!(
        peers_of("eu-fra-1"),
        serde_json::json!([{"node": "eu-ams-1", "policy_version": new_version}])
    );
    assert_eq!(
        peers_of("eu-ams-1"),
        serde_json::json!([{"node": "eu-fra-1", "policy_version": old_version}])
    );
    let table = fleet_status(fleet.config(), &[]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    for line in [
        format!("mesh peers on another version: eu-ams-1 runs {new_version}"),
        format!("mesh peers on another version: eu-fra-1 runs {old_version}"),
    ] {
        assert!(table.contains(&line), "{line:?} in:\n{table}");
    }
}

/// `georelay fleet status --config CONFIG` with `extra` flags.
async fn fleet_status(config: std::path::PathBuf, extra: &[&str]) -> std::process::Output {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_georelay"))
            .args(["fleet", "status", "--timeout-ms", "3000", "--config"])
            .arg(config)
            .args(extra)
            .output()
            .expect("fleet status runs")
    })
    .await
    .expect("join")
}
