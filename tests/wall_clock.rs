//! A wall-clock step on one process of a multi-process fleet does not stop
//! media through it: `georelay serve --node` processes with certificates from
//! `georelay certs`, the transit node under libfaketime (`faketime` from
//! Debian, `DONT_FAKE_MONOTONIC=1`), its wall clock stepped back two minutes
//! and then forward again while a stream crosses it. The relay core's timers
//! follow the monotonic clock, so delivery stays at or above 99%.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use georelay::client::Event;
use support::fleet::FleetSpec;
use support::served::{FAKETIME_LIB, ServedFleet};

/// Packets per second of the test stream.
const RATE: u64 = 100;
/// Seconds of streaming: the backward step at 2 s, the forward step at 12 s
/// (longer than a downstream subscription lives without refresh, 7 s), then
/// 8 s more.
const SECONDS: u64 = 20;
const BACKWARD_AT: u64 = 2;
const FORWARD_AT: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_crosses_a_node_whose_wall_clock_steps_back_and_forward_two_minutes() {
    assert!(
        std::path::Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} is missing: install Debian's faketime (.ci/run does)"
    );
    let mut fleet = ServedFleet::configure(&FleetSpec::default());
    fleet.use_certs(&FleetSpec::default());
    let offset = fleet.path().join("lon-clock-offset");
    std::fs::write(&offset, "+0\n").expect("offset file");
    // Media of globex-media from Frankfurt to Amsterdam takes the cheaper
    // path through London (12 + 8 ms against 30 ms direct).
    fleet.serve_nodes(&["eu-fra-1", "eu-ams-1"], "info");
    fleet.serve_node_with_faked_wall_clock("uk-lon-1", &offset);
    fleet
        .wait_links("uk-lon-1", &["eu-fra-1", "eu-ams-1"])
        .await;
    fleet.wait_links("eu-fra-1", &["eu-ams-1"]).await;
    let (publisher, track, mut subscriber) = fleet
        .pub_sub("globex-media", "tv", "eu-fra-1", "eu-ams-1")
        .await;

    let total = RATE * SECONDS;
    let received = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        let window = Duration::from_secs(SECONDS + 3);
        let deadline = georelay::clock::timer_now() + window;
        while let Ok(Some(event)) =
            tokio::time::timeout_at(deadline, subscriber.events().next()).await
        {
            if let Event::Media { header, .. } = event {
                seen.insert(header.seq);
                if seen.len() as u64 == total {
                    break;
                }
            }
        }
        (seen, subscriber)
    });
    let mut pacing = tokio::time::interval(Duration::from_millis(1000 / RATE));
    for seq in 0..total {
        pacing.tick().await;
        if seq == BACKWARD_AT * RATE {
            std::fs::write(&offset, "-120\n").expect("step back");
            let behind = unix_secs() - faked_unix_secs(&offset);
            assert!(
                (118..=122).contains(&behind),
                "libfaketime steps the wall clock: {behind} s behind"
            );
        }
        if seq == FORWARD_AT * RATE {
            std::fs::write(&offset, "+0\n").expect("step forward");
        }
        publisher
            .send_media(track, seq, seq, b"frame")
            .expect("send");
    }
    let (seen, _subscriber) = received.await.expect("receiver");
    let ratio = seen.len() as f64 / total as f64;
    let lon = fleet.status("uk-lon-1").await;
    let transit = lon
        .apps
        .get("globex-media")
        .map(|t| t.packets_in)
        .unwrap_or(0);
    println!(
        "wall clock of uk-lon-1 stepped -120 s at {BACKWARD_AT} s and +120 s at {FORWARD_AT} s: \
         delivered {}/{total} = {:.2}% (London carried {transit})",
        seen.len(),
        ratio * 100.0
    );
    assert!(
        transit >= total * 99 / 100,
        "London is the transit: {transit} packets"
    );
    assert!(
        ratio >= 0.99,
        "delivery across the stepped node: {}/{total}",
        seen.len()
    );
}

fn unix_secs() -> i64 {
    use georelay::clock::Clock;
    georelay::clock::SystemClock.now_unix_secs() as i64
}

/// `date +%s` under the same libfaketime settings as the stepped node.
fn faked_unix_secs(offset_file: &std::path::Path) -> i64 {
    let out = std::process::Command::new("date")
        .arg("+%s")
        .env("LD_PRELOAD", FAKETIME_LIB)
        .env("FAKETIME_TIMESTAMP_FILE", offset_file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("DONT_FAKE_MONOTONIC", "1")
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("date prints seconds")
}
