//! Checks that `docs/PROTOCOL.md` and `georelay::wire` agree: every hex
//! example in the spec decodes to the value it describes and that value
//! encodes to exactly those bytes; the frame type and error code tables list
//! what the code defines.

use std::collections::BTreeMap;

use bytes::BytesMut;
use georelay::error::ErrorCode;
use georelay::wire::frame::type_name;
use georelay::wire::{
    ChannelRef, ErrorFrame, Frame, Hello, MediaHeader, MessageDecoder, PeerHello, SdkInfo,
    SubscriptionState, SubscriptionStatus, Target, Welcome, decode_frame, encode_message,
    encode_message_stream_header,
};

const TOKEN: &str = "gr1.AAthY21lLWhlYWx0aAAGcm9vbS0xAAVhbGljZQIAAAAAaE7hgA.IT8iEseYh4PoiS2NaJ-KFPfN-SI5wDb958h-CXH0sGY";

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The hex blocks marked `<!-- wire-example: NAME -->`, by name. In each line
/// the bytes are the hex pairs before `|`.
fn examples(spec: &str) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut lines = spec.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("<!-- wire-example: ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        assert_eq!(lines.next(), Some("```text"), "example {name}: fence");
        let mut bytes = Vec::new();
        for row in lines.by_ref().take_while(|row| *row != "```") {
            let (hex, _meaning) = row
                .split_once('|')
                .unwrap_or_else(|| panic!("example {name}: no `|` in {row:?}"));
            for pair in hex.split_whitespace() {
                let byte = u8::from_str_radix(pair, 16)
                    .unwrap_or_else(|_| panic!("example {name}: bad hex {pair:?}"));
                assert_eq!(pair.len(), 2, "example {name}: {pair:?}");
                bytes.push(byte);
            }
        }
        assert!(
            found.insert(name.to_owned(), bytes).is_none(),
            "example {name} twice"
        );
    }
    found
}

fn spec_frames() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "hello",
            Frame::Hello(Hello {
                version: 1,
                app: "acme-health".into(),
                channel: "room-1".into(),
                token: TOKEN.into(),
                sdk: SdkInfo {
                    name: "georelay-rust".into(),
                    version: "0.1.0".into(),
                    device: "desktop".into(),
                    os: "linux".into(),
                    network: "wifi".into(),
                },
            }),
        ),
        (
            "welcome",
            Frame::Welcome(Welcome {
                session_id: 42,
                node: "eu-fra-1".into(),
                region: "eu".into(),
                max_datagram_payload: 1138,
                max_message_bytes: 65536,
            }),
        ),
        (
            "error-redirect",
            Frame::Error(ErrorFrame {
                redirect: vec![Target {
                    node: "eu-fra-1".into(),
                    addr: "127.10.0.1:4433".into(),
                }],
                ..ErrorFrame::new(ErrorCode::GeofenceRedirect, "app not allowed here")
            }),
        ),
        (
            "subscription-state-active",
            Frame::SubscriptionState(SubscriptionState {
                state: SubscriptionStatus::Active,
                code: 0,
                message: "media path established from eu-fra-1".into(),
            }),
        ),
        (
            "mesh-subscribe-ok",
            Frame::MeshSubscribeOk(ChannelRef {
                app: "acme-health".into(),
                channel: "room-1".into(),
                origin: "eu-fra-1".into(),
            }),
        ),
        (
            "peer-hello",
            Frame::PeerHello(PeerHello {
                node: "eu-fra-1".into(),
                version: 1,
                policy_version: Some("6a09e667bb67ae85".into()),
            }),
        ),
        (
            "peer-hello-old-form",
            Frame::PeerHello(PeerHello {
                node: "eu-fra-1".into(),
                version: 1,
                policy_version: None,
            }),
        ),
    ]
}

#[test]
fn the_spec_has_exactly_the_tested_examples() {
    let names: Vec<String> = examples(&spec()).into_keys().collect();
    assert_eq!(
        names,
        [
            "error-redirect",
            "hello",
            "media-datagram",
            "mesh-subscribe-ok",
            "message-stream",
            "peer-hello",
            "peer-hello-old-form",
            "subscription-state-active",
            "welcome"
        ]
    );
}

#[test]
fn frame_examples_decode_and_encode_byte_for_byte() {
    let examples = examples(&spec());
    for (name, frame) in spec_frames() {
        let bytes = &examples[name];
        assert_eq!(
            decode_frame(bytes),
            Ok(Some((frame.clone(), bytes.len()))),
            "decode {name}"
        );
        let mut encoded = BytesMut::new();
        frame
            .try_encode(&mut encoded)
            .unwrap_or_else(|e| panic!("encode {name}: {e}"));
        assert_eq!(&encoded[..], &bytes[..], "encode {name}");
    }
}

#[test]
fn media_example_decodes_and_encodes_byte_for_byte() {
    let bytes = &examples(&spec())["media-datagram"];
    let header = MediaHeader {
        track: 300,
        seq: 7,
        timestamp_us: 1_700_000_000_000_000,
    };
    assert_eq!(MediaHeader::parse(bytes), Ok((header, 11)));
    assert_eq!(MediaHeader::parse_track(bytes), Ok(300));
    assert_eq!(&bytes[11..], b"hi");
    let mut encoded = BytesMut::new();
    header.encode(&mut encoded);
    encoded.extend_from_slice(b"hi");
    assert_eq!(&encoded[..], &bytes[..]);
}

#[test]
fn message_stream_example_decodes_and_encodes_byte_for_byte() {
    let bytes = &examples(&spec())["message-stream"];
    let mut decoder = MessageDecoder::new(65536);
    decoder.push(bytes);
    let message = decoder.next_message().expect("decodes").expect("complete");
    assert_eq!((message.track, &message.payload[..]), (300, &b"hello"[..]));
    assert_eq!(decoder.next_message(), Ok(None));
    let mut encoded = BytesMut::new();
    encode_message_stream_header(&mut encoded);
    encode_message(300, b"hello", &mut encoded);
    assert_eq!(&encoded[..], &bytes[..]);
}

/// Rows of a markdown table whose first cell matches `first_cell`, split
/// into trimmed cells.
fn table_rows(spec: &str, first_cell: impl Fn(&str) -> bool) -> Vec<Vec<String>> {
    spec.lines()
        .filter_map(|line| line.strip_prefix('|'))
        .map(|row| {
            row.split('|')
                .map(|cell| cell.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells.first().is_some_and(|cell| first_cell(cell)))
        .collect()
}

#[test]
fn frame_type_table_matches_the_codec() {
    let spec = spec();
    let rows = table_rows(&spec, |cell| cell.starts_with("`0x"));
    assert_eq!(rows.len(), 19, "one row per frame type");
    for row in rows {
        let number = u64::from_str_radix(row[0].trim_matches('`').trim_start_matches("0x"), 16)
            .expect("hex type");
        assert_eq!(
            type_name(number).map(|name| format!("`{name}`")),
            Some(row[1].clone()),
            "type {number:#x}"
        );
    }
}

#[test]
fn error_code_table_matches_error_rs() {
    let spec = spec();
    let rows = table_rows(&spec, |cell| {
        !cell.is_empty() && cell.chars().all(|c| c.is_ascii_digit())
    });
    let listed: Vec<(u64, String)> = rows
        .iter()
        .filter(|row| row[0] != "0")
        .map(|row| {
            (
                row[0].parse().expect("number"),
                row[1].trim_matches('`').to_owned(),
            )
        })
        .collect();
    let expected: Vec<(u64, String)> = ErrorCode::ALL
        .iter()
        .map(|code| (code.to_wire(), code.name().to_owned()))
        .collect();
    assert_eq!(listed, expected);
}
