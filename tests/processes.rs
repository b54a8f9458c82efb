//! A fleet of separate `georelay serve --node` processes with certificates
//! from `georelay certs`: mutual TLS between processes, failover when a
//! transit process is SIGKILLed (no QUIC close reaches its peers), draining
//! on SIGTERM, and core dumps disabled in every serving process.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use georelay::auth::Role;
use georelay::client::{Client, Event};
use support::fleet::FleetSpec;
use support::served::ServedFleet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_with_certs_fail_over_when_the_transit_is_sigkilled() {
    let mut fleet = ServedFleet::configure(&FleetSpec::default());
    fleet.use_certs(&FleetSpec::default());
    fleet.serve_nodes(&["eu-fra-1", "eu-ams-1", "uk-lon-1"], "info");
    fleet
        .wait_links("eu-fra-1", &["eu-ams-1", "uk-lon-1"])
        .await;
    fleet
        .wait_links("eu-ams-1", &["eu-fra-1", "uk-lon-1"])
        .await;

    let (publisher, track, mut subscriber) = fleet
        .pub_sub("globex-media", "tv", "eu-fra-1", "eu-ams-1")
        .await;

    // Media flows fra -> lon -> ams between three processes.
    let mut seq = 0u64;
    for _ in 0..100 {
        publisher
            .send_media(track, seq, seq, b"frame")
            .expect("send");
        seq += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut received_before = 0;
    let until = georelay::clock::timer_now() + Duration::from_millis(500);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, subscriber.events().next()).await {
        if matches!(event, Event::Media { .. }) {
            received_before += 1;
        }
    }
    assert!(
        received_before >= 99,
        "media crosses three processes: {received_before}"
    );
    let lon = fleet.status("uk-lon-1").await;
    assert!(
        lon.apps
            .get("globex-media")
            .is_some_and(|t| t.packets_in >= 99),
        "London is the transit: {lon:?}"
    );

    // SIGKILL London: no CONNECTION_CLOSE reaches its peers; they notice by
    // the mesh idle timeout and re-route over the direct link.
    fleet.signal("uk-lon-1", "-KILL");
    let killed = georelay::clock::timer_now();
    let mut resumed = None;
    let first_after = seq;
    while killed.elapsed() < Duration::from_secs(15) {
        publisher
            .send_media(track, seq, seq, b"frame")
            .expect("send");
        seq += 1;
        if let Ok(Some(Event::Media { header, .. })) =
            tokio::time::timeout(Duration::from_millis(5), subscriber.events().next()).await
        {
            if header.seq >= first_after {
                resumed = Some(killed.elapsed());
                break;
            }
        }
    }
    let resumed = resumed.expect("delivery resumes over fra -> ams after London's silent death");
    println!("SIGKILL failover: delivery resumed {resumed:?} after the transit process died");
    assert!(
        resumed < Duration::from_secs(6),
        "bounded by the 2 s mesh idle timeout plus re-routing: {resumed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_disables_core_dumps_and_drains_on_sigterm() {
    let mut fleet = ServedFleet::configure(&FleetSpec::default());
    fleet.use_certs(&FleetSpec::default());
    fleet.serve_nodes(&["eu-fra-1", "eu-ams-1"], "info");
    fleet.wait_links("eu-fra-1", &["eu-ams-1"]).await;

    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", fleet.pid("eu-fra-1"))).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core line");
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "RLIMIT_CORE is 0: {core}"
    );

    let mut client = Client::connect(
        &fleet.client_options(),
        &[fleet.target("eu-fra-1")],
        &fleet.join("acme-health", "ward", "nurse", Role::Subscribe),
    )
    .await
    .expect("admitted");
    fleet.signal("eu-fra-1", "-TERM");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.events().next().await {
                Some(Event::Closed { code, redirect, .. }) => return (code, redirect),
                Some(_) => continue,
                None => panic!("events ended without a close"),
            }
        }
    })
    .await
    .expect("closed within the drain");
    assert_eq!(closed.0, Some(georelay::error::ErrorCode::ShuttingDown));
    let targets: Vec<&str> = closed.1.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(targets, ["eu-ams-1"], "redirected to the other EU node");
    let status = fleet.wait_exit("eu-fra-1", Duration::from_secs(10)).await;
    assert!(status.success(), "clean exit after draining: {status:?}");
}

/// The owner of `/proc/PID/status`: the kernel makes it root for a process
/// that is not dumpable, whatever user the process runs as.
fn proc_owner(pid: u32) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/status"))
        .expect("proc")
        .uid()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_marks_itself_not_dumpable() {
    if !rustix::process::getuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must run this test"
        );
        eprintln!("skipped: switching to an unprivileged user needs root");
        return;
    }
    let fleet = ServedFleet::configure(&FleetSpec::default());
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    std::fs::set_permissions(fleet.path(), mode).expect("chmod");
    let as_nobody = |program: &str| {
        let mut command = std::process::Command::new("setpriv");
        command.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            program,
        ]);
        command
    };
    // Control: an ordinary process of user 65534 owns its /proc entries.
    let mut control = as_nobody("sleep").arg("5").spawn().expect("setpriv sleep");
    let pid = control.id();
    support::events::until(
        Duration::from_secs(5),
        "the check can tell a dumpable process (setpriv dropped to 65534)",
        || async move { proc_owner(pid) == 65534 },
    )
    .await;
    let _ = control.kill();
    let _ = control.wait();

    // A copy the unprivileged user can execute wherever the build tree is.
    let bin = fleet.path().join("georelay");
    std::fs::copy(support::served::BIN, &bin).expect("copy the binary");
    let mut serve = as_nobody(bin.to_str().expect("utf-8 path"))
        .args(["serve", "--node", "eu-fra-1", "--config"])
        .arg(fleet.config())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve as an unprivileged user");
    fleet.wait_until("eu-fra-1", |_| true).await;
    let owner = proc_owner(serve.id());
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(
        owner, 0,
        "PR_SET_DUMPABLE is 0 in serve: /proc/PID is root's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mlock_on_serve_locks_its_memory() {
    let spec = FleetSpec {
        extra: "[limits]\ndrain_timeout_ms = 500\n".into(),
        ..FleetSpec::default()
    };
    let mut fleet = ServedFleet::configure(&spec);
    let text = std::fs::read_to_string(fleet.config()).expect("config");
    std::fs::write(
        fleet.config(),
        text.replace("[metadata]\n", "[metadata]\nmlock = true\n"),
    )
    .expect("config");
    fleet.serve_nodes(&["eu-fra-1"], "info");
    fleet.wait_until("eu-fra-1", |_| true).await;
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", fleet.pid("eu-fra-1"))).expect("status");
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmLck line");
    assert!(
        locked_kb > 0,
        "mlockall locked the relay's memory: VmLck {locked_kb} kB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_post_reload_take_the_same_path_and_an_invalid_file_keeps_the_old_policy() {
    let mut fleet = ServedFleet::configure(&FleetSpec::default());
    fleet.serve_all("info");
    fleet.wait_ready("eu-fra-1").await;
    let admin = fleet.addr("eu-fra-1", 9090);
    let valid = std::fs::read_to_string(fleet.config()).expect("config");
    let join = fleet.join("acme-health", "ward", "nurse", Role::Subscribe);

    // A typo on line 2 of the file: both entry points refuse it and say where.
    std::fs::write(
        fleet.config(),
        format!("[geoip]\ndatabse = \"x.mmdb\"\n{valid}"),
    )
    .expect("write");
    let (code, body) = support::fleet::http_request(admin, "POST", "/reload").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("regions.toml:2:"), "file:line:column: {body}");
    fleet.signal("serve", "-HUP");
    support::events::until(
        Duration::from_secs(10),
        "SIGHUP reports the same error",
        || {
            let log = fleet.log("serve");
            async move { log.contains("reload rejected") && log.contains("regions.toml:2:") }
        },
    )
    .await;
    // The old policy is still in force: a client is admitted.
    let client = Client::connect(&fleet.client_options(), &[fleet.target("eu-fra-1")], &join)
        .await
        .expect("admitted under the old policy");
    client.close().await;

    // A valid file: both put it in force with the same typed report.
    std::fs::write(fleet.config(), &valid).expect("write");
    let (code, body) = support::fleet::http_request(admin, "POST", "/reload").await;
    assert_eq!(code, 200, "{body}");
    let report: georelay::admin::ReloadReport = serde_json::from_str(&body).expect("report");
    assert!(report.message.contains("policy reloaded"), "{report:?}");
    fleet.signal("serve", "-HUP");
    support::events::until(Duration::from_secs(10), "SIGHUP reloads too", || {
        let log = fleet.log("serve");
        async move { log.matches("policy reloaded from").count() >= 2 }
    })
    .await;
    // Written to a file, not a terminal: plain text, no colour codes.
    let log = fleet.log("serve");
    assert!(!log.contains('\x1b'), "escape codes in a log file: {log}");
}
