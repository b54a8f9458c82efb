//! Bad input from a client over raw QUIC (not the SDK, which would not send
//! it): malformed frames, a wrong version, a repeated track id, a control
//! stream ended without GOODBYE, oversize datagrams and messages. Each gets a
//! clear error code, and the relay keeps serving everyone else — a publisher
//! and subscriber keep exchanging media throughout.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use georelay::auth::Role;
use georelay::client::{Client, Event};
use georelay::error::ErrorCode;
use georelay::wire::stream::FrameReader;
use georelay::wire::{Announce, Frame, Hello, MediaHeader, SdkInfo, TrackKind};
use support::fleet::{FleetSpec, TestFleet};

const NODE: &str = "eu-fra-1";

/// A raw QUIC connection to `NODE` speaking `georelay/1`, with its control
/// stream open.
async fn raw(
    fleet: &TestFleet,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    FrameReader<quinn::RecvStream>,
) {
    let transport = Arc::new(georelay::tls::transport_config(
        georelay::tls::TransportKind::Client,
    ));
    let config = georelay::tls::client_config(Arc::clone(&fleet.pki.roots), transport)
        .expect("client config");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(config);
    let conn = endpoint
        .connect(fleet.node_addr(NODE), NODE)
        .expect("connect")
        .await
        .expect("handshake");
    let (send, recv) = conn.open_bi().await.expect("control stream");
    (endpoint, conn, send, FrameReader::new(recv))
}

fn hello(fleet: &TestFleet, version: u64, role: Role) -> Frame {
    Frame::Hello(Hello {
        version,
        app: "acme-health".into(),
        channel: "ward".into(),
        token: fleet.token("acme-health", "ward", "raw", role, 600),
        sdk: SdkInfo::default(),
    })
}

async fn send(stream: &mut quinn::SendStream, frame: &Frame) {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    stream.write_all(&buf).await.expect("write");
}

/// The application close code the relay ended the connection with.
async fn close_code(conn: &quinn::Connection) -> Option<ErrorCode> {
    match tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("closed in time")
    {
        quinn::ConnectionError::ApplicationClosed(close) => {
            ErrorCode::from_wire(close.error_code.into_inner())
        }
        other => panic!("not an application close: {other}"),
    }
}

/// A publisher and a subscriber that keep working; returns them and the
/// track.
async fn bystanders(fleet: &TestFleet) -> (Client, u64, Client) {
    let mut subscriber = fleet
        .connect(NODE, "acme-health", "ward", "nurse", Role::Subscribe, None)
        .await
        .expect("subscriber");
    subscriber.subscribe().await.expect("subscribe");
    let publisher = fleet
        .connect(NODE, "acme-health", "ward", "monitor", Role::Publish, None)
        .await
        .expect("publisher");
    let track = publisher
        .announce(TrackKind::Data, false, "vitals")
        .await
        .expect("announce");
    support::events::track_added(&mut subscriber).await;
    (publisher, track, subscriber)
}

/// The bystanders still exchange media: all of `count` packets arrive.
async fn still_served(publisher: &Client, track: u64, subscriber: &mut Client, first: u64) {
    for seq in first..first + 50 {
        publisher.send_media(track, seq, seq, b"ok").expect("send");
    }
    let mut got = 0;
    let until = georelay::clock::timer_now() + Duration::from_millis(500);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, subscriber.events().next()).await {
        if matches!(event, Event::Media { header, .. } if header.seq >= first) {
            got += 1;
        }
    }
    assert_eq!(got, 50, "the relay keeps serving everyone else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_wrong_versions_and_oversize_input_get_clear_codes() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &[NODE]).await;
    let (publisher, track, mut subscriber) = bystanders(&fleet).await;

    // Garbage on the control stream: PROTOCOL_VIOLATION, with an ERROR frame.
    let (_endpoint, conn, mut stream, mut reader) = raw(&fleet).await;
    stream
        .write_all(&[0x3f, 0x05, 1, 2, 3, 4, 5])
        .await
        .expect("write");
    match reader.next().await {
        Ok(Some(Frame::Error(error))) => {
            assert_eq!(error.error_code(), Some(ErrorCode::ProtocolViolation));
            assert!(!error.message.is_empty(), "the error names the problem");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert_eq!(close_code(&conn).await, Some(ErrorCode::ProtocolViolation));
    still_served(&publisher, track, &mut subscriber, 0).await;

    // A first frame that is not HELLO.
    let (_endpoint, conn, mut stream, _reader) = raw(&fleet).await;
    send(&mut stream, &Frame::Subscribe).await;
    assert_eq!(close_code(&conn).await, Some(ErrorCode::ProtocolViolation));

    // A protocol version this relay does not speak.
    let (_endpoint, conn, mut stream, _reader) = raw(&fleet).await;
    send(&mut stream, &hello(&fleet, 7, Role::Publish)).await;
    assert_eq!(close_code(&conn).await, Some(ErrorCode::UnsupportedVersion));

    // The same client-local track id announced twice.
    let (_endpoint, conn, mut stream, mut reader) = raw(&fleet).await;
    send(&mut stream, &hello(&fleet, 1, Role::Publish)).await;
    assert!(
        matches!(reader.next().await, Ok(Some(Frame::Welcome(_)))),
        "admitted"
    );
    let twice = Frame::Announce(Announce {
        track_id: 9,
        kind: TrackKind::Audio,
        e2ee: false,
        name: "mic".into(),
    });
    send(&mut stream, &twice).await;
    send(&mut stream, &twice).await;
    assert_eq!(close_code(&conn).await, Some(ErrorCode::ProtocolViolation));

    // The control stream finished without GOODBYE while the connection lives.
    let (_endpoint, conn, mut stream, mut reader) = raw(&fleet).await;
    send(&mut stream, &hello(&fleet, 1, Role::Subscribe)).await;
    assert!(
        matches!(reader.next().await, Ok(Some(Frame::Welcome(_)))),
        "admitted"
    );
    stream.finish().expect("finish");
    assert_eq!(close_code(&conn).await, Some(ErrorCode::ProtocolViolation));

    // An admitted publisher sends a datagram over the advertised payload
    // limit: dropped and counted as too_large; then a message over the
    // message limit: the connection ends with LIMIT_EXCEEDED.
    let (_endpoint, conn, mut stream, mut reader) = raw(&fleet).await;
    send(&mut stream, &hello(&fleet, 1, Role::Publish)).await;
    let Ok(Some(Frame::Welcome(welcome))) = reader.next().await else {
        panic!("admitted");
    };
    send(
        &mut stream,
        &Frame::Announce(Announce {
            track_id: 1,
            kind: TrackKind::Video,
            e2ee: false,
            name: "big".into(),
        }),
    )
    .await;
    let Ok(Some(Frame::AnnounceOk(ok))) = reader.next().await else {
        panic!("announced");
    };
    let header = MediaHeader {
        track: ok.track,
        seq: 0,
        timestamp_us: 0,
    };
    let mut datagram = BytesMut::new();
    header.encode(&mut datagram);
    datagram.extend_from_slice(&vec![7u8; welcome.max_datagram_payload as usize + 1]);
    let before = fleet.status(NODE).await.drops["too_large"];
    conn.send_datagram(datagram.freeze())
        .expect("QUIC itself accepts it");
    support::events::until(
        Duration::from_secs(5),
        "the oversize datagram is counted",
        || async { fleet.status(NODE).await.drops["too_large"] > before },
    )
    .await;
    assert_eq!(
        fleet.status(NODE).await.drops["too_large"],
        before + 1,
        "dropped and counted"
    );

    let mut oversize = BytesMut::new();
    georelay::wire::encode_message_stream_header(&mut oversize);
    georelay::wire::encode_message(
        ok.track,
        &vec![0u8; welcome.max_message_bytes as usize + 1],
        &mut oversize,
    );
    let mut messages = conn.open_uni().await.expect("uni");
    let _ = messages.write_all(&oversize).await;
    assert_eq!(close_code(&conn).await, Some(ErrorCode::LimitExceeded));

    still_served(&publisher, track, &mut subscriber, 1_000).await;
    fleet.fleet.shutdown().await;
}

/// Everything a client writes in one go, before it has read anything.
async fn send_all(stream: &mut quinn::SendStream, frames: &[Frame]) {
    let mut buf = BytesMut::new();
    for frame in frames {
        frame.encode(&mut buf);
    }
    stream.write_all(&buf).await.expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_pipelined_after_hello_wait_for_admission_and_die_with_a_refusal() {
    let fleet = TestFleet::start_nodes(FleetSpec::default(), &[NODE]).await;
    let announce = Frame::Announce(Announce {
        track_id: 7,
        kind: TrackKind::Video,
        e2ee: false,
        name: "cam".into(),
    });

    // Admitted: HELLO, ANNOUNCE and SUBSCRIBE in one write, and a datagram
    // before WELCOME can have arrived. WELCOME comes first, then the
    // pipelined ANNOUNCE is answered; the datagram (no key exists before
    // ANNOUNCE_OK) is dropped as unknown_track without closing anything.
    let unknown_before = fleet
        .status(NODE)
        .await
        .drops
        .get("unknown_track")
        .copied()
        .unwrap_or(0);
    let (_endpoint, conn, mut stream, mut reader) = raw(&fleet).await;
    send_all(
        &mut stream,
        &[
            hello(&fleet, 1, Role::Publish),
            announce.clone(),
            Frame::Subscribe,
        ],
    )
    .await;
    let mut datagram = BytesMut::new();
    MediaHeader {
        track: 12345,
        seq: 1,
        timestamp_us: 1,
    }
    .encode(&mut datagram);
    datagram.extend_from_slice(b"early");
    conn.send_datagram(datagram.freeze()).expect("datagram");
    let first = tokio::time::timeout(Duration::from_secs(5), reader.next())
        .await
        .expect("an answer")
        .expect("a frame");
    assert!(matches!(first, Some(Frame::Welcome(_))), "{first:?}");
    let second = tokio::time::timeout(Duration::from_secs(5), reader.next())
        .await
        .expect("an answer")
        .expect("a frame");
    assert!(
        matches!(&second, Some(Frame::AnnounceOk(ok)) if ok.track_id == 7),
        "the pipelined ANNOUNCE is answered after WELCOME: {second:?}"
    );
    support::events::until(
        Duration::from_secs(5),
        "the early datagram is counted as unknown_track",
        || async {
            let status = fleet.status(NODE).await;
            status.drops.get("unknown_track").copied().unwrap_or(0) > unknown_before
        },
    )
    .await;
    assert!(conn.close_reason().is_none(), "the session stays open");

    // Refused: a bad token with ANNOUNCE pipelined behind it. The client
    // gets the refusal and nothing else: the ANNOUNCE was never handled.
    let (_endpoint, conn, mut stream, mut reader) = raw(&fleet).await;
    let Frame::Hello(mut bad) = hello(&fleet, 1, Role::Publish) else {
        unreachable!("hello() builds a HELLO")
    };
    bad.token.push('x');
    send_all(&mut stream, &[Frame::Hello(bad), announce]).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), reader.next())
        .await
        .expect("an answer")
        .expect("a frame");
    assert!(
        matches!(&answer, Some(Frame::Error(e)) if e.error_code() == Some(ErrorCode::Unauthorized)),
        "{answer:?}"
    );
    assert_eq!(close_code(&conn).await, Some(ErrorCode::Unauthorized));
    let after = tokio::time::timeout(Duration::from_secs(1), reader.next()).await;
    assert!(
        !matches!(after, Ok(Ok(Some(_)))),
        "no frame after the refusal: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_channel_beyond_max_channels_per_app_is_limit_exceeded() {
    let spec = FleetSpec {
        extra: "[limits]\nmax_channels_per_app = 2\n".into(),
        ..FleetSpec::default()
    };
    let fleet = TestFleet::start_nodes(spec, &[NODE]).await;
    let join = |channel: &'static str| {
        fleet.connect(NODE, "acme-health", channel, "u", Role::Subscribe, None)
    };
    let first = join("one").await.expect("channel one");
    let _second = join("two").await.expect("channel two");
    let _more_of_two = join("two")
        .await
        .expect("a channel that exists takes more sessions");
    let refused = join("three").await.expect_err("a third channel");
    assert_eq!(refused.code(), Some(ErrorCode::LimitExceeded), "{refused}");
    assert!(
        refused.to_string().contains("max_channels_per_app"),
        "{refused}"
    );
    // Another app has its own budget.
    fleet
        .connect(NODE, "globex-media", "three", "u", Role::Subscribe, None)
        .await
        .expect("another app's channel");
    // The slot frees when the channel's last session leaves.
    first.close().await;
    support::events::until(
        Duration::from_secs(5),
        "channel one is released",
        || async { join("three").await.is_ok() },
    )
    .await;
}
