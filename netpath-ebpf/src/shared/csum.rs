//! Internet checksum arithmetic (RFC 1071, RFC 1624) for headers the programs build
//! or change in place.

/// A ones'-complement sum of 16-bit words folded to 16 bits and complemented: the
/// checksum field's value. Two folds suffice for sums of up to 65 537 words.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The sum of `b`'s big-endian 16-bit words (`N` even), not yet folded.
#[inline(always)]
pub fn sum_words<const N: usize>(b: &[u8; N]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// A checksum after the 16-bit words `old` became `new` (RFC 1624, eqn. 3).
#[inline(always)]
pub fn update<const N: usize>(check: [u8; 2], old: &[u8; N], new: &[u8; N]) -> [u8; 2] {
    let mut sum = !u16::from_be_bytes(check) as u32;
    let mut i = 0;
    while i + 1 < N {
        sum += !u16::from_be_bytes([old[i], old[i + 1]]) as u32;
        sum += u16::from_be_bytes([new[i], new[i + 1]]) as u32;
        i += 2;
    }
    fold(sum).to_be_bytes()
}
