//! The `georelay/1` (client ↔ relay) and `georelay-mesh/1` (node ↔ node) wire
//! codecs: bytes in, typed values out, and back, and the framing of control
//! streams that the relay and the client SDK share. Nothing here touches a
//! socket or a clock; [`stream`] reads and writes any async byte stream.
//!
//! The byte-level specification is `docs/PROTOCOL.md`; this module is its
//! reference implementation, and a test decodes the spec's hex examples.
//!
//! - [`varint`]: QUIC variable-length integers.
//! - [`frame`]: control-stream frames ([`Frame`], [`FrameDecoder`]).
//! - [`media`]: the media datagram header ([`MediaHeader`]) and the framing of
//!   reliable data messages ([`encode_message`], [`MessageDecoder`]).
//! - [`stream`]: control-stream IO over any async byte stream
//!   ([`stream::FrameReader`], the control writer, the close handshake).
//!
//! Every decoder is strictly bounded: a malformed or oversize input yields a
//! [`WireError`] naming the problem, never a panic and never an allocation
//! larger than the limit of the field being read.

pub mod frame;
pub mod media;
pub mod stream;
pub mod varint;

mod codec;

pub use frame::{
    Announce, AnnounceOk, ChannelAnnounce, ChannelRef, ErrorFrame, Frame, FrameDecoder, Hello,
    LinkInfo, LinkState, MeshSubscribe, MeshSubscribeError, PeerHello, SdkInfo, Sender,
    SubscriptionState, SubscriptionStatus, Target, TrackInfo, TrackKind, Welcome, decode_frame,
};
pub use media::{
    MediaHeader, Message, MessageDecoder, encode_message, encode_message_stream_header,
    max_media_payload,
};

use crate::error::ErrorCode;

/// ALPN of the client protocol.
pub const ALPN_CLIENT: &[u8] = b"georelay/1";
/// ALPN of the node-to-node mesh protocol.
pub const ALPN_MESH: &[u8] = b"georelay-mesh/1";
/// The protocol version carried in `HELLO` and `PEER_HELLO`.
pub const PROTOCOL_VERSION: u64 = 1;

/// Largest control-frame body, in bytes (64 KiB).
pub const MAX_FRAME_BODY: usize = 64 * 1024;
/// Largest id or name string (app, channel, node, region, user, track name,
/// SDK info fields, socket address text), in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 256;
/// Largest token string, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Largest human-readable message (in `ERROR` and state frames), in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most redirect targets in one `ERROR` frame.
pub const MAX_REDIRECT_TARGETS: usize = 64;
/// Most tracks in one `CHANNEL_ANNOUNCE` frame.
pub const MAX_TRACKS: usize = 256;
/// Most nodes in one `MESH_SUBSCRIBE` source route.
pub const MAX_PATH_NODES: usize = 16;
/// Most links in one `LINK_STATE` frame.
pub const MAX_LINKS: usize = 256;
/// Default largest reliable data message payload (64 KiB); the relay
/// advertises its own value in `WELCOME`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// First varint of a unidirectional stream that carries data messages.
pub const STREAM_TYPE_MESSAGES: u64 = 0x01;

/// Why bytes could not be decoded (or a value could not be encoded).
///
/// [`WireError::code`] maps each to the stable code that the receiver closes
/// the connection with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended inside a value: a datagram too short for its header, or
    /// a field running past the end of its frame body.
    #[error("truncated input")]
    Truncated,
    /// A value above 2^62 - 1 cannot be encoded as a varint.
    #[error("integer above 2^62-1 cannot be encoded")]
    VarintOverflow,
    /// A length or count exceeds its limit.
    #[error("{what} is {len} long, limit {max}")]
    Oversize {
        /// The field, list or frame that is too long.
        what: &'static str,
        /// Its declared length (bytes) or count.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A control frame type this version does not define.
    #[error("unknown frame type {0:#x}")]
    UnknownFrame(u64),
    /// A unidirectional stream started with a type this version does not define.
    #[error("unknown stream type {0:#x}")]
    UnknownStreamType(u64),
    /// A string field is not valid UTF-8.
    #[error("field {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A field holds a value outside its domain (a boolean other than 0/1, an
    /// unknown track kind, an error code of 0, ...).
    #[error("field {field} has invalid value {value}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A frame body is longer than its fields.
    #[error("trailing bytes after the fields of {frame}")]
    TrailingBytes {
        /// The frame's name.
        frame: &'static str,
    },
    /// A `HELLO` or `PEER_HELLO` names a protocol version other than
    /// [`PROTOCOL_VERSION`]; the rest of its body was not read.
    #[error("unsupported protocol version {version}")]
    UnsupportedVersion {
        /// The version the peer speaks.
        version: u64,
    },
}

impl WireError {
    /// The stable code to close the connection (or refuse the stream) with.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::Oversize { .. } => ErrorCode::LimitExceeded,
            WireError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            WireError::Truncated
            | WireError::VarintOverflow
            | WireError::UnknownFrame(_)
            | WireError::UnknownStreamType(_)
            | WireError::InvalidUtf8(_)
            | WireError::InvalidValue { .. }
            | WireError::TrailingBytes { .. } => ErrorCode::ProtocolViolation,
        }
    }
}
