//! Media datagrams and message streams as the relay reads them. The header
//! parser must not panic, must report a length within the datagram and at
//! most 24 bytes, and must agree with the hot path's track-only parser; a
//! parsed header re-encodes to a header that parses to the same value. The
//! message-stream decoder must never yield a payload over its limit.
#![no_main]

use georelay::wire::{MediaHeader, MessageDecoder};
use libfuzzer_sys::fuzz_target;

const MAX_MESSAGE: usize = 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, len)) = MediaHeader::parse(data) {
        assert!(len <= data.len() && len <= MediaHeader::MAX_LEN);
        assert_eq!(MediaHeader::parse_track(data), Ok(header.track));
        let mut again = bytes::BytesMut::new();
        header.encode(&mut again);
        assert_eq!(again.len(), header.encoded_len());
        assert!(again.len() <= len);
        assert_eq!(MediaHeader::parse(&again), Ok((header, again.len())));
    }
    let mut messages = MessageDecoder::new(MAX_MESSAGE);
    messages.push(data);
    for _ in 0..=data.len() {
        match messages.next_message() {
            Ok(Some(message)) => assert!(message.payload.len() <= MAX_MESSAGE),
            Ok(None) | Err(_) => break,
        }
    }
});
