//! Frame codec tests: property round trips, truncation, garbage and limits.

use super::*;
use crate::wire::varint::MAX as VARINT_MAX;
use proptest::collection::vec;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn kind() -> impl Strategy<Value = TrackKind> {
    prop_oneof![
        Just(TrackKind::Audio),
        Just(TrackKind::Video),
        Just(TrackKind::Data)
    ]
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0..64u64, 0..=VARINT_MAX]
}

fn track() -> impl Strategy<Value = TrackInfo> {
    (number(), name(), kind(), any::<bool>(), name()).prop_map(
        |(track, publisher, kind, e2ee, name)| TrackInfo {
            track,
            publisher,
            kind,
            e2ee,
            name,
        },
    )
}

fn channel() -> impl Strategy<Value = ChannelRef> {
    (name(), name(), name()).prop_map(|(app, channel, origin)| ChannelRef {
        app,
        channel,
        origin,
    })
}

/// Every frame variant, with every field inside its limits.
fn any_frame() -> impl Strategy<Value = Frame> {
    let sdk = (name(), name(), name(), name(), name()).prop_map(
        |(name, version, device, os, network)| SdkInfo {
            name,
            version,
            device,
            os,
            network,
        },
    );
    let target = (name(), name()).prop_map(|(node, addr)| Target { node, addr });
    prop_oneof![
        (name(), name(), "[A-Za-z0-9._-]{0,300}", sdk).prop_map(|(app, channel, token, sdk)| {
            Frame::Hello(Hello {
                version: PROTOCOL_VERSION,
                app,
                channel,
                token,
                sdk,
            })
        }),
        (number(), name(), name(), number(), number()).prop_map(|(s, node, region, d, m)| {
            Frame::Welcome(Welcome {
                session_id: s,
                node,
                region,
                max_datagram_payload: d,
                max_message_bytes: m,
            })
        }),
        (1..=VARINT_MAX, "\\PC{0,40}", vec(target, 0..5)).prop_map(|(code, message, redirect)| {
            Frame::Error(ErrorFrame {
                code,
                message,
                redirect,
            })
        }),
        (number(), kind(), any::<bool>(), name()).prop_map(|(track_id, kind, e2ee, name)| {
            Frame::Announce(Announce {
                track_id,
                kind,
                e2ee,
                name,
            })
        }),
        (number(), number())
            .prop_map(|(track_id, track)| Frame::AnnounceOk(AnnounceOk { track_id, track })),
        number().prop_map(|track| Frame::Unannounce { track }),
        Just(Frame::Subscribe),
        Just(Frame::Unsubscribe),
        track().prop_map(Frame::TrackAdded),
        number().prop_map(|track| Frame::TrackRemoved { track }),
        (any::<bool>(), number(), name()).prop_map(|(unavailable, code, message)| {
            Frame::SubscriptionState(SubscriptionState {
                state: if unavailable {
                    SubscriptionStatus::Unavailable
                } else {
                    SubscriptionStatus::Active
                },
                code,
                message,
            })
        }),
        Just(Frame::Goodbye),
        (name(), proptest::option::of(name())).prop_map(|(node, policy_version)| {
            Frame::PeerHello(PeerHello {
                node,
                version: PROTOCOL_VERSION,
                policy_version,
            })
        }),
        (name(), number(), vec((name(), number()), 0..5)).prop_map(|(origin, seq, links)| {
            Frame::LinkState(LinkState {
                origin,
                seq,
                links: links
                    .into_iter()
                    .map(|(peer, rtt_us)| LinkInfo { peer, rtt_us })
                    .collect(),
            })
        }),
        (channel(), number(), vec(track(), 0..5)).prop_map(|(c, seq, tracks)| {
            Frame::ChannelAnnounce(ChannelAnnounce {
                app: c.app,
                channel: c.channel,
                origin: c.origin,
                seq,
                tracks,
            })
        }),
        (channel(), vec(name(), 0..5)).prop_map(|(c, path)| {
            Frame::MeshSubscribe(MeshSubscribe {
                app: c.app,
                channel: c.channel,
                origin: c.origin,
                path,
            })
        }),
        channel().prop_map(Frame::MeshUnsubscribe),
        channel().prop_map(Frame::MeshSubscribeOk),
        (channel(), 1..=VARINT_MAX, name()).prop_map(|(c, code, message)| {
            Frame::MeshSubscribeError(MeshSubscribeError {
                app: c.app,
                channel: c.channel,
                origin: c.origin,
                code,
                message,
            })
        }),
    ]
}

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    buf.to_vec()
}

/// A frame with the given type and raw body bytes.
fn raw_frame(frame_type: u64, body: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    varint::encode(frame_type, &mut buf);
    varint::encode(body.len() as u64, &mut buf);
    buf.extend_from_slice(body);
    buf.to_vec()
}

fn announce(name: &str) -> Frame {
    Frame::Announce(Announce {
        track_id: 7,
        kind: TrackKind::Video,
        e2ee: true,
        name: name.to_owned(),
    })
}

proptest! {
    #[test]
    fn every_frame_round_trips(frame in any_frame(), tail in vec(any::<u8>(), 0..8)) {
        let mut bytes = BytesMut::new();
        prop_assert_eq!(frame.try_encode(&mut bytes), Ok(()));
        prop_assert_eq!(bytes.to_vec(), encoded(&frame));
        let frame_len = bytes.len();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(decode_frame(&bytes), Ok(Some((frame.clone(), frame_len))));
        prop_assert_eq!(type_name(frame.frame_type()), Some(frame.name()));
    }

    #[test]
    fn every_truncation_is_incomplete_not_an_error(frame in any_frame()) {
        let bytes = encoded(&frame);
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode_frame(&bytes[..cut]), Ok(None), "cut at {}", cut);
        }
    }

    #[test]
    fn a_stream_fed_in_pieces_yields_the_same_frames(
        frames in vec(any_frame(), 1..6),
        piece in 1usize..17,
    ) {
        let mut stream = BytesMut::new();
        for frame in &frames {
            frame.encode(&mut stream);
        }
        let mut decoder = FrameDecoder::new(MAX_FRAME_BODY);
        let mut decoded = Vec::new();
        for chunk in stream.chunks(piece) {
            decoder.push(chunk);
            while let Some(frame) = decoder.next_frame()? {
                decoded.push(frame);
            }
        }
        prop_assert_eq!(decoded, frames);
        prop_assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn garbage_never_panics(bytes in vec(any::<u8>(), 0..256)) {
        if let Ok(Some((_, consumed))) = decode_frame(&bytes) {
            prop_assert!(consumed <= bytes.len());
        }
    }

    #[test]
    fn garbage_bodies_of_known_types_never_panic(
        frame_type in 0x01u64..0x26,
        body in vec(any::<u8>(), 0..128),
    ) {
        let bytes = raw_frame(frame_type, &body);
        if let Ok(Some((frame, consumed))) = decode_frame(&bytes) {
            prop_assert_eq!(consumed, bytes.len());
            // Whatever decodes re-encodes to a frame that decodes the same.
            let again = encoded(&frame);
            prop_assert_eq!(decode_frame(&again), Ok(Some((frame, again.len()))));
        }
    }
}

#[test]
fn unknown_frame_types_are_protocol_violations() {
    for frame_type in [0x00, 0x05, 0x18, 0x27, 0x3f, 0x4000] {
        let error = decode_frame(&raw_frame(frame_type, &[])).unwrap_err();
        assert_eq!(error, WireError::UnknownFrame(frame_type));
        assert_eq!(error.code(), ErrorCode::ProtocolViolation);
    }
}

#[test]
fn oversize_body_is_refused_before_it_arrives() {
    // Only the header: the decoder must not wait for 64 KiB + 1 bytes.
    let mut header = BytesMut::new();
    varint::encode(frame_type::ANNOUNCE, &mut header);
    varint::encode(MAX_FRAME_BODY as u64 + 1, &mut header);
    let error = decode_frame(&header).unwrap_err();
    assert_eq!(
        error,
        WireError::Oversize {
            what: "frame body",
            len: MAX_FRAME_BODY + 1,
            max: MAX_FRAME_BODY
        }
    );
    assert_eq!(error.code(), ErrorCode::LimitExceeded);

    let mut small = FrameDecoder::new(4);
    small.push(&encoded(&announce("camera")));
    assert!(matches!(
        small.next_frame(),
        Err(WireError::Oversize { max: 4, .. })
    ));
}

#[test]
fn string_limits_are_enforced_on_both_sides() {
    let at_limit = announce(&"n".repeat(MAX_NAME_LEN));
    assert!(at_limit.try_encode(&mut BytesMut::new()).is_ok());
    assert!(decode_frame(&encoded(&at_limit)).unwrap().is_some());

    let over = announce(&"n".repeat(MAX_NAME_LEN + 1));
    let expected = WireError::Oversize {
        what: "name",
        len: MAX_NAME_LEN + 1,
        max: MAX_NAME_LEN,
    };
    let mut buf = BytesMut::new();
    assert_eq!(over.try_encode(&mut buf), Err(expected.clone()));
    assert!(buf.is_empty(), "try_encode appends nothing on error");
    assert_eq!(decode_frame(&encoded(&over)), Err(expected));
}

#[test]
fn list_limits_are_enforced_before_reading_items() {
    let too_many = Frame::MeshSubscribe(MeshSubscribe {
        app: "a".into(),
        channel: "c".into(),
        origin: "o".into(),
        path: vec![String::new(); MAX_PATH_NODES + 1],
    });
    let expected = WireError::Oversize {
        what: "path",
        len: MAX_PATH_NODES + 1,
        max: MAX_PATH_NODES,
    };
    assert_eq!(decode_frame(&encoded(&too_many)), Err(expected.clone()));
    assert_eq!(too_many.try_encode(&mut BytesMut::new()), Err(expected));

    // A huge declared count with no items behind it allocates nothing.
    let body = [0x01, 0x01, b'a', 0xbf, 0xff, 0xff, 0xff];
    assert!(matches!(
        decode_frame(&raw_frame(frame_type::ERROR, &body)),
        Err(WireError::Oversize {
            what: "redirect",
            ..
        })
    ));
}

#[test]
fn a_body_larger_than_64_kib_is_refused_by_try_encode() {
    let tracks = (0..MAX_TRACKS as u64)
        .map(|track| TrackInfo {
            track,
            publisher: "p".repeat(MAX_NAME_LEN),
            kind: TrackKind::Audio,
            e2ee: false,
            name: "n".repeat(MAX_NAME_LEN),
        })
        .collect();
    let frame = Frame::ChannelAnnounce(ChannelAnnounce {
        app: "a".into(),
        channel: "c".into(),
        origin: "o".into(),
        seq: 1,
        tracks,
    });
    assert!(matches!(
        frame.try_encode(&mut BytesMut::new()),
        Err(WireError::Oversize {
            what: "frame body",
            ..
        })
    ));
}

#[test]
fn invalid_field_values_are_named() {
    // ANNOUNCE: track_id 7, kind 1, e2ee 2 (not a boolean), name "".
    let bad_bool = raw_frame(frame_type::ANNOUNCE, &[0x07, 0x01, 0x02, 0x00]);
    assert_eq!(
        decode_frame(&bad_bool),
        Err(WireError::InvalidValue {
            field: "e2ee",
            value: 2
        })
    );
    let bad_kind = raw_frame(frame_type::ANNOUNCE, &[0x07, 0x03, 0x00, 0x00]);
    assert_eq!(
        decode_frame(&bad_kind),
        Err(WireError::InvalidValue {
            field: "kind",
            value: 3
        })
    );
    let bad_state = raw_frame(frame_type::SUBSCRIPTION_STATE, &[0x02, 0x00, 0x00]);
    assert_eq!(
        decode_frame(&bad_state),
        Err(WireError::InvalidValue {
            field: "state",
            value: 2
        })
    );
    let zero_code = raw_frame(frame_type::ERROR, &[0x00, 0x00, 0x00]);
    assert_eq!(
        decode_frame(&zero_code),
        Err(WireError::InvalidValue {
            field: "code",
            value: 0
        })
    );
    let bad_utf8 = raw_frame(frame_type::ANNOUNCE, &[0x07, 0x01, 0x00, 0x01, 0xff]);
    assert_eq!(decode_frame(&bad_utf8), Err(WireError::InvalidUtf8("name")));
}

#[test]
fn trailing_and_truncated_bodies_are_protocol_violations() {
    let mut body = encoded(&Frame::TrackRemoved { track: 9 });
    // Body of TRACK_REMOVED plus one stray byte.
    let trailing = raw_frame(frame_type::TRACK_REMOVED, &[0x09, 0x00]);
    assert_eq!(
        decode_frame(&trailing),
        Err(WireError::TrailingBytes {
            frame: "TRACK_REMOVED"
        })
    );
    assert_eq!(
        decode_frame(&raw_frame(frame_type::SUBSCRIBE, &[0x00])),
        Err(WireError::TrailingBytes { frame: "SUBSCRIBE" })
    );
    // A complete frame whose body ends inside a field.
    let short = raw_frame(frame_type::ANNOUNCE_OK, &[0x07]);
    let error = decode_frame(&short).unwrap_err();
    assert_eq!(error, WireError::Truncated);
    assert_eq!(error.code(), ErrorCode::ProtocolViolation);
    body.truncate(body.len() - 1);
    assert_eq!(decode_frame(&body), Ok(None));
}

#[test]
fn other_versions_are_refused_with_unsupported_version() {
    // HELLO with version 2 and a body this version cannot read.
    let hello = raw_frame(frame_type::HELLO, &[0x02, 0xff, 0xff]);
    let error = decode_frame(&hello).unwrap_err();
    assert_eq!(error, WireError::UnsupportedVersion { version: 2 });
    assert_eq!(error.code(), ErrorCode::UnsupportedVersion);
    let peer = Frame::PeerHello(PeerHello {
        node: "n".into(),
        version: 3,
        policy_version: None,
    });
    assert_eq!(
        peer.try_encode(&mut BytesMut::new()),
        Err(WireError::UnsupportedVersion { version: 3 })
    );
}

#[test]
fn unknown_error_codes_round_trip() {
    let frame = Frame::Error(ErrorFrame {
        code: 0x1234,
        message: "from the future".into(),
        redirect: Vec::new(),
    });
    let bytes = encoded(&frame);
    let Ok(Some((Frame::Error(decoded), _))) = decode_frame(&bytes) else {
        panic!("ERROR frame did not decode");
    };
    assert_eq!(decoded.code, 0x1234);
    assert_eq!(decoded.error_code(), None);
    let known = ErrorFrame::new(ErrorCode::GeofenceRedirect, "go");
    assert_eq!(known.error_code(), Some(ErrorCode::GeofenceRedirect));
}

#[test]
fn numbers_above_62_bits_are_refused_by_try_encode() {
    let frame = Frame::TrackRemoved { track: u64::MAX };
    assert_eq!(
        frame.try_encode(&mut BytesMut::new()),
        Err(WireError::VarintOverflow)
    );
}

#[test]
fn senders_split_the_frames_by_protocol_side() {
    assert_eq!(Frame::Subscribe.sender(), Sender::Client);
    assert_eq!(Frame::TrackRemoved { track: 1 }.sender(), Sender::Relay);
    assert_eq!(
        Frame::MeshUnsubscribe(ChannelRef {
            app: String::new(),
            channel: String::new(),
            origin: String::new()
        })
        .sender(),
        Sender::Node
    );
}
