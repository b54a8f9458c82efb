//! Mesh control frames (`PEER_HELLO`, `LINK_STATE`, `CHANNEL_ANNOUNCE`,
//! `MESH_SUBSCRIBE`, ...) as a node reads them from a peer, at the full body
//! limit. Decoding must not panic or over-read; a decoded frame's lists are
//! within the spec's limits; it round-trips through `try_encode`, and the
//! codec's shortest-varint encoding is never longer than what arrived.
#![no_main]

use georelay::wire::{self, Frame, decode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, consumed))) = decode_frame(rest) {
        let (bytes, tail) = rest.split_at(consumed);
        rest = tail;
        match &frame {
            Frame::LinkState(state) => assert!(state.links.len() <= wire::MAX_LINKS),
            Frame::ChannelAnnounce(announce) => {
                assert!(announce.tracks.len() <= wire::MAX_TRACKS)
            }
            Frame::MeshSubscribe(subscribe) => {
                assert!(subscribe.path.len() <= wire::MAX_PATH_NODES)
            }
            _ => {}
        }
        let mut again = bytes::BytesMut::new();
        frame
            .try_encode(&mut again)
            .expect("a decoded frame is within every limit");
        let (decoded, used) = decode_frame(&again)
            .expect("the re-encoded frame decodes")
            .expect("the re-encoded frame is complete");
        assert_eq!(decoded, frame);
        assert_eq!(used, again.len());
        assert!(again.len() <= bytes.len(), "shortest encoding is never longer");
    }
});
