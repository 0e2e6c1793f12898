//! The Internet checksum (RFC 1071), for frames the tests and checks build by hand.

/// One's-complement sum of 16-bit big-endian words, not yet folded.
pub fn sum(data: &[u8]) -> u32 {
    let mut s = 0u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        s += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        s += (*last as u32) << 8;
    }
    s
}

/// Folds a sum into the final checksum value.
pub fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // Words 0x0001 0xf203 0xf4f5 0xf6f7 sum to 0x2ddf0 -> folded 0xddf2 -> checksum 0x220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0x220d);
    }

    #[test]
    fn checksum_of_checksummed_data_is_zero() {
        let mut hdr = [
            0x45u8, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 10, 244, 1, 2, 10, 244, 1, 3,
        ];
        let c = fold(sum(&hdr));
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(fold(sum(&hdr)), 0);
    }
}
