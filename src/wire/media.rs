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

    /// A whole media datagram: this header, then `payload`.
    pub fn datagram(&self, payload: &[u8]) -> bytes::Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len() + payload.len());
        self.encode(&mut buf);
        buf.extend_from_slice(payload);
        buf.freeze()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::wire::varint::MAX as VARINT_MAX;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn datagram(header: &MediaHeader, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        header.encode(&mut buf);
        buf.extend_from_slice(payload);
        buf
    }

    proptest! {
        #[test]
        fn headers_round_trip_and_leave_the_payload(
            track in 0..=VARINT_MAX,
            seq in 0..=VARINT_MAX,
            timestamp_us in 0..=VARINT_MAX,
            payload in vec(any::<u8>(), 0..64),
        ) {
            let header = MediaHeader { track, seq, timestamp_us };
            let bytes = datagram(&header, &payload);
            let (parsed, len) = MediaHeader::parse(&bytes)?;
            prop_assert_eq!(parsed, header);
            prop_assert_eq!(len, header.encoded_len());
            prop_assert!(len <= MediaHeader::MAX_LEN);
            prop_assert_eq!(&bytes[len..], payload.as_slice());
            prop_assert_eq!(MediaHeader::parse_track(&bytes), Ok(track));
            for cut in 0..len {
                prop_assert_eq!(MediaHeader::parse(&bytes[..cut]), Err(WireError::Truncated));
            }
        }

        #[test]
        fn garbage_datagrams_never_panic(bytes in vec(any::<u8>(), 0..32)) {
            if let Ok((_, len)) = MediaHeader::parse(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }

        #[test]
        fn message_streams_decode_in_any_pieces(
            messages in vec((0..=VARINT_MAX, vec(any::<u8>(), 0..300)), 0..8),
            piece in 1usize..40,
        ) {
            let mut stream = BytesMut::new();
            encode_message_stream_header(&mut stream);
            for (track, payload) in &messages {
                encode_message(*track, payload, &mut stream);
            }
            let mut decoder = MessageDecoder::new(300);
            let mut decoded = Vec::new();
            for chunk in stream.chunks(piece) {
                decoder.push(chunk);
                while let Some(message) = decoder.next_message()? {
                    decoded.push((message.track, message.payload.to_vec()));
                }
            }
            prop_assert_eq!(decoded, messages);
        }
    }

    #[test]
    fn the_longest_header_is_max_len() {
        let header = MediaHeader {
            track: VARINT_MAX,
            seq: VARINT_MAX,
            timestamp_us: VARINT_MAX,
        };
        assert_eq!(datagram(&header, &[]).len(), MediaHeader::MAX_LEN);
        assert_eq!(max_media_payload(1200), 1200 - MediaHeader::MAX_LEN);
        assert_eq!(max_media_payload(10), 0);
    }

    #[test]
    fn oversize_messages_fail_before_the_payload_arrives() {
        let mut stream = BytesMut::new();
        encode_message_stream_header(&mut stream);
        encode_message(5, &[0u8; 101], &mut stream);
        let mut decoder = MessageDecoder::new(100);
        // Stream type, track and length only: no payload byte yet.
        decoder.push(&stream[..4]);
        let error = decoder.next_message().unwrap_err();
        assert_eq!(
            error,
            WireError::Oversize {
                what: "message",
                len: 101,
                max: 100
            }
        );
        assert_eq!(error.code(), ErrorCode::LimitExceeded);
    }

    #[test]
    fn other_stream_types_are_refused() {
        let mut decoder = MessageDecoder::new(100);
        decoder.push(&[0x02, 0x00, 0x00]);
        assert_eq!(
            decoder.next_message(),
            Err(WireError::UnknownStreamType(0x02))
        );
        let mut empty = MessageDecoder::new(100);
        assert_eq!(empty.next_message(), Ok(None));
    }
}
