//! Shared fixtures of the metadata integration tests: a deterministic
//! multi-day event stream across two apps, two nodes and mesh links, and a
//! private PostgreSQL schema per test.

use std::collections::BTreeMap;

use georelay::config::IpMode;
use georelay::error::ErrorCode;
use georelay::ids::{AppId, CountryCode, NodeId, RegionId};
use georelay::metadata::day::DAY_MS;
use georelay::metadata::{
    Event, EventKind, GeofenceDecision, RetentionPolicy, SdkInfo, SessionRole, minimise,
};

/// Day 0 of the fixtures: 2024-10-04T00:00:00Z.
pub(crate) const T0: u64 = 20_000 * DAY_MS;
/// An app with the fleet's 30-day retention.
pub(crate) const LONG_APP: &str = "long-app";
/// An app with a 7-day retention.
pub(crate) const SHORT_APP: &str = "short-app";
const HOUR_MS: u64 = 3_600_000;

/// Fleet 30 days, IP addresses 7 days, `short-app` 7 days.
pub(crate) fn policy() -> RetentionPolicy {
    RetentionPolicy::new(
        30,
        7,
        BTreeMap::from([(AppId::from(LONG_APP), 30), (AppId::from(SHORT_APP), 7)]),
    )
}

/// The events of fixture day `day` (0-based), each at a distinct instant,
/// in time order.
pub(crate) fn day_events(day: u64) -> Vec<Event> {
    let mut events = Vec::new();
    let apps = [
        (LONG_APP, "eu-fra-1", "eu", IpMode::Full),
        (SHORT_APP, "us-iad-1", "us", IpMode::Truncate),
    ];
    for hour in [1u64, 7, 13, 19] {
        for (index, (app, node, region, ip_mode)) in (0u64..).zip(apps) {
            let base = T0 + day * DAY_MS + hour * HOUR_MS + index * 1000;
            let session_id = day * 100 + hour * 2 + index;
            let event = |offset: u64, kind| Event {
                at_ms: base + offset,
                node: NodeId::from(node),
                region: RegionId::from(region),
                app: Some(AppId::from(app)),
                kind,
            };
            let host = (day * 4 + hour) % 250 + 1;
            events.push(event(
                0,
                EventKind::SessionOpened {
                    session_id,
                    user: format!("user-{day}-{hour}-{index}"),
                    channel: format!("room-{}", hour % 3),
                    role: if hour % 2 == 0 {
                        SessionRole::Publish
                    } else {
                        SessionRole::Subscribe
                    },
                    client_country: CountryCode::parse(if index == 0 { "DE" } else { "US" }),
                    client_region: Some(RegionId::from(region)),
                    client_ip: minimise(format!("198.51.{index}.{host}").parse().unwrap(), ip_mode),
                    sdk: SdkInfo {
                        name: "georelay-test".into(),
                        version: "1.0".into(),
                        device: "desktop".into(),
                        os: "linux".into(),
                        network: "wifi".into(),
                    },
                },
            ));
            events.push(event(
                1,
                EventKind::QualitySample {
                    session_id,
                    loss_ratio: ((day * 7 + hour * 3 + index) % 13) as f64 / 100.0,
                    bitrate_in_bps: 500_000 + day * 1000,
                    bitrate_out_bps: 900_000 + hour * 1000,
                    rtt_ms: 20.0 + day as f64 * 0.5 + hour as f64 * 0.25,
                    jitter_ms: (hour % 2 == 1).then_some(1.5),
                    drops: BTreeMap::from([("queue_full".to_owned(), day % 4)]),
                },
            ));
            let decision = match (day + hour / 6) % 3 {
                0 => GeofenceDecision::Denied {
                    code: ErrorCode::GeofenceDenied,
                    reason: "client country not allowed".into(),
                },
                1 => GeofenceDecision::Redirected {
                    to: vec![NodeId::from("eu-ams-1")],
                },
                _ => GeofenceDecision::RouteChosen {
                    path: vec![NodeId::from(node), NodeId::from("eu-ams-1")],
                },
            };
            events.push(event(
                2,
                EventKind::Geofence {
                    session_id: Some(session_id),
                    decision,
                },
            ));
            events.push(event(
                3,
                EventKind::SessionClosed {
                    session_id,
                    duration_ms: (hour + 1) * 60_000 + index * 30_000,
                    bytes_in: 10_000 * (day + 1),
                    bytes_out: 20_000 * (hour + 1),
                    packets_in: 10 * (day + 1),
                    packets_out: 20 * (hour + 1),
                    close_code: (hour == 13).then_some(ErrorCode::GeofenceRevoked),
                },
            ));
        }
    }
    events.push(Event {
        at_ms: T0 + day * DAY_MS + 5 * HOUR_MS,
        node: NodeId::from("eu-fra-1"),
        region: RegionId::from("eu"),
        app: None,
        kind: EventKind::LinkUp {
            peer: NodeId::from("us-iad-1"),
            rtt_ms: 80.0,
        },
    });
    events.sort_by_key(|event| event.at_ms);
    events
}

/// What a store must hold at `now_ms` under `policy`, given everything
/// written: exactly the unexpired events, without client addresses older
/// than the IP retention.
pub(crate) fn expected_after_sweep(
    written: &[Event],
    policy: &RetentionPolicy,
    now_ms: u64,
) -> Vec<Event> {
    written
        .iter()
        .filter(|event| !policy.is_expired(event, now_ms))
        .cloned()
        .map(|mut event| {
            if event.at_ms < policy.ip_cutoff_ms(now_ms) {
                if let EventKind::SessionOpened { client_ip, .. } = &mut event.kind {
                    *client_ip = georelay::metadata::MinimisedIp::dropped();
                }
            }
            event
        })
        .collect()
}

/// The PostgreSQL server the tests use (`GEORELAY_TEST_PG_DSN`, which
/// `.ci/postgres.sh` starts on loopback), or `None` where there is none:
/// allowed locally (the test then skips), never in CI.
pub(crate) fn pg_base_dsn() -> Option<String> {
    let Ok(base) = std::env::var("GEORELAY_TEST_PG_DSN") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide GEORELAY_TEST_PG_DSN (source .ci/postgres.sh)"
        );
        eprintln!("skipping: GEORELAY_TEST_PG_DSN is not set (source .ci/postgres.sh)");
        return None;
    };
    Some(base)
}

/// A name no other test run uses at the same time: `tag`, the process id
/// and the wall clock's nanoseconds.
pub(crate) fn unique_name(tag: &str) -> String {
    let nanos = georelay::clock::wall_now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}_{}_{nanos}", std::process::id())
}

/// A private schema of the test server for one test; `dsn` connects with
/// it as the search path.
pub(crate) struct PgSchema {
    pub(crate) admin: tokio_postgres::Client,
    pub(crate) name: String,
    pub(crate) dsn: String,
}

impl PgSchema {
    /// Creates `t_<tag>_…`, or `None` without a test server (see
    /// [`pg_base_dsn`]).
    pub(crate) async fn create(tag: &str) -> Option<Self> {
        let base = pg_base_dsn()?;
        let name = unique_name(&format!("t_{tag}"));
        let (admin, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        let dsn = format!("{base} options='-c search_path={name}'");
        Some(Self { admin, name, dsn })
    }

    /// Drops the schema and everything in it.
    pub(crate) async fn drop_schema(self) {
        self.admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .unwrap();
    }
}
