//! The chaos run: six `georelay serve --node` processes in four regions
//! (certificates from `georelay certs`, two nodes under libfaketime), four
//! apps with different geofences and a publisher and a subscriber of each
//! (reconnecting SDK sessions), and a seeded random schedule of faults:
//! SIGKILL and SIGTERM of a node and its restart, mesh links cut and healed
//! and random loss on them (nftables inside a network namespace the test
//! creates), wall-clock steps, and a policy reload that removes a region
//! from an app and gives it back.
//!
//! Throughout, every node's `/status` is sampled (also right before each
//! kill) and must never show a packet or byte of an app on a node outside
//! that app's allowed regions; after a narrowing reload, the counters of the
//! nodes it disallowed must not move again. At the end every fault is
//! healed, and every subscriber must receive fresh media again within a
//! bound; every node exits cleanly on SIGTERM, no log shows a panic, and no
//! node's resident memory went above a bound.
//!
//! `GEORELAY_CHAOS_SEED` (default below) and `GEORELAY_CHAOS_SECS`
//! (default 25) choose the schedule and the length of the fault phase.

mod faults;
mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use georelay::admin::{AppTraffic, StatusReport};
use georelay::auth::Role;
use georelay::client::{Event, Session};
use georelay::wire::{SubscriptionStatus, TrackKind};
use support::fleet::{EXAMPLE_LINKS, FleetSpec, NODES};
use support::served::ServedFleet;

const DEFAULT_SEED: u64 = 0x0067_656f_7265_6c61;
const DEFAULT_SECS: u64 = 25;
/// Nodes whose wall clock the run steps (they run under libfaketime).
const FAKED_CLOCK_NODES: [&str; 2] = ["uk-lon-1", "us-iad-1"];
/// No node's resident memory may exceed this (debug build).
const RSS_BOUND_KIB: u64 = 256 * 1024;
/// How long a subscriber may take to receive fresh media once every fault
/// is healed.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);
/// Media packets per second of each publisher.
const RATE: u64 = 50;

fn region_of(node: &str) -> &'static str {
    match node {
        "eu-fra-1" | "eu-ams-1" => "eu",
        "uk-lon-1" => "uk",
        "us-iad-1" | "us-sfo-1" => "us",
        _ => "apac",
    }
}

/// Whether `app`'s policy allows `region`; `narrowed` is the state of the
/// reloadable policy (initech-chat loses "us").
fn allowed(app: &str, region: &str, narrowed: bool) -> bool {
    match app {
        "acme-health" => region == "eu",
        "globex-media" => region != "apac",
        "initech-chat" => region == "eu" || (region == "us" && !narrowed),
        _ => true,
    }
}

const APPS: [&str; 4] = [
    "acme-health",
    "globex-media",
    "initech-chat",
    "umbrella-video",
];

fn apps_toml(narrowed: bool) -> String {
    let initech = if narrowed {
        r#"["eu"]"#
    } else {
        r#"["eu", "us"]"#
    };
    format!(
        r#"
[apps.acme-health]
secret = "acme-test-secret"
allow_regions = ["eu"]

[apps.globex-media]
secret = "globex-test-secret"
deny_regions = ["apac"]

[apps.initech-chat]
secret = "initech-test-secret"
allow_regions = {initech}

[apps.umbrella-video]
secret = "umbrella-test-secret"
allow_regions = ["eu", "uk", "us", "apac"]
"#
    )
}

const LIMITS: &str = "[limits]\ndrain_timeout_ms = 500\n";
const TLS: &str = "\n[tls]\nca = \"certs/ca.pem\"\ndir = \"certs\"\n";

fn spec(narrowed: bool, tls: bool) -> FleetSpec {
    FleetSpec {
        apps: apps_toml(narrowed),
        links: None,
        extra: if tls {
            format!("{LIMITS}{TLS}")
        } else {
            LIMITS.to_string()
        },
        ..FleetSpec::default()
    }
}

/// The configured mesh links, as node pairs.
fn links() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for block in EXAMPLE_LINKS.split("[[links]]").skip(1) {
        let between = block
            .lines()
            .find(|l| l.starts_with("between"))
            .expect("between");
        let names: Vec<&str> = between.split('"').skip(1).step_by(2).collect();
        let find = |n: &str| *NODES.iter().find(|x| **x == n).expect("node");
        out.push((find(names[0]), find(names[1])));
    }
    out
}

/// One publisher and one subscriber of an app's channel.
struct Flow {
    app: &'static str,
    publisher_targets: [&'static str; 2],
    subscriber_targets: [&'static str; 2],
}

const FLOWS: [Flow; 4] = [
    Flow {
        app: "acme-health",
        publisher_targets: ["eu-fra-1", "eu-ams-1"],
        subscriber_targets: ["eu-ams-1", "eu-fra-1"],
    },
    Flow {
        app: "globex-media",
        publisher_targets: ["eu-fra-1", "eu-ams-1"],
        subscriber_targets: ["us-sfo-1", "us-iad-1"],
    },
    Flow {
        app: "initech-chat",
        publisher_targets: ["us-iad-1", "eu-fra-1"],
        subscriber_targets: ["us-sfo-1", "eu-ams-1"],
    },
    Flow {
        app: "umbrella-video",
        publisher_targets: ["ap-sin-1", "us-sfo-1"],
        subscriber_targets: ["uk-lon-1", "eu-fra-1"],
    },
];

/// SplitMix64: a small deterministic generator, so a seed names a schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            v.strip_prefix("0x")
                .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(default)
}

/// What a subscriber's task has seen.
#[derive(Default)]
struct Received {
    media: AtomicU64,
    reconnects: AtomicU64,
    active: AtomicU64,
    unavailable: AtomicU64,
}

/// Leakage bookkeeping from `/status` samples: for each (node, app) the
/// node's region does not allow, the counters it must still show (zero, or
/// what it carried while a reload had not yet removed the region).
#[derive(Default)]
struct Ledger {
    frozen: BTreeMap<(String, String), AppTraffic>,
    samples: u64,
    violations: Vec<String>,
}

impl Ledger {
    fn check(&mut self, node: &str, status: &StatusReport, narrowed: bool) {
        self.samples += 1;
        for app in APPS {
            if allowed(app, region_of(node), narrowed) {
                continue;
            }
            let seen = status.apps.get(app).copied().unwrap_or_default();
            let frozen = self
                .frozen
                .get(&(node.to_string(), app.to_string()))
                .copied()
                .unwrap_or_default();
            if seen != frozen {
                self.violations.push(format!(
                    "{app} on {node} ({}): {seen:?}, allowed {frozen:?}",
                    region_of(node)
                ));
            }
        }
    }

    /// A node process started afresh: its counters start at zero.
    fn restarted(&mut self, node: &str) {
        self.frozen.retain(|(n, _), _| n != node);
    }

    /// The reloadable policy changed; `samples` are every running node's
    /// `/status` right after every node applied it.
    fn policy_changed(&mut self, narrowed: bool, samples: &[(String, StatusReport)]) {
        self.frozen.clear();
        if narrowed {
            for (node, status) in samples {
                if let Some(traffic) = status.apps.get("initech-chat") {
                    if region_of(node) == "us" {
                        self.frozen
                            .insert((node.clone(), "initech-chat".into()), *traffic);
                    }
                }
            }
        }
    }
}

/// An active link fault (nftables rules are re-applied from this list
/// whenever one of them heals).
#[derive(Clone, Copy, Debug)]
enum LinkFault {
    Cut,
    Loss(u8),
}

struct Chaos {
    fleet: ServedFleet,
    rules: Option<faults::netns::Rules>,
    rng: Rng,
    ledger: Ledger,
    narrowed: bool,
    /// Nodes down, with the step at which they come back.
    down: BTreeMap<&'static str, u64>,
    link_faults: Vec<((&'static str, &'static str), LinkFault, u64)>,
    counts: BTreeMap<&'static str, u64>,
    peak_rss_kib: BTreeMap<&'static str, u64>,
    clock_offsets: BTreeMap<&'static str, i64>,
}

impl Chaos {
    fn ip(&self, node: &str) -> IpAddr {
        self.fleet.addr(node, 4433).ip()
    }

    async fn sample(&mut self, node: &'static str) {
        if let Some(rss) = self.fleet.memory_kib(node, "VmHWM") {
            let peak = self.peak_rss_kib.entry(node).or_default();
            *peak = (*peak).max(rss);
        }
        let status = self.fleet.status(node).await;
        self.ledger.check(node, &status, self.narrowed);
    }

    async fn sample_running(&mut self) {
        for node in NODES {
            if !self.down.contains_key(node) {
                self.sample(node).await;
            }
        }
    }

    /// No node down and no link fault: every flow has a path.
    fn is_whole(&self) -> bool {
        self.down.is_empty() && self.link_faults.is_empty()
    }

    fn count(&mut self, kind: &'static str) {
        *self.counts.entry(kind).or_default() += 1;
    }

    fn apply_link_faults(&self) {
        let Some(rules) = &self.rules else { return };
        rules.heal().expect("nft flush");
        for ((a, b), fault, _) in &self.link_faults {
            match fault {
                LinkFault::Cut => rules.partition(self.ip(a), self.ip(b)),
                LinkFault::Loss(percent) => rules.drop_random(self.ip(a), self.ip(b), *percent),
            }
            .expect("nft rule");
        }
    }

    async fn restart(&mut self, node: &'static str) {
        self.fleet.restart(node);
        self.fleet.wait_until(node, |_| true).await;
        self.ledger.restarted(node);
        self.down.remove(node);
    }

    /// Heals what is due at `step`: restarts nodes, removes link faults.
    async fn heal_due(&mut self, step: u64) {
        let due: Vec<&'static str> = self
            .down
            .iter()
            .filter(|(_, at)| **at <= step)
            .map(|(n, _)| *n)
            .collect();
        for node in due {
            self.restart(node).await;
        }
        let before = self.link_faults.len();
        self.link_faults.retain(|(_, _, until)| *until > step);
        if self.link_faults.len() != before {
            self.apply_link_faults();
        }
    }

    async fn inject(&mut self, step: u64) {
        let kinds: &[&str] = if self.rules.is_some() {
            &["kill", "term", "cut", "loss", "clock", "reload"]
        } else {
            &["kill", "term", "clock", "reload"]
        };
        match *self.rng.pick(kinds) {
            "kill" | "term" if self.down.is_empty() => {
                let node = *self.rng.pick(&NODES);
                self.sample(node).await;
                let back_at = step + 2 + self.rng.below(4);
                if self.rng.below(2) == 0 {
                    self.fleet.signal(node, "-KILL");
                    self.fleet.wait_exit(node, Duration::from_secs(5)).await;
                    self.count("node SIGKILL + restart");
                } else {
                    self.fleet.signal(node, "-TERM");
                    let status = self.fleet.wait_exit(node, Duration::from_secs(10)).await;
                    assert!(
                        status.success(),
                        "{node} drains and exits cleanly: {status}"
                    );
                    self.count("node SIGTERM (drain) + restart");
                }
                self.down.insert(node, back_at);
            }
            "cut" | "loss" if self.link_faults.len() < 2 => {
                let link = *self.rng.pick(&links());
                if self.link_faults.iter().any(|(l, _, _)| *l == link) {
                    return;
                }
                let until = step + 2 + self.rng.below(5);
                let fault = if self.rng.below(2) == 0 {
                    self.count("mesh link cut + heal");
                    LinkFault::Cut
                } else {
                    self.count("mesh link loss 5-20%");
                    LinkFault::Loss(5 + self.rng.below(16) as u8)
                };
                self.link_faults.push((link, fault, until));
                self.apply_link_faults();
            }
            "clock" => {
                let node = *self.rng.pick(&FAKED_CLOCK_NODES);
                let offset = (self.rng.below(601) as i64) - 300;
                std::fs::write(self.offset_file(node), format!("{offset:+}\n"))
                    .expect("step the clock");
                self.clock_offsets.insert(node, offset);
                self.count("wall-clock step (±300 s)");
            }
            "reload" => {
                self.reload(!self.narrowed).await;
                self.count(if self.narrowed {
                    "policy reload (initech-chat loses us)"
                } else {
                    "policy reload (initech-chat regains us)"
                });
            }
            _ => {}
        }
    }

    fn offset_file(&self, node: &str) -> std::path::PathBuf {
        self.fleet.path().join(format!("{node}-clock-offset"))
    }

    /// Rewrites the config and `POST /reload`s every running node: when a
    /// region is removed, the nodes outside it first (docs/ARCHITECTURE.md,
    /// "Mixed policy versions"), so no node sends to it after its own
    /// reload; then samples every node, whose counters for the removed
    /// region are frozen from then on.
    async fn reload(&mut self, narrowed: bool) {
        self.fleet.rewrite(&spec(narrowed, true));
        let mut order: Vec<&'static str> = NODES
            .iter()
            .copied()
            .filter(|n| !self.down.contains_key(n))
            .collect();
        order.sort_by_key(|n| region_of(n) == "us");
        for node in order.iter().copied() {
            let (code, body) =
                support::fleet::http_request(self.fleet.addr(node, 9090), "POST", "/reload").await;
            assert_eq!(code, 200, "reload of {node}: {body}");
        }
        self.narrowed = narrowed;
        let mut samples = Vec::new();
        for node in order {
            samples.push((node.to_string(), self.fleet.status(node).await));
        }
        self.ledger.policy_changed(narrowed, &samples);
    }
}

/// Recovery while the run goes on: whenever the fleet is whole again (no
/// node down, no link cut or lossy), every subscriber must receive fresh
/// media within [`RECOVERY_BOUND`], unless a new fault breaks the fleet
/// first (the window is then abandoned).
#[derive(Default)]
struct Windows {
    /// The open window: when it began, the media counts then, and when each
    /// subscriber got fresh media.
    open: Option<(std::time::Instant, Vec<u64>, Vec<Option<Duration>>)>,
    /// Windows in which every subscriber recovered.
    recovered: u64,
    abandoned: u64,
    /// The slowest subscriber of each recovered window.
    slowest: Vec<Duration>,
    failures: Vec<String>,
}

impl Windows {
    fn observe(&mut self, whole: bool, counts: &[u64]) {
        if !whole {
            if self
                .open
                .take()
                .is_some_and(|(_, _, got)| got.iter().any(Option::is_none))
            {
                self.abandoned += 1;
            }
            return;
        }
        let (since, before, got) = self.open.get_or_insert_with(|| {
            (
                georelay::clock::monotonic_now(),
                counts.to_vec(),
                vec![None; counts.len()],
            )
        });
        if got.iter().all(Option::is_some) {
            return;
        }
        for (i, count) in counts.iter().enumerate() {
            if got[i].is_none() && *count > before[i] {
                got[i] = Some(since.elapsed());
            }
        }
        if got.iter().all(Option::is_some) {
            self.recovered += 1;
            self.slowest
                .push(got.iter().flatten().max().copied().unwrap_or_default());
        } else if since.elapsed() > RECOVERY_BOUND {
            self.failures.push(format!(
                "subscribers {:?} got no media within {RECOVERY_BOUND:?} of the fleet being whole",
                got.iter()
                    .enumerate()
                    .filter(|(_, g)| g.is_none())
                    .map(|(i, _)| FLOWS[i].app)
                    .collect::<Vec<_>>()
            ));
            got.iter_mut().for_each(|g| *g = Some(RECOVERY_BOUND));
        }
    }
}

#[test]
fn chaos_run_leaks_nothing_and_every_subscriber_recovers() {
    let seed = env_u64("GEORELAY_CHAOS_SEED", DEFAULT_SEED);
    let secs = env_u64("GEORELAY_CHAOS_SECS", DEFAULT_SECS);
    assert!(
        std::path::Path::new(support::served::FAKETIME_LIB).exists(),
        "{} is missing: install Debian's faketime (.ci/run does)",
        support::served::FAKETIME_LIB
    );
    if faults::netns::available() {
        let netns = faults::netns::Netns::create().expect("namespace");
        let rules = netns.rules();
        netns.run(move || run(seed, secs, Some(rules)));
    } else {
        eprintln!("no namespace: the run injects no link cuts or loss");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(run(seed, secs, None));
    }
}

async fn run(seed: u64, secs: u64, rules: Option<faults::netns::Rules>) {
    let mut fleet = ServedFleet::configure(&spec(false, false));
    fleet.use_certs(&spec(false, false));
    for node in NODES {
        if FAKED_CLOCK_NODES.contains(&node) {
            let offset = fleet.path().join(format!("{node}-clock-offset"));
            std::fs::write(&offset, "+0\n").expect("offset file");
            fleet.serve_node_with_faked_wall_clock_logging(node, &offset, "warn");
        } else {
            fleet.serve_nodes(&[node], "warn");
        }
    }
    for node in NODES {
        fleet.wait_ready(node).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let mut received = Vec::new();
    for (i, flow) in FLOWS.iter().enumerate() {
        let channel = format!("chaos-{i}");
        let rx = Arc::new(Received::default());
        received.push((flow.app, Arc::clone(&rx)));
        let subscriber = session(
            &fleet,
            flow.app,
            &channel,
            Role::Subscribe,
            &flow.subscriber_targets,
        )
        .await;
        tasks.spawn(subscribe_loop(subscriber, rx, Arc::clone(&stop)));
        let publisher = session(
            &fleet,
            flow.app,
            &channel,
            Role::Publish,
            &flow.publisher_targets,
        )
        .await;
        tasks.spawn(publish_loop(publisher, Arc::clone(&stop)));
    }

    let mut chaos = Chaos {
        fleet,
        rules,
        rng: Rng(seed),
        ledger: Ledger::default(),
        narrowed: false,
        down: BTreeMap::new(),
        link_faults: Vec::new(),
        counts: BTreeMap::new(),
        peak_rss_kib: BTreeMap::new(),
        clock_offsets: BTreeMap::new(),
    };
    let started = georelay::clock::monotonic_now();
    let step_every = Duration::from_millis(700);
    let mut pace = tokio::time::interval(step_every);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut step = 0;
    let mut windows = Windows::default();
    while started.elapsed() < Duration::from_secs(secs) {
        pace.tick().await;
        step += 1;
        chaos.heal_due(step).await;
        let counts: Vec<u64> = received
            .iter()
            .map(|(_, rx)| rx.media.load(Ordering::SeqCst))
            .collect();
        windows.observe(chaos.is_whole(), &counts);
        chaos.inject(step).await;
        chaos.sample_running().await;
    }
    let chaos_time = started.elapsed();

    // Heal everything and give initech-chat its regions back.
    let healing = georelay::clock::monotonic_now();
    chaos.link_faults.clear();
    chaos.apply_link_faults();
    let down: Vec<&'static str> = chaos.down.keys().copied().collect();
    for node in down {
        chaos.restart(node).await;
    }
    if chaos.narrowed {
        chaos.reload(false).await;
    }
    for node in NODES {
        chaos.fleet.wait_ready(node).await;
    }
    let mut recovery = Vec::new();
    for (app, rx) in &received {
        let before = rx.media.load(Ordering::SeqCst);
        let what = format!("{app}'s subscriber receives media again");
        support::events::until(RECOVERY_BOUND, &what, || {
            let rx = Arc::clone(rx);
            async move { rx.media.load(Ordering::SeqCst) >= before + RATE / 5 }
        })
        .await;
        recovery.push((*app, healing.elapsed()));
    }
    chaos.sample_running().await;
    stop.store(true, Ordering::SeqCst);
    while tasks.join_next().await.is_some() {}

    // Every node drains and exits 0 on SIGTERM; no log shows a panic.
    for node in NODES {
        chaos.sample(node).await;
        chaos.fleet.signal(node, "-TERM");
    }
    for node in NODES {
        let status = chaos.fleet.wait_exit(node, Duration::from_secs(10)).await;
        assert!(
            status.success(),
            "{node} exits cleanly on SIGTERM: {status}"
        );
        let log = chaos.fleet.log(node);
        assert!(!log.contains("panicked"), "{node} panicked:\n{log}");
    }

    let total: u64 = chaos.counts.values().sum();
    println!(
        "chaos run: seed {seed:#x}, {:.1} s of faults ({step} steps), {total} faults: {:?}; \
         link faults {}; final wall-clock offsets {:?}",
        chaos_time.as_secs_f64(),
        chaos.counts,
        if chaos.rules.is_some() {
            "by nftables in a namespace"
        } else {
            "not injected (no namespace)"
        },
        chaos.clock_offsets
    );
    for (app, rx) in &received {
        println!(
            "  {app}: {} media received, {} reconnects, {} active / {} unavailable states",
            rx.media.load(Ordering::SeqCst),
            rx.reconnects.load(Ordering::SeqCst),
            rx.active.load(Ordering::SeqCst),
            rx.unavailable.load(Ordering::SeqCst)
        );
    }
    println!(
        "  recovery after healing (fresh media at every subscriber): {recovery:?}; \
         /status samples {}, leakage violations {}; peak RSS KiB by node {:?} (bound {RSS_BOUND_KIB})",
        chaos.ledger.samples,
        chaos.ledger.violations.len(),
        chaos.peak_rss_kib
    );
    windows.slowest.sort();
    println!(
        "  during the run: the fleet was whole again {} times and every subscriber got fresh media \
         (slowest per window: median {:?}, max {:?}); {} windows ended by a new fault first",
        windows.recovered,
        windows.slowest.get(windows.slowest.len() / 2),
        windows.slowest.last(),
        windows.abandoned
    );
    assert!(
        windows.failures.is_empty(),
        "recovery while the fleet was whole: {:?}",
        windows.failures
    );
    assert!(
        chaos.ledger.violations.is_empty(),
        "media of an app on a node outside its allowed regions: {:?}",
        chaos.ledger.violations
    );
    assert!(
        total >= step / 2,
        "a fault in at least every other step: {total} in {step}: {:?}",
        chaos.counts
    );
    for (node, rss) in &chaos.peak_rss_kib {
        assert!(*rss < RSS_BOUND_KIB, "{node}: RSS {rss} KiB");
    }
}

async fn session(
    fleet: &ServedFleet,
    app: &str,
    channel: &str,
    role: Role,
    targets: &[&str],
) -> Session {
    let mut options = fleet.client_options();
    options.connect_timeout = Duration::from_secs(1);
    let targets: Vec<_> = targets.iter().map(|n| fleet.target(n)).collect();
    let user = if role == Role::Publish { "pub" } else { "sub" };
    Session::connect(&options, &targets, &fleet.join(app, channel, user, role))
        .await
        .unwrap_or_else(|e| panic!("{app} {user} connects: {e}"))
}

/// Reads a subscriber's events until `stop`, counting media and states; a
/// session that gave up reconnecting is reconnected again (every node it
/// knows may have been down at once).
async fn subscribe_loop(mut session: Session, rx: Arc<Received>, stop: Arc<AtomicBool>) {
    session.subscribe().await.expect("subscribe");
    while !stop.load(Ordering::SeqCst) {
        let event = tokio::time::timeout(Duration::from_millis(200), session.next_event()).await;
        match event {
            Ok(Some(Event::Media { .. })) => {
                rx.media.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Some(Event::State(state))) => {
                let counter = if state.state == SubscriptionStatus::Active {
                    &rx.active
                } else {
                    &rx.unavailable
                };
                counter.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Some(Event::Reconnected { .. })) => {
                rx.reconnects.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Some(Event::Closed { redirect, .. })) => {
                // The session's own reconnection rounds ran out: keep trying.
                let _ = session.reconnect(redirect).await;
            }
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => break,
        }
    }
}

/// Sends `RATE` media packets a second until `stop`, reconnecting the
/// session whenever its connection is gone.
async fn publish_loop(mut session: Session, stop: Arc<AtomicBool>) {
    let track = session
        .announce(TrackKind::Video, false, "cam")
        .await
        .expect("announce");
    let mut pace = tokio::time::interval(Duration::from_millis(1000 / RATE));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        pace.tick().await;
        if session.client().is_closed() {
            let _ = session.ensure_connected().await;
            continue;
        }
        seq += 1;
        let _ = session.send_media(track, seq, seq, b"chaos frame");
    }
}
