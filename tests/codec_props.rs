//! Properties of every parser a peer reaches, through the public API only:
//! valid inputs round-trip, and damaged ones (bytes flipped, cut, inserted)
//! never panic and never decode to something that does not re-encode. The
//! same inputs seed the fuzz targets in `fuzz/`.
//!
//! - control frames of both protocols, whole and fed in pieces;
//! - media datagram headers and message streams;
//! - `gr1` tokens: minted claims verify, and no single-byte change of a
//!   valid token verifies;
//! - `regions.toml`: damaged files never panic the validator and every
//!   diagnostic points inside the text.

use std::path::Path;

use bytes::BytesMut;
use georelay::auth::{Claims, Role, TokenKey, mint, verify};
use georelay::config::Fleet;
use georelay::ids::AppId;
use georelay::wire::{
    ChannelAnnounce, Frame, FrameDecoder, Hello, LinkInfo, LinkState, MediaHeader, MeshSubscribe,
    MessageDecoder, PeerHello, SdkInfo, TrackInfo, TrackKind, decode_frame, encode_message,
    encode_message_stream_header,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// A damage to apply to an encoding.
#[derive(Clone, Debug)]
enum Damage {
    Flip { at: usize, mask: u8 },
    Cut { at: usize },
    Insert { at: usize, byte: u8 },
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        any::<usize>().prop_map(|at| Damage::Cut { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert { at, byte }),
    ];
    vec(one, 1..4)
}

fn damaged(mut bytes: Vec<u8>, damages: &[Damage]) -> Vec<u8> {
    for damage in damages {
        let len = bytes.len().max(1);
        match *damage {
            Damage::Flip { at, mask } if !bytes.is_empty() => bytes[at % len] ^= mask,
            Damage::Cut { at } => bytes.truncate(at % len),
            Damage::Insert { at, byte } => bytes.insert(at % (bytes.len() + 1), byte),
            Damage::Flip { .. } => {}
        }
    }
    bytes
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,24}"
}

fn track_info() -> impl Strategy<Value = TrackInfo> {
    (any::<u32>(), name(), 0..3u64, any::<bool>(), name()).prop_map(
        |(track, publisher, kind, e2ee, name)| TrackInfo {
            track: u64::from(track),
            publisher,
            kind: TrackKind::from_wire(kind).unwrap_or(TrackKind::Data),
            e2ee,
            name,
        },
    )
}

/// Frames of both protocols, the mesh ones with lists up to their limits.
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (name(), name(), "[ -~]{0,200}", name()).prop_map(|(app, channel, token, os)| {
            Frame::Hello(Hello {
                version: 1,
                app,
                channel,
                token,
                sdk: SdkInfo {
                    os,
                    ..SdkInfo::default()
                },
            })
        }),
        (name(), proptest::option::of(name())).prop_map(|(node, policy_version)| {
            Frame::PeerHello(PeerHello {
                node,
                version: 1,
                policy_version,
            })
        }),
        (name(), any::<u64>(), vec((name(), any::<u32>()), 0..256)).prop_map(
            |(origin, seq, links)| Frame::LinkState(LinkState {
                origin,
                seq: seq >> 2,
                links: links
                    .into_iter()
                    .map(|(peer, rtt)| LinkInfo {
                        peer,
                        rtt_us: u64::from(rtt),
                    })
                    .collect(),
            })
        ),
        (
            name(),
            name(),
            name(),
            any::<u32>(),
            vec(track_info(), 0..64)
        )
            .prop_map(
                |(app, channel, origin, seq, tracks)| Frame::ChannelAnnounce(ChannelAnnounce {
                    app,
                    channel,
                    origin,
                    seq: u64::from(seq),
                    tracks,
                })
            ),
        (name(), name(), name(), vec(name(), 0..=16)).prop_map(|(app, channel, origin, path)| {
            Frame::MeshSubscribe(MeshSubscribe {
                app,
                channel,
                origin,
                path,
            })
        }),
        Just(Frame::Subscribe),
        Just(Frame::Goodbye),
        any::<u32>().prop_map(|track| Frame::Unannounce {
            track: u64::from(track)
        }),
    ]
}

fn encoded(frames: &[Frame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for frame in frames {
        frame.try_encode(&mut buf).expect("generated within limits");
    }
    buf.to_vec()
}

/// Decodes `bytes` in two pieces; checks each frame re-encodes to itself.
fn decode_in_pieces(bytes: &[u8], split: usize) -> Result<Vec<Frame>, georelay::wire::WireError> {
    let split = split % (bytes.len() + 1);
    let mut decoder = FrameDecoder::new(georelay::wire::MAX_FRAME_BODY);
    let mut frames = Vec::new();
    for piece in [&bytes[..split], &bytes[split..]] {
        decoder.push(piece);
        while let Some(frame) = decoder.next_frame()? {
            let again = encoded(std::slice::from_ref(&frame));
            assert_eq!(decode_frame(&again), Ok(Some((frame.clone(), again.len()))));
            frames.push(frame);
        }
    }
    Ok(frames)
}

fn claims() -> impl Strategy<Value = Claims> {
    (
        name(),
        "[ -~]{1,40}",
        "[a-zA-Z0-9@._-]{1,40}",
        any::<bool>(),
        any::<u32>(),
    )
        .prop_map(|(app, channel, user, publish, expires)| Claims {
            app: AppId::new(app),
            channel,
            user,
            role: if publish {
                Role::Publish
            } else {
                Role::Subscribe
            },
            expires_at: u64::from(expires) + 1,
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn frame_sequences_round_trip_whole_and_in_pieces(
        frames in vec(frame(), 1..6),
        split in any::<usize>(),
    ) {
        let bytes = encoded(&frames);
        prop_assert_eq!(decode_in_pieces(&bytes, split), Ok(frames));
    }

    #[test]
    fn damaged_frames_never_panic_and_what_decodes_re_encodes(
        frames in vec(frame(), 1..4),
        damages in damage(),
        split in any::<usize>(),
    ) {
        let bytes = damaged(encoded(&frames), &damages);
        // Ok or a typed error; the helper asserts re-encoding.
        let _ = decode_in_pieces(&bytes, split);
    }

    #[test]
    fn media_headers_round_trip_and_damage_never_panics(
        track in any::<u64>(),
        seq in any::<u64>(),
        timestamp_us in any::<u64>(),
        payload in vec(any::<u8>(), 0..64),
        damages in damage(),
    ) {
        let header = MediaHeader { track: track >> 2, seq: seq >> 2, timestamp_us: timestamp_us >> 2 };
        let mut datagram = BytesMut::new();
        header.encode(&mut datagram);
        datagram.extend_from_slice(&payload);
        let (parsed, len) = MediaHeader::parse(&datagram).expect("valid header");
        prop_assert_eq!(parsed, header);
        prop_assert_eq!(&datagram[len..], &payload[..]);
        let broken = damaged(datagram.to_vec(), &damages);
        if let Ok((parsed, len)) = MediaHeader::parse(&broken) {
            prop_assert!(len <= broken.len() && len <= MediaHeader::MAX_LEN);
            prop_assert_eq!(MediaHeader::parse_track(&broken), Ok(parsed.track));
        }
    }

    #[test]
    fn message_streams_round_trip_and_damage_never_exceeds_the_limit(
        messages in vec((any::<u32>(), vec(any::<u8>(), 0..300)), 1..5),
        damages in damage(),
    ) {
        let mut stream = BytesMut::new();
        encode_message_stream_header(&mut stream);
        for (track, payload) in &messages {
            encode_message(u64::from(*track), payload, &mut stream);
        }
        let mut decoder = MessageDecoder::new(300);
        decoder.push(&stream);
        for (track, payload) in &messages {
            let message = decoder.next_message().expect("valid").expect("complete");
            prop_assert_eq!(message.track, u64::from(*track));
            prop_assert_eq!(&message.payload[..], &payload[..]);
        }
        prop_assert_eq!(decoder.next_message(), Ok(None));

        let mut decoder = MessageDecoder::new(300);
        decoder.push(&damaged(stream.to_vec(), &damages));
        while let Ok(Some(message)) = decoder.next_message() {
            prop_assert!(message.payload.len() <= 300);
        }
    }

    #[test]
    fn minted_tokens_verify_and_no_single_byte_change_does(
        claims in claims(),
        at in any::<usize>(),
        replacement in any::<char>(),
    ) {
        prop_assume!(claims.validate().is_ok());
        let key = TokenKey::new(b"property-secret");
        let keys = |app: &AppId| (app == &claims.app).then(|| key.clone());
        let token = mint(&claims, &key);
        prop_assert_eq!(verify(&token, &keys, Some(&claims.app), 0), Ok(claims.clone()));
        let mut chars: Vec<char> = token.chars().collect();
        let at = at % chars.len();
        prop_assume!(chars[at] != replacement);
        chars[at] = replacement;
        let forged: String = chars.into_iter().collect();
        prop_assert!(verify(&forged, &keys, None, 0).is_err(), "{forged} verified");
    }

    #[test]
    fn damaged_regions_toml_never_panics_and_points_inside_the_text(
        damages in damage(),
    ) {
        let text = include_str!("../regions.toml");
        let broken = damaged(text.as_bytes().to_vec(), &damages);
        let Ok(broken) = String::from_utf8(broken) else { return Ok(()) };
        if let Err(errors) = Fleet::parse(&broken, Path::new("/nonexistent/regions.toml")) {
            let lines = broken.split('\n').count();
            for diagnostic in &errors.0 {
                prop_assert!(diagnostic.line >= 1 && diagnostic.line <= lines, "{}", diagnostic);
                prop_assert!(diagnostic.column >= 1);
            }
        }
    }
}
