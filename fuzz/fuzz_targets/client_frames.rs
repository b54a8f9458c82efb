//! A client's control stream as the relay reads it: arbitrary bytes pushed
//! into a `FrameDecoder` in two chunks (split at the first byte's value).
//! Decoding must not panic, must not depend on where the bytes were split,
//! must not buffer more than one frame, and every frame decoded must
//! re-encode (within limits) to bytes that decode to the same frame.
#![no_main]

use georelay::wire::frame::decode_frame_with_limit;
use georelay::wire::{FrameDecoder, decode_frame};
use libfuzzer_sys::fuzz_target;

const MAX_BODY: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(stream.len());
    let mut decoder = FrameDecoder::new(MAX_BODY);
    let mut chunked = Vec::new();
    let mut chunked_error = None;
    'chunks: for chunk in [&stream[..split], &stream[split..]] {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => chunked.push(frame),
                Ok(None) => break,
                Err(err) => {
                    chunked_error = Some(err);
                    break 'chunks;
                }
            }
        }
        // At most one partial frame stays buffered.
        assert!(decoder.buffered() <= 16 + MAX_BODY + chunk.len());
    }
    // The same bytes decoded in one go give the same frames and error.
    let mut whole = Vec::new();
    let mut rest = stream;
    let whole_error = loop {
        match decode_frame_with_limit(rest, MAX_BODY) {
            Ok(Some((frame, consumed))) => {
                assert!(consumed > 0 && consumed <= rest.len());
                rest = &rest[consumed..];
                whole.push(frame);
            }
            Ok(None) => break None,
            Err(err) => break Some(err),
        }
    };
    assert_eq!(chunked, whole);
    assert_eq!(chunked_error, whole_error);
    for frame in whole {
        let mut again = bytes::BytesMut::new();
        frame
            .try_encode(&mut again)
            .expect("a decoded frame is within every limit");
        assert_eq!(decode_frame(&again), Ok(Some((frame, again.len()))));
    }
});
