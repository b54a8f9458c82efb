//! Media on the wire: the header of every media datagram, and the framing of
//! reliable data messages on unidirectional streams.
//!
//! A media datagram is `track | seq | timestamp_us` (three varints) followed
//! by the opaque payload up to the end of the datagram. Relays forward the
//! datagram bytes unchanged, so the header is written once by the publisher.
//!
//! A message stream starts with the varint [`STREAM_TYPE_MESSAGES`] and then
//! carries `track | length | payload` per message.

use bytes::{Buf, Bytes, BytesMut};

use super::{STREAM_TYPE_MESSAGES, WireError, varint};

/// The header in front of every media datagram's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MediaHeader {
    /// The relay-assigned track key (from `ANNOUNCE_OK`).
    pub track: u64,
    /// Per-track sequence number, chosen by the publisher.
    pub seq: u64,
    /// Capture timestamp, microseconds, on the publisher's clock.
    pub timestamp_us: u64,
}

impl MediaHeader {
    /// The longest header: three 8-byte varints.
    pub const MAX_LEN: usize = 24;

    /// The length of this header on the wire.
    pub fn encoded_len(&self) -> usize {
        varint::len(self.track) + varint::len(self.seq) + varint::len(self.timestamp_us)
    }

    /// Appends the header (shortest varints); the payload goes right after.
    pub fn encode(&self, buf: &mut BytesMut) {
        varint::encode(self.track, buf);
        varint::encode(self.seq, buf);
        varint::encode(self.timestamp_us, buf);
    }

    /// Parses the header at the front of a datagram and returns it with its
    /// length: the payload is `&datagram[len..]`.
    pub fn parse(datagram: &[u8]) -> Result<(MediaHeader, usize), WireError> {
        let mut rest = datagram;
        let header = MediaHeader {
            track: varint::decode(&mut rest)?,
            seq: varint::decode(&mut rest)?,
            timestamp_us: varint::decode(&mut rest)?,
        };
        Ok((header, datagram.len() - rest.len()))
    }

    /// Only the track key (the first varint): the forwarding hot path. It does
    /// not check the rest of the header.
    pub fn parse_track(datagram: &[u8]) -> Result<u64, WireError> {
        let mut rest = datagram;
        varint::decode(&mut rest)
    }
}

/// The largest media payload to advertise in `WELCOME` for a QUIC path whose
/// `max_datagram_size` is `max_datagram_size`: room for the longest header is
/// always kept, so any payload within the limit fits whatever the header.
pub fn max_media_payload(max_datagram_size: usize) -> usize {
    max_datagram_size.saturating_sub(MediaHeader::MAX_LEN)
}

/// Appends the first bytes of a message stream (its stream type).
pub fn encode_message_stream_header(buf: &mut BytesMut) {
    varint::encode(STREAM_TYPE_MESSAGES, buf);
}

/// Appends one message, `track | length | payload`, to a message stream. The
/// sender must keep `payload` within the peer's `max_message_bytes`.
pub fn encode_message(track: u64, payload: &[u8], buf: &mut BytesMut) {
    varint::encode(track, buf);
    varint::encode(payload.len() as u64, buf);
    buf.extend_from_slice(payload);
}

/// One reliable data message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The relay-assigned track key.
    pub track: u64,
    /// The opaque payload.
    pub payload: Bytes,
}

/// Incremental decoder for a whole message stream, stream type included:
/// [`push`](Self::push) bytes as they arrive, then call
/// [`next_message`](Self::next_message) until it returns `Ok(None)`. A length
/// above the limit fails before its payload is buffered. An error is final.
#[derive(Debug)]
pub struct MessageDecoder {
    buf: BytesMut,
    max_len: usize,
    stream_type_seen: bool,
}

impl MessageDecoder {
    /// A decoder that refuses messages above `max_len` payload bytes.
    pub fn new(max_len: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_len,
            stream_type_seen: false,
        }
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        let mut rest = &self.buf[..];
        if !self.stream_type_seen {
            let Ok(stream_type) = varint::decode(&mut rest) else {
                return Ok(None);
            };
            if stream_type != STREAM_TYPE_MESSAGES {
                return Err(WireError::UnknownStreamType(stream_type));
            }
            let header_len = self.buf.len() - rest.len();
            self.buf.advance(header_len);
            self.stream_type_seen = true;
            rest = &self.buf[..];
        }
        let Ok(track) = varint::decode(&mut rest) else {
            return Ok(None);
        };
        let Ok(declared) = varint::decode(&mut rest) else {
            return Ok(None);
        };
        let len = match usize::try_from(declared) {
            Ok(len) if len <= self.max_len => len,
            _ => {
                return Err(WireError::Oversize {
                    what: "message",
                    len: usize::try_from(declared).unwrap_or(usize::MAX),
                    max: self.max_len,
                });
            }
        };
        if rest.len() < len {
            return Ok(None);
        }
        let prefix_len = self.buf.len() - rest.len();
        self.buf.advance(prefix_len);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Message { track, payload }))
    }
}
