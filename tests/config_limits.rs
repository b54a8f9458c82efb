//! `[limits]` in regions.toml: every key parses into [`Limits`], ranges and
//! relations between keys are errors with a position, and the parsed limits
//! reach the QUIC configs and the accept gate.

use std::path::Path;

use georelay::config::{Fleet, Limits};
use georelay::gate::GateLimits;
use georelay::tls::TransportLimits;

const BASE: &str = r#"
[regions.eu]
countries = ["DE"]
[nodes.node-a]
region = "eu"
listen = "127.10.0.1:4433"
admin = "127.10.0.1:9090"
"#;

fn parse(limits: &str) -> Result<Fleet, String> {
    Fleet::parse(
        &format!("{BASE}[limits]\n{limits}"),
        Path::new("regions.toml"),
    )
    .map_err(|errors| errors.to_string())
}

#[test]
fn every_limit_key_parses() {
    let fleet = parse(
        r#"
stream_receive_window_bytes = 65536
connection_receive_window_bytes = 131072
send_window_bytes = 262144
max_bidi_streams = 1
max_uni_streams = 2
datagram_receive_buffer_bytes = 100000
datagram_send_buffer_bytes = 120000
idle_timeout_ms = 8000
keep_alive_ms = 2000
max_incoming = 100
incoming_buffer_size = 20000
incoming_buffer_size_total = 2000000
max_pending_hello = 50
hello_timeout_ms = 1500
max_connections_per_address = 4
max_connections = 500
retry_threshold = 10
retry_always = true
retry_token_lifetime_ms = 2000
max_subscribers_per_channel = 20
max_channels_per_app = 30
max_datagram_payload_bytes = 1000
"#,
    )
    .expect("valid limits");
    let expected = Limits {
        stream_receive_window_bytes: 65536,
        connection_receive_window_bytes: 131_072,
        send_window_bytes: 262_144,
        max_bidi_streams: 1,
        max_uni_streams: 2,
        datagram_receive_buffer_bytes: 100_000,
        datagram_send_buffer_bytes: 120_000,
        idle_timeout_ms: 8000,
        keep_alive_ms: 2000,
        max_incoming: 100,
        incoming_buffer_size: 20_000,
        incoming_buffer_size_total: 2_000_000,
        max_pending_hello: 50,
        hello_timeout_ms: 1500,
        max_connections_per_address: 4,
        max_connections: 500,
        retry_threshold: 10,
        retry_always: true,
        retry_token_lifetime_ms: 2000,
        max_subscribers_per_channel: 20,
        max_channels_per_app: 30,
        max_datagram_payload_bytes: 1000,
        ..Limits::default()
    };
    assert_eq!(fleet.limits, expected);

    let transport = TransportLimits::for_clients(&fleet.limits);
    assert_eq!(
        (transport.max_bidi_streams, transport.max_uni_streams),
        (1, 2)
    );
    assert_eq!(transport.receive_window, 131_072);
    assert_eq!(transport.idle_timeout.as_millis(), 8000);
    let gate = GateLimits::from_limits(&fleet.limits);
    assert_eq!((gate.max_per_source, gate.max_connections), (4, 500));
    assert!(gate.retry_always);
    assert_eq!(gate.hello_deadline.as_millis(), 1500);
}

#[test]
fn out_of_range_limits_are_errors_with_positions() {
    let errors = parse("max_bidi_streams = 17\nhello_timeout_ms = 50\n").expect_err("ranges");
    let first_line = BASE.lines().count() + 2;
    assert!(
        errors.contains(&format!(
            "regions.toml:{first_line}:20: limits.max_bidi_streams: must be between 1 and 16, found 17"
        )),
        "{errors}"
    );
    assert!(
        errors.contains("limits.hello_timeout_ms: must be between 100 and 60000"),
        "{errors}"
    );
    let errors = parse("retry_always = 1\n").expect_err("type");
    assert!(
        errors.contains("limits.retry_always: expected true or false"),
        "{errors}"
    );
}

#[test]
fn limits_that_contradict_each_other_are_errors() {
    let errors = parse(
        "stream_receive_window_bytes = 200000\nconnection_receive_window_bytes = 100000\n\
         keep_alive_ms = 6000\nincoming_buffer_size = 9000\nincoming_buffer_size_total = 8000\n\
         max_connections = 10\nmax_connections_per_address = 11\n",
    )
    .expect_err("relations");
    for expected in [
        "limits.connection_receive_window_bytes: must be at least stream_receive_window_bytes (200000)",
        "limits.keep_alive_ms: must be at most half of idle_timeout_ms (10000)",
        "limits.incoming_buffer_size_total: must be at least incoming_buffer_size (9000)",
        "limits.max_connections_per_address: must be at most max_connections (10)",
    ] {
        assert!(errors.contains(expected), "{expected} in {errors}");
    }
}
