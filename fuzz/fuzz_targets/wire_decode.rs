//! Feeds arbitrary bytes to every wire decoder: none may panic, and whatever
//! decodes must re-encode to bytes that decode to the same value.
#![no_main]

use georelay::wire::{MediaHeader, MessageDecoder, decode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((frame, consumed))) = decode_frame(data) {
        assert!(consumed <= data.len());
        let mut again = bytes::BytesMut::new();
        frame.encode(&mut again);
        assert_eq!(decode_frame(&again), Ok(Some((frame, again.len()))));
    }
    let _ = MediaHeader::parse(data);
    let mut messages = MessageDecoder::new(1024);
    messages.push(data);
    for _ in 0..data.len() {
        match messages.next_message() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
