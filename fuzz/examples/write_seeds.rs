//! Writes the committed seed corpora (`fuzz/seeds/<target>/`) from the real
//! codec, so that every frame type, a media datagram, a message stream, a
//! valid token and a complete `regions.toml` start each fuzz run:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example write_seeds -- fuzz/seeds
//! ```

use std::path::Path;

use bytes::BytesMut;
use georelay::auth::{Claims, Role, TokenKey, mint};
use georelay::ids::AppId;
use georelay::wire::{
    Announce, AnnounceOk, ChannelAnnounce, ChannelRef, ErrorFrame, Frame, Hello, LinkInfo,
    LinkState, MediaHeader, MeshSubscribe, MeshSubscribeError, PeerHello, SdkInfo,
    SubscriptionState, SubscriptionStatus, Target, TrackInfo, TrackKind, Welcome, encode_message,
    encode_message_stream_header,
};

fn track(track: u64) -> TrackInfo {
    TrackInfo {
        track,
        publisher: "alice".into(),
        kind: TrackKind::Video,
        e2ee: true,
        name: "camera".into(),
    }
}

fn client_frames() -> Vec<Frame> {
    vec![
        Frame::Hello(Hello {
            version: 1,
            app: "acme-health".into(),
            channel: "room-1".into(),
            token: "gr1.payload.tag".into(),
            sdk: SdkInfo {
                name: "georelay-rust".into(),
                version: "0.1.0".into(),
                device: "desktop".into(),
                os: "linux".into(),
                network: "wifi".into(),
            },
        }),
        Frame::Welcome(Welcome {
            session_id: 42,
            node: "eu-fra-1".into(),
            region: "eu".into(),
            max_datagram_payload: 1138,
            max_message_bytes: 65536,
        }),
        Frame::Error(ErrorFrame {
            code: 2,
            message: "app not allowed here".into(),
            redirect: vec![Target {
                node: "eu-fra-1".into(),
                addr: "127.10.0.1:4433".into(),
            }],
        }),
        Frame::Announce(Announce {
            track_id: 1,
            kind: TrackKind::Audio,
            e2ee: false,
            name: "mic".into(),
        }),
        Frame::AnnounceOk(AnnounceOk {
            track_id: 1,
            track: 300,
        }),
        Frame::Unannounce { track: 300 },
        Frame::Subscribe,
        Frame::Unsubscribe,
        Frame::TrackAdded(track(300)),
        Frame::TrackRemoved { track: 300 },
        Frame::SubscriptionState(SubscriptionState {
            state: SubscriptionStatus::Unavailable,
            code: 4,
            message: "no allowed path".into(),
        }),
        Frame::Goodbye,
    ]
}

fn mesh_frames() -> Vec<Frame> {
    let channel = ChannelRef {
        app: "acme-health".into(),
        channel: "room-1".into(),
        origin: "eu-fra-1".into(),
    };
    vec![
        Frame::PeerHello(PeerHello {
            node: "eu-fra-1".into(),
            version: 1,
            policy_version: Some("6a09e667bb67ae85".into()),
        }),
        Frame::LinkState(LinkState {
            origin: "eu-fra-1".into(),
            seq: 7,
            links: vec![LinkInfo {
                peer: "eu-ams-1".into(),
                rtt_us: 9000,
            }],
        }),
        Frame::ChannelAnnounce(ChannelAnnounce {
            app: "acme-health".into(),
            channel: "room-1".into(),
            origin: "eu-fra-1".into(),
            seq: 3,
            tracks: vec![track(300), track(301)],
        }),
        Frame::MeshSubscribe(MeshSubscribe {
            app: "acme-health".into(),
            channel: "room-1".into(),
            origin: "eu-fra-1".into(),
            path: vec!["eu-ams-1".into(), "eu-fra-1".into()],
        }),
        Frame::MeshUnsubscribe(channel),
        Frame::MeshSubscribeError(MeshSubscribeError {
            app: "acme-health".into(),
            channel: "room-1".into(),
            origin: "eu-fra-1".into(),
            code: 4,
            message: "no route".into(),
        }),
    ]
}

fn encoded(frames: &[Frame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for frame in frames {
        frame.encode(&mut buf);
    }
    buf.to_vec()
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".to_owned());
    let out = Path::new(&out);
    for (index, frame) in client_frames().iter().enumerate() {
        let bytes = encoded(std::slice::from_ref(frame));
        // client_frames splits its input after the first byte's value.
        let mut split = vec![u8::try_from(bytes.len() / 2).unwrap_or(u8::MAX)];
        split.extend_from_slice(&bytes);
        write(out, "client_frames", &format!("{index:02}-{}", frame.name()), &split)?;
    }
    let mut session = vec![3];
    session.extend(encoded(&client_frames()[..6]));
    write(out, "client_frames", "session", &session)?;
    for (index, frame) in mesh_frames().iter().enumerate() {
        let bytes = encoded(std::slice::from_ref(frame));
        write(out, "mesh_frames", &format!("{index:02}-{}", frame.name()), &bytes)?;
    }
    write(out, "mesh_frames", "link", &encoded(&mesh_frames()))?;

    let mut datagram = BytesMut::new();
    MediaHeader {
        track: 300,
        seq: 7,
        timestamp_us: 1_700_000_000_000_000,
    }
    .encode(&mut datagram);
    datagram.extend_from_slice(b"hi");
    write(out, "media_header", "datagram", &datagram)?;
    let mut stream = BytesMut::new();
    encode_message_stream_header(&mut stream);
    encode_message(300, b"hello", &mut stream);
    encode_message(301, &[0; 40], &mut stream);
    write(out, "media_header", "message-stream", &stream)?;

    let key = TokenKey::new(b"fuzz-secret");
    for (name, role) in [("publish", Role::Publish), ("subscribe", Role::Subscribe)] {
        let claims = Claims {
            app: AppId::new("app"),
            channel: "room-1".into(),
            user: "alice".into(),
            role,
            expires_at: 1_900_000_000,
        };
        write(out, "tokens", name, mint(&claims, &key).as_bytes())?;
    }

    let regions = include_str!("../../regions.toml");
    write(out, "regions_toml", "regions.toml", regions.as_bytes())?;
    write(
        out,
        "regions_toml",
        "errors.toml",
        b"[regions.eu]\ncountries = [\"DE\", \"UK\"]\n[nodes.a]\nregion = \"mars\"\nlisten = \"127.0.0.1:0\"\n[limits]\nmax_sessions = 0\n",
    )?;
    Ok(())
}
