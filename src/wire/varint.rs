//! QUIC variable-length integers (RFC 9000 §16): the only integer encoding of
//! the wire protocol.
//!
//! The two high bits of the first byte give the length (1, 2, 4 or 8 bytes);
//! the remaining bits hold the value in network byte order. Encoders use the
//! shortest form; decoders accept any valid form.

use bytes::BufMut;

use super::WireError;

/// The largest encodable value, 2^62 - 1.
pub const MAX: u64 = (1 << 62) - 1;

/// The number of bytes the shortest encoding of `v` takes (8 for values above
/// [`MAX`], which [`encode`] clamps).
pub fn len(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// Appends the shortest encoding of `v`.
///
/// Values above [`MAX`] cannot be encoded: they are a caller bug, written as
/// [`MAX`] (use [`try_encode`] to get an error instead).
pub fn encode(v: u64, buf: &mut impl BufMut) {
    let v = v.min(MAX);
    match len(v) {
        1 => buf.put_u8(v as u8),
        2 => buf.put_u16(0x4000 | v as u16),
        4 => buf.put_u32(0x8000_0000 | v as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | v),
    }
}

/// Appends the shortest encoding of `v`, or fails with
/// [`WireError::VarintOverflow`] (writing nothing) when `v` exceeds [`MAX`].
pub fn try_encode(v: u64, buf: &mut impl BufMut) -> Result<(), WireError> {
    if v > MAX {
        return Err(WireError::VarintOverflow);
    }
    encode(v, buf);
    Ok(())
}

/// Reads one varint from the front of `buf` and advances it past the varint.
/// On [`WireError::Truncated`], `buf` is left unchanged.
pub fn decode(buf: &mut &[u8]) -> Result<u64, WireError> {
    let first = *buf.first().ok_or(WireError::Truncated)?;
    let width = 1usize << (first >> 6);
    let bytes = buf.get(..width).ok_or(WireError::Truncated)?;
    let value = bytes[1..]
        .iter()
        .fold(u64::from(first & 0x3f), |acc, &b| (acc << 8) | u64::from(b));
    *buf = &buf[width..];
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }

    #[test]
    fn rfc_9000_sample_encodings_decode() {
        // RFC 9000 Appendix A.1, including the non-shortest two-byte form of 37.
        let samples: [(&[u8], u64); 5] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
            (&[0x40, 0x25], 37),
        ];
        for (bytes, value) in samples {
            let mut input = bytes;
            assert_eq!(decode(&mut input), Ok(value));
            assert!(input.is_empty());
        }
        assert_eq!(
            encoded(151_288_809_941_952_652),
            [0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]
        );
        assert_eq!(encoded(37), [0x25]);
    }

    #[test]
    fn length_boundaries_use_the_shortest_form() {
        for (v, width) in [
            (0, 1),
            (63, 1),
            (64, 2),
            (16_383, 2),
            (16_384, 4),
            ((1 << 30) - 1, 4),
            (1 << 30, 8),
            (MAX, 8),
        ] {
            assert_eq!(len(v), width, "len({v})");
            assert_eq!(encoded(v).len(), width, "encode({v})");
        }
    }

    #[test]
    fn values_above_max_are_refused_by_try_encode() {
        let mut out = Vec::new();
        assert_eq!(
            try_encode(MAX + 1, &mut out),
            Err(WireError::VarintOverflow)
        );
        assert!(out.is_empty());
        assert_eq!(encoded(u64::MAX), encoded(MAX));
    }

    #[test]
    fn truncated_input_is_reported_and_not_consumed() {
        let full = encoded(MAX);
        for cut in 0..full.len() {
            let mut input = &full[..cut];
            assert_eq!(decode(&mut input), Err(WireError::Truncated));
            assert_eq!(input.len(), cut);
        }
    }

    proptest! {
        #[test]
        fn round_trips(v in 0..=MAX, tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut bytes = encoded(v);
            prop_assert_eq!(bytes.len(), len(v));
            bytes.extend_from_slice(&tail);
            let mut input = bytes.as_slice();
            prop_assert_eq!(decode(&mut input), Ok(v));
            prop_assert_eq!(input, tail.as_slice());
        }
    }
}
