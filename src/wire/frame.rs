//! Control-stream frames of `georelay/1` and `georelay-mesh/1`:
//! `type (varint) | length (varint) | body (length bytes)`.
//!
//! [`Frame`] is every frame of both protocols; [`decode_frame`] and the
//! incremental [`FrameDecoder`] turn bytes into frames, [`Frame::encode`] and
//! [`Frame::try_encode`] the reverse. Which frames each side may send, and in
//! which state, is the caller's business ([`Frame::sender`] helps); the codec
//! only guarantees that every decoded frame is well formed and within limits.

use bytes::{Buf, BytesMut};

use super::codec::{Reader, Writer};
use super::{
    MAX_FRAME_BODY, MAX_LINKS, MAX_NAME_LEN, MAX_PATH_NODES, MAX_REDIRECT_TARGETS, MAX_TEXT_LEN,
    MAX_TOKEN_LEN, MAX_TRACKS, PROTOCOL_VERSION, WireError, varint,
};
use crate::error::ErrorCode;

/// The frame type numbers (the first varint of every frame).
pub mod frame_type {
    /// Client → relay: first frame of a client connection.
    pub const HELLO: u64 = 0x01;
    /// Relay → client: admission accepted.
    pub const WELCOME: u64 = 0x02;
    /// Relay → client: refusal; the relay then closes the connection.
    pub const ERROR: u64 = 0x03;
    /// Client → relay: clean leave.
    pub const GOODBYE: u64 = 0x04;
    /// Client → relay: publish a track.
    pub const ANNOUNCE: u64 = 0x10;
    /// Relay → client: the track's relay-assigned key.
    pub const ANNOUNCE_OK: u64 = 0x11;
    /// Client → relay: stop publishing a track.
    pub const UNANNOUNCE: u64 = 0x12;
    /// Client → relay: subscribe to the token's channel.
    pub const SUBSCRIBE: u64 = 0x13;
    /// Client → relay: end the subscription.
    pub const UNSUBSCRIBE: u64 = 0x14;
    /// Relay → client: a track appeared in the subscribed channel.
    pub const TRACK_ADDED: u64 = 0x15;
    /// Relay → client: a track went away.
    pub const TRACK_REMOVED: u64 = 0x16;
    /// Relay → client: the subscription became active or unavailable.
    pub const SUBSCRIPTION_STATE: u64 = 0x17;
    /// Node ↔ node: first frame in each direction of a mesh connection.
    pub const PEER_HELLO: u64 = 0x20;
    /// Node ↔ node: flooded link state.
    pub const LINK_STATE: u64 = 0x21;
    /// Node ↔ node: a channel's full track set at its origin node.
    pub const CHANNEL_ANNOUNCE: u64 = 0x22;
    /// Node ↔ node: pull a channel along a source route.
    pub const MESH_SUBSCRIBE: u64 = 0x23;
    /// Node ↔ node: stop pulling a channel.
    pub const MESH_UNSUBSCRIBE: u64 = 0x24;
    /// Node ↔ node: a mesh subscription failed.
    pub const MESH_SUBSCRIBE_ERROR: u64 = 0x25;
    /// Node ↔ node: a mesh subscription is established up to the origin.
    pub const MESH_SUBSCRIBE_OK: u64 = 0x26;
}

/// The name of a frame type, or `None` for a type this version does not know.
pub fn type_name(frame_type: u64) -> Option<&'static str> {
    use frame_type::*;
    Some(match frame_type {
        HELLO => "HELLO",
        WELCOME => "WELCOME",
        ERROR => "ERROR",
        GOODBYE => "GOODBYE",
        ANNOUNCE => "ANNOUNCE",
        ANNOUNCE_OK => "ANNOUNCE_OK",
        UNANNOUNCE => "UNANNOUNCE",
        SUBSCRIBE => "SUBSCRIBE",
        UNSUBSCRIBE => "UNSUBSCRIBE",
        TRACK_ADDED => "TRACK_ADDED",
        TRACK_REMOVED => "TRACK_REMOVED",
        SUBSCRIPTION_STATE => "SUBSCRIPTION_STATE",
        PEER_HELLO => "PEER_HELLO",
        LINK_STATE => "LINK_STATE",
        CHANNEL_ANNOUNCE => "CHANNEL_ANNOUNCE",
        MESH_SUBSCRIBE => "MESH_SUBSCRIBE",
        MESH_UNSUBSCRIBE => "MESH_UNSUBSCRIBE",
        MESH_SUBSCRIBE_ERROR => "MESH_SUBSCRIBE_ERROR",
        MESH_SUBSCRIBE_OK => "MESH_SUBSCRIBE_OK",
        _ => return None,
    })
}

/// The kind of media a track carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Wire value 0.
    Audio,
    /// Wire value 1.
    Video,
    /// Wire value 2.
    Data,
}

impl TrackKind {
    /// The wire value.
    pub const fn to_wire(self) -> u64 {
        match self {
            TrackKind::Audio => 0,
            TrackKind::Video => 1,
            TrackKind::Data => 2,
        }
    }

    /// Maps a wire value back; `None` for values this version does not know.
    pub const fn from_wire(value: u64) -> Option<Self> {
        match value {
            0 => Some(TrackKind::Audio),
            1 => Some(TrackKind::Video),
            2 => Some(TrackKind::Data),
            _ => None,
        }
    }
}

/// What the client SDK reports about itself (operational metadata). Every
/// field may be empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdkInfo {
    /// SDK name, e.g. `georelay-rust`.
    pub name: String,
    /// SDK version, e.g. `0.1.0`.
    pub version: String,
    /// Device type, e.g. `desktop`, `phone`.
    pub device: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Network type, e.g. `wifi`, `cellular`.
    pub network: String,
}

/// `HELLO`: the first frame a client sends, exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version; must be [`PROTOCOL_VERSION`].
    pub version: u64,
    /// The app id the token is for.
    pub app: String,
    /// The channel the token is for.
    pub channel: String,
    /// The signed token (docs/TOKENS.md).
    pub token: String,
    /// What the SDK reports about itself.
    pub sdk: SdkInfo,
}

/// `WELCOME`: admission accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The relay's id for this session (unique per node).
    pub session_id: u64,
    /// The node id that admitted the client.
    pub node: String,
    /// The node's region id.
    pub region: String,
    /// Largest media payload a datagram may carry after its header.
    pub max_datagram_payload: u64,
    /// Largest reliable data message payload.
    pub max_message_bytes: u64,
}

/// A node a refused client may connect to instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Node id.
    pub node: String,
    /// The node's QUIC address as socket-address text, `ip:port` or
    /// `[ipv6]:port`.
    pub addr: String,
}

/// `ERROR`: a refusal. The relay closes the connection right after it, with
/// the same code as QUIC application error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The wire error code (never 0). Codes unknown to this version are kept
    /// as they are; see [`ErrorFrame::error_code`].
    pub code: u64,
    /// Human-readable detail.
    pub message: String,
    /// Nodes to try instead (for `GEOFENCE_REDIRECT`, `GEOFENCE_REVOKED`,
    /// `SHUTTING_DOWN`), nearest first.
    pub redirect: Vec<Target>,
}

impl ErrorFrame {
    /// A refusal with `code`, without redirect targets.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.to_wire(),
            message: message.into(),
            redirect: Vec::new(),
        }
    }

    /// The code, if this version knows it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_wire(self.code)
    }
}

/// `ANNOUNCE`: a publisher offers a track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// The client's own id for the track, echoed in `ANNOUNCE_OK`.
    pub track_id: u64,
    /// Media kind.
    pub kind: TrackKind,
    /// True when the payload is end-to-end encrypted (opaque to the relay).
    pub e2ee: bool,
    /// Track name, e.g. `camera`.
    pub name: String,
}

/// `ANNOUNCE_OK`: the relay accepted a track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceOk {
    /// The client-local id from `ANNOUNCE`.
    pub track_id: u64,
    /// The relay-assigned key, unique fleet-wide, used in media headers.
    pub track: u64,
}

/// A track of a channel, as told to subscribers (`TRACK_ADDED`) and peers
/// (`CHANNEL_ANNOUNCE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackInfo {
    /// The relay-assigned track key.
    pub track: u64,
    /// The publishing user's id.
    pub publisher: String,
    /// Media kind.
    pub kind: TrackKind,
    /// True when the payload is end-to-end encrypted.
    pub e2ee: bool,
    /// Track name.
    pub name: String,
}

/// The state in `SUBSCRIPTION_STATE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscriptionStatus {
    /// Wire value 0: media flows (or will, as tracks appear).
    Active,
    /// Wire value 1: no allowed route right now; the relay keeps retrying.
    Unavailable,
}

/// `SUBSCRIPTION_STATE`: the subscription failed closed or recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionState {
    /// Active or unavailable.
    pub state: SubscriptionStatus,
    /// 0 when there is no error, else a wire error code such as
    /// `ROUTE_UNAVAILABLE`.
    pub code: u64,
    /// Human-readable detail (may be empty).
    pub message: String,
}

/// `PEER_HELLO`: a node's first frame on a mesh connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHello {
    /// The sender's node id (must match its certificate).
    pub node: String,
    /// Protocol version; must be [`PROTOCOL_VERSION`].
    pub version: u64,
    /// The version of the geofence policy the sender enforces (16 hex
    /// characters), or `None` in the old form that ends after `node`.
    pub policy_version: Option<String>,
}

/// One link in `LINK_STATE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The neighbour's node id.
    pub peer: String,
    /// Measured round-trip time, microseconds.
    pub rtt_us: u64,
}

/// `LINK_STATE`: an origin node's up links, flooded through the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// The node whose links these are.
    pub origin: String,
    /// Sequence number; higher replaces lower.
    pub seq: u64,
    /// The origin's links that are up.
    pub links: Vec<LinkInfo>,
}

/// `CHANNEL_ANNOUNCE`: the full current track set of a channel at its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelAnnounce {
    /// App id.
    pub app: String,
    /// Channel name.
    pub channel: String,
    /// The node where the publishers are connected.
    pub origin: String,
    /// Sequence number per (app, channel, origin); higher replaces lower.
    pub seq: u64,
    /// Every current track; empty means the channel is gone from `origin`.
    pub tracks: Vec<TrackInfo>,
}

/// `MESH_SUBSCRIBE`: pull a channel from `origin` along a source route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshSubscribe {
    /// App id.
    pub app: String,
    /// Channel name.
    pub channel: String,
    /// The node where the publishers are connected.
    pub origin: String,
    /// The remaining route after the receiver, next hop first, ending with
    /// `origin`; empty when the receiver is the origin.
    pub path: Vec<String>,
}

/// A channel at its origin node (`MESH_UNSUBSCRIBE`, `MESH_SUBSCRIBE_OK`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRef {
    /// App id.
    pub app: String,
    /// Channel name.
    pub channel: String,
    /// The node where the publishers are connected.
    pub origin: String,
}

/// `MESH_SUBSCRIBE_ERROR`: a mesh subscription could not be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshSubscribeError {
    /// App id.
    pub app: String,
    /// Channel name.
    pub channel: String,
    /// The node where the publishers are connected.
    pub origin: String,
    /// Wire error code (never 0), e.g. `ROUTE_UNAVAILABLE`.
    pub code: u64,
    /// Human-readable detail.
    pub message: String,
}

/// Which side may send a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// A client on a `georelay/1` connection.
    Client,
    /// A relay on a `georelay/1` connection.
    Relay,
    /// Either node on a `georelay-mesh/1` connection.
    Node,
}

/// Every control frame of both protocols.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `HELLO` (client).
    Hello(Hello),
    /// `WELCOME` (relay).
    Welcome(Welcome),
    /// `ERROR` (relay).
    Error(ErrorFrame),
    /// `ANNOUNCE` (client).
    Announce(Announce),
    /// `ANNOUNCE_OK` (relay).
    AnnounceOk(AnnounceOk),
    /// `UNANNOUNCE` (client): the relay-assigned track key.
    Unannounce {
        /// Relay-assigned track key.
        track: u64,
    },
    /// `SUBSCRIBE` (client).
    Subscribe,
    /// `UNSUBSCRIBE` (client).
    Unsubscribe,
    /// `TRACK_ADDED` (relay).
    TrackAdded(TrackInfo),
    /// `TRACK_REMOVED` (relay).
    TrackRemoved {
        /// Relay-assigned track key.
        track: u64,
    },
    /// `SUBSCRIPTION_STATE` (relay).
    SubscriptionState(SubscriptionState),
    /// `GOODBYE` (client).
    Goodbye,
    /// `PEER_HELLO` (node).
    PeerHello(PeerHello),
    /// `LINK_STATE` (node).
    LinkState(LinkState),
    /// `CHANNEL_ANNOUNCE` (node).
    ChannelAnnounce(ChannelAnnounce),
    /// `MESH_SUBSCRIBE` (node).
    MeshSubscribe(MeshSubscribe),
    /// `MESH_UNSUBSCRIBE` (node).
    MeshUnsubscribe(ChannelRef),
    /// `MESH_SUBSCRIBE_ERROR` (node).
    MeshSubscribeError(MeshSubscribeError),
    /// `MESH_SUBSCRIBE_OK` (node).
    MeshSubscribeOk(ChannelRef),
}

impl Frame {
    /// The frame type number.
    pub fn frame_type(&self) -> u64 {
        use frame_type::*;
        match self {
            Frame::Hello(_) => HELLO,
            Frame::Welcome(_) => WELCOME,
            Frame::Error(_) => ERROR,
            Frame::Goodbye => GOODBYE,
            Frame::Announce(_) => ANNOUNCE,
            Frame::AnnounceOk(_) => ANNOUNCE_OK,
            Frame::Unannounce { .. } => UNANNOUNCE,
            Frame::Subscribe => SUBSCRIBE,
            Frame::Unsubscribe => UNSUBSCRIBE,
            Frame::TrackAdded(_) => TRACK_ADDED,
            Frame::TrackRemoved { .. } => TRACK_REMOVED,
            Frame::SubscriptionState(_) => SUBSCRIPTION_STATE,
            Frame::PeerHello(_) => PEER_HELLO,
            Frame::LinkState(_) => LINK_STATE,
            Frame::ChannelAnnounce(_) => CHANNEL_ANNOUNCE,
            Frame::MeshSubscribe(_) => MESH_SUBSCRIBE,
            Frame::MeshUnsubscribe(_) => MESH_UNSUBSCRIBE,
            Frame::MeshSubscribeError(_) => MESH_SUBSCRIBE_ERROR,
            Frame::MeshSubscribeOk(_) => MESH_SUBSCRIBE_OK,
        }
    }

    /// The frame's spec name, e.g. `"HELLO"`, for logs.
    pub fn name(&self) -> &'static str {
        type_name(self.frame_type()).unwrap_or("UNKNOWN")
    }

    /// Which side may send this frame; receiving it from any other side is a
    /// protocol violation.
    pub fn sender(&self) -> Sender {
        match self {
            Frame::Hello(_)
            | Frame::Announce(_)
            | Frame::Unannounce { .. }
            | Frame::Subscribe
            | Frame::Unsubscribe
            | Frame::Goodbye => Sender::Client,
            Frame::Welcome(_)
            | Frame::Error(_)
            | Frame::AnnounceOk(_)
            | Frame::TrackAdded(_)
            | Frame::TrackRemoved { .. }
            | Frame::SubscriptionState(_) => Sender::Relay,
            Frame::PeerHello(_)
            | Frame::LinkState(_)
            | Frame::ChannelAnnounce(_)
            | Frame::MeshSubscribe(_)
            | Frame::MeshUnsubscribe(_)
            | Frame::MeshSubscribeError(_)
            | Frame::MeshSubscribeOk(_) => Sender::Node,
        }
    }

    /// Appends `type | length | body`. Fields are written as they are: a
    /// string or list over its limit produces a frame the peer refuses, and a
    /// number above 2^62 - 1 is written as 2^62 - 1. Use [`Frame::try_encode`]
    /// when a field may come from untrusted input.
    pub fn encode(&self, buf: &mut BytesMut) {
        let mut body = BytesMut::new();
        let mut writer = Writer::new(&mut body);
        self.write_body(&mut writer);
        varint::encode(self.frame_type(), buf);
        varint::encode(body.len() as u64, buf);
        buf.extend_from_slice(&body);
    }

    /// Like [`Frame::encode`], but checks every limit the decoder checks and
    /// appends nothing when one is broken: `Ok` means the peer can decode it.
    pub fn try_encode(&self, buf: &mut BytesMut) -> Result<(), WireError> {
        let mut body = BytesMut::new();
        let mut writer = Writer::new(&mut body);
        self.write_body(&mut writer);
        writer.finish()?;
        check_version(self)?;
        if body.len() > MAX_FRAME_BODY {
            return Err(WireError::Oversize {
                what: "frame body",
                len: body.len(),
                max: MAX_FRAME_BODY,
            });
        }
        varint::encode(self.frame_type(), buf);
        varint::encode(body.len() as u64, buf);
        buf.extend_from_slice(&body);
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) {
        match self {
            Frame::Hello(hello) => {
                w.varint(hello.version);
                w.string("app", &hello.app, MAX_NAME_LEN);
                w.string("channel", &hello.channel, MAX_NAME_LEN);
                w.string("token", &hello.token, MAX_TOKEN_LEN);
                w.string("sdk.name", &hello.sdk.name, MAX_NAME_LEN);
                w.string("sdk.version", &hello.sdk.version, MAX_NAME_LEN);
                w.string("sdk.device", &hello.sdk.device, MAX_NAME_LEN);
                w.string("sdk.os", &hello.sdk.os, MAX_NAME_LEN);
                w.string("sdk.network", &hello.sdk.network, MAX_NAME_LEN);
            }
            Frame::Welcome(welcome) => {
                w.varint(welcome.session_id);
                w.string("node", &welcome.node, MAX_NAME_LEN);
                w.string("region", &welcome.region, MAX_NAME_LEN);
                w.varint(welcome.max_datagram_payload);
                w.varint(welcome.max_message_bytes);
            }
            Frame::Error(error) => {
                w.varint(error.code);
                w.string("message", &error.message, MAX_TEXT_LEN);
                w.list(
                    "redirect",
                    &error.redirect,
                    MAX_REDIRECT_TARGETS,
                    |w, target| {
                        w.string("redirect.node", &target.node, MAX_NAME_LEN);
                        w.string("redirect.addr", &target.addr, MAX_NAME_LEN);
                    },
                );
            }
            Frame::Announce(announce) => {
                w.varint(announce.track_id);
                w.varint(announce.kind.to_wire());
                w.boolean(announce.e2ee);
                w.string("name", &announce.name, MAX_NAME_LEN);
            }
            Frame::AnnounceOk(ok) => {
                w.varint(ok.track_id);
                w.varint(ok.track);
            }
            Frame::Unannounce { track } | Frame::TrackRemoved { track } => w.varint(*track),
            Frame::Subscribe | Frame::Unsubscribe | Frame::Goodbye => {}
            Frame::TrackAdded(track) => write_track(w, track),
            Frame::SubscriptionState(state) => {
                w.byte(match state.state {
                    SubscriptionStatus::Active => 0,
                    SubscriptionStatus::Unavailable => 1,
                });
                w.varint(state.code);
                w.string("message", &state.message, MAX_TEXT_LEN);
            }
            Frame::PeerHello(hello) => {
                w.varint(hello.version);
                w.string("node", &hello.node, MAX_NAME_LEN);
                if let Some(policy_version) = &hello.policy_version {
                    w.string("policy_version", policy_version, MAX_NAME_LEN);
                }
            }
            Frame::LinkState(state) => {
                w.string("origin", &state.origin, MAX_NAME_LEN);
                w.varint(state.seq);
                w.list("links", &state.links, MAX_LINKS, |w, link| {
                    w.string("links.peer", &link.peer, MAX_NAME_LEN);
                    w.varint(link.rtt_us);
                });
            }
            Frame::ChannelAnnounce(announce) => {
                write_channel(w, &announce.app, &announce.channel, &announce.origin);
                w.varint(announce.seq);
                w.list("tracks", &announce.tracks, MAX_TRACKS, write_track);
            }
            Frame::MeshSubscribe(subscribe) => {
                write_channel(w, &subscribe.app, &subscribe.channel, &subscribe.origin);
                w.list("path", &subscribe.path, MAX_PATH_NODES, |w, node| {
                    w.string("path.node", node, MAX_NAME_LEN);
                });
            }
            Frame::MeshUnsubscribe(channel) | Frame::MeshSubscribeOk(channel) => {
                write_channel(w, &channel.app, &channel.channel, &channel.origin);
            }
            Frame::MeshSubscribeError(error) => {
                write_channel(w, &error.app, &error.channel, &error.origin);
                w.varint(error.code);
                w.string("message", &error.message, MAX_TEXT_LEN);
            }
        }
    }
}

/// The version and non-zero-code rules the decoder enforces on values that the
/// writer cannot see as limits.
fn check_version(frame: &Frame) -> Result<(), WireError> {
    match frame {
        Frame::Hello(Hello { version, .. }) | Frame::PeerHello(PeerHello { version, .. })
            if *version != PROTOCOL_VERSION =>
        {
            Err(WireError::UnsupportedVersion { version: *version })
        }
        Frame::Error(ErrorFrame { code: 0, .. })
        | Frame::MeshSubscribeError(MeshSubscribeError { code: 0, .. }) => {
            Err(WireError::InvalidValue {
                field: "code",
                value: 0,
            })
        }
        _ => Ok(()),
    }
}

fn write_track(w: &mut Writer<'_>, track: &TrackInfo) {
    w.varint(track.track);
    w.string("publisher", &track.publisher, MAX_NAME_LEN);
    w.varint(track.kind.to_wire());
    w.boolean(track.e2ee);
    w.string("name", &track.name, MAX_NAME_LEN);
}

fn write_channel(w: &mut Writer<'_>, app: &str, channel: &str, origin: &str) {
    w.string("app", app, MAX_NAME_LEN);
    w.string("channel", channel, MAX_NAME_LEN);
    w.string("origin", origin, MAX_NAME_LEN);
}

/// Decodes one frame from the front of `buf` with the default body limit
/// ([`MAX_FRAME_BODY`]). `Ok(None)` means `buf` holds only part of a frame;
/// `Ok(Some((frame, consumed)))` gives the frame and its length in bytes.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    decode_frame_with_limit(buf, MAX_FRAME_BODY)
}

/// [`decode_frame`] with a chosen body limit.
pub fn decode_frame_with_limit(
    buf: &[u8],
    max_body: usize,
) -> Result<Option<(Frame, usize)>, WireError> {
    let mut rest = buf;
    let Ok(frame_type) = varint::decode(&mut rest) else {
        return Ok(None);
    };
    let Some(name) = type_name(frame_type) else {
        return Err(WireError::UnknownFrame(frame_type));
    };
    let Ok(declared) = varint::decode(&mut rest) else {
        return Ok(None);
    };
    let body_len = match usize::try_from(declared) {
        Ok(len) if len <= max_body => len,
        _ => {
            return Err(WireError::Oversize {
                what: "frame body",
                len: usize::try_from(declared).unwrap_or(usize::MAX),
                max: max_body,
            });
        }
    };
    let Some(body) = rest.get(..body_len) else {
        return Ok(None);
    };
    let consumed = buf.len() - rest.len() + body_len;
    let mut reader = Reader::new(body);
    let frame = read_body(frame_type, &mut reader)?;
    reader.finish(name)?;
    Ok(Some((frame, consumed)))
}

fn read_body(frame_type: u64, r: &mut Reader<'_>) -> Result<Frame, WireError> {
    use frame_type::*;
    Ok(match frame_type {
        HELLO => {
            let version = read_version(r)?;
            Frame::Hello(Hello {
                version,
                app: r.string("app", MAX_NAME_LEN)?,
                channel: r.string("channel", MAX_NAME_LEN)?,
                token: r.string("token", MAX_TOKEN_LEN)?,
                sdk: SdkInfo {
                    name: r.string("sdk.name", MAX_NAME_LEN)?,
                    version: r.string("sdk.version", MAX_NAME_LEN)?,
                    device: r.string("sdk.device", MAX_NAME_LEN)?,
                    os: r.string("sdk.os", MAX_NAME_LEN)?,
                    network: r.string("sdk.network", MAX_NAME_LEN)?,
                },
            })
        }
        WELCOME => Frame::Welcome(Welcome {
            session_id: r.varint()?,
            node: r.string("node", MAX_NAME_LEN)?,
            region: r.string("region", MAX_NAME_LEN)?,
            max_datagram_payload: r.varint()?,
            max_message_bytes: r.varint()?,
        }),
        ERROR => Frame::Error(ErrorFrame {
            code: read_error_code(r)?,
            message: r.string("message", MAX_TEXT_LEN)?,
            redirect: r.list("redirect", MAX_REDIRECT_TARGETS, |r| {
                Ok(Target {
                    node: r.string("redirect.node", MAX_NAME_LEN)?,
                    addr: r.string("redirect.addr", MAX_NAME_LEN)?,
                })
            })?,
        }),
        GOODBYE => Frame::Goodbye,
        ANNOUNCE => Frame::Announce(Announce {
            track_id: r.varint()?,
            kind: read_kind(r)?,
            e2ee: r.boolean("e2ee")?,
            name: r.string("name", MAX_NAME_LEN)?,
        }),
        ANNOUNCE_OK => Frame::AnnounceOk(AnnounceOk {
            track_id: r.varint()?,
            track: r.varint()?,
        }),
        UNANNOUNCE => Frame::Unannounce { track: r.varint()? },
        SUBSCRIBE => Frame::Subscribe,
        UNSUBSCRIBE => Frame::Unsubscribe,
        TRACK_ADDED => Frame::TrackAdded(read_track(r)?),
        TRACK_REMOVED => Frame::TrackRemoved { track: r.varint()? },
        SUBSCRIPTION_STATE => Frame::SubscriptionState(SubscriptionState {
            state: match r.byte()? {
                0 => SubscriptionStatus::Active,
                1 => SubscriptionStatus::Unavailable,
                other => {
                    return Err(WireError::InvalidValue {
                        field: "state",
                        value: u64::from(other),
                    });
                }
            },
            code: r.varint()?,
            message: r.string("message", MAX_TEXT_LEN)?,
        }),
        PEER_HELLO => {
            let version = read_version(r)?;
            let node = r.string("node", MAX_NAME_LEN)?;
            let policy_version = if r.at_end() {
                None
            } else {
                Some(r.string("policy_version", MAX_NAME_LEN)?)
            };
            Frame::PeerHello(PeerHello {
                version,
                node,
                policy_version,
            })
        }
        LINK_STATE => Frame::LinkState(LinkState {
            origin: r.string("origin", MAX_NAME_LEN)?,
            seq: r.varint()?,
            links: r.list("links", MAX_LINKS, |r| {
                Ok(LinkInfo {
                    peer: r.string("links.peer", MAX_NAME_LEN)?,
                    rtt_us: r.varint()?,
                })
            })?,
        }),
        CHANNEL_ANNOUNCE => {
            let channel = read_channel(r)?;
            Frame::ChannelAnnounce(ChannelAnnounce {
                app: channel.app,
                channel: channel.channel,
                origin: channel.origin,
                seq: r.varint()?,
                tracks: r.list("tracks", MAX_TRACKS, read_track)?,
            })
        }
        MESH_SUBSCRIBE => {
            let channel = read_channel(r)?;
            Frame::MeshSubscribe(MeshSubscribe {
                app: channel.app,
                channel: channel.channel,
                origin: channel.origin,
                path: r.list("path", MAX_PATH_NODES, |r| {
                    r.string("path.node", MAX_NAME_LEN)
                })?,
            })
        }
        MESH_UNSUBSCRIBE => Frame::MeshUnsubscribe(read_channel(r)?),
        MESH_SUBSCRIBE_OK => Frame::MeshSubscribeOk(read_channel(r)?),
        MESH_SUBSCRIBE_ERROR => {
            let channel = read_channel(r)?;
            Frame::MeshSubscribeError(MeshSubscribeError {
                app: channel.app,
                channel: channel.channel,
                origin: channel.origin,
                code: read_error_code(r)?,
                message: r.string("message", MAX_TEXT_LEN)?,
            })
        }
        unknown => return Err(WireError::UnknownFrame(unknown)),
    })
}

fn read_version(r: &mut Reader<'_>) -> Result<u64, WireError> {
    match r.varint()? {
        PROTOCOL_VERSION => Ok(PROTOCOL_VERSION),
        version => Err(WireError::UnsupportedVersion { version }),
    }
}

fn read_error_code(r: &mut Reader<'_>) -> Result<u64, WireError> {
    match r.varint()? {
        0 => Err(WireError::InvalidValue {
            field: "code",
            value: 0,
        }),
        code => Ok(code),
    }
}

fn read_kind(r: &mut Reader<'_>) -> Result<TrackKind, WireError> {
    let value = r.varint()?;
    TrackKind::from_wire(value).ok_or(WireError::InvalidValue {
        field: "kind",
        value,
    })
}

fn read_track(r: &mut Reader<'_>) -> Result<TrackInfo, WireError> {
    Ok(TrackInfo {
        track: r.varint()?,
        publisher: r.string("publisher", MAX_NAME_LEN)?,
        kind: read_kind(r)?,
        e2ee: r.boolean("e2ee")?,
        name: r.string("name", MAX_NAME_LEN)?,
    })
}

fn read_channel(r: &mut Reader<'_>) -> Result<ChannelRef, WireError> {
    Ok(ChannelRef {
        app: r.string("app", MAX_NAME_LEN)?,
        channel: r.string("channel", MAX_NAME_LEN)?,
        origin: r.string("origin", MAX_NAME_LEN)?,
    })
}

/// Incremental frame decoder for a control stream: [`push`](Self::push) bytes
/// as they arrive, then call [`next_frame`](Self::next_frame) until it returns
/// `Ok(None)`. It buffers at most one frame (header plus `max_body` bytes)
/// beyond what was pushed since the last drain. An error is final: the stream
/// is broken and the connection should be closed with [`WireError::code`].
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_body: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frame bodies above `max_body` bytes
    /// (normally [`MAX_FRAME_BODY`]).
    pub fn new(max_body: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_body,
        }
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        match decode_frame_with_limit(&self.buf, self.max_body)? {
            Some((frame, consumed)) => {
                self.buf.advance(consumed);
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Bytes received but not yet decoded (a partial frame).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests;
