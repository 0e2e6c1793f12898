//! Port sets: what a peer may use, as ranges per protocol, and the prefixes of the
//! 16-bit port that `POLICY_PORTS` stores for them.
use netpath_common::{PolicyPortKey, TrieKey};

/// (IP protocol, first port, last port), inclusive.
pub type PortRange = (u8, u16, u16);

/// The ranges sorted, overlapping and adjacent ones of a protocol merged: one
/// content has one form, so equal sets get one id.
pub fn normalize(ranges: impl IntoIterator<Item = PortRange>) -> Vec<PortRange> {
    let mut all: Vec<PortRange> = ranges.into_iter().collect();
    all.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(all.len());
    for (proto, lo, hi) in all {
        match out.last_mut() {
            Some((p, _, last)) if *p == proto && u32::from(lo) <= u32::from(*last) + 1 => {
                *last = (*last).max(hi);
            }
            _ => out.push((proto, lo, hi)),
        }
    }
    out
}

/// The fewest aligned blocks that cover `lo..=hi` exactly: (first port, prefix
/// length); one port is a /16, every port one /0.
pub fn prefix_blocks(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    let mut blocks = Vec::new();
    while lo <= hi {
        // The largest block aligned at `lo` that ends by `hi`.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        blocks.push((lo as u16, 16 - size.trailing_zeros() as u8));
        lo += size;
    }
    blocks
}

/// The `POLICY_PORTS` entries of port set `id`.
pub fn port_entries(
    id: u32,
    ranges: &[PortRange],
) -> impl Iterator<Item = TrieKey<PolicyPortKey>> + '_ {
    ranges.iter().flat_map(move |&(protocol, lo, hi)| {
        prefix_blocks(lo, hi)
            .into_iter()
            .map(move |(start, len)| TrieKey {
                bits: PolicyPortKey::trie_bits(u32::from(len)),
                data: PolicyPortKey {
                    port_set: id,
                    protocol,
                    _pad: 0,
                    port: start.to_be_bytes(),
                },
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every port of `lo..=hi` is in exactly one block and no other port is.
    fn covers_exactly(lo: u16, hi: u16) {
        let blocks = prefix_blocks(lo, hi);
        for port in 0..=u16::MAX {
            let hits = blocks
                .iter()
                .filter(|(start, len)| {
                    let shift = 16 - u32::from(*len);
                    shift == 16 || (port >> shift) == (start >> shift)
                })
                .count();
            let want = usize::from((lo..=hi).contains(&port));
            assert_eq!(hits, want, "{lo}-{hi}: port {port} in {blocks:?}");
        }
    }

    #[test]
    fn ranges_become_the_fewest_prefix_blocks() {
        assert_eq!(prefix_blocks(80, 80), vec![(80, 16)]);
        assert_eq!(prefix_blocks(80, 81), vec![(80, 15)]);
        assert_eq!(prefix_blocks(0, 65535), vec![(0, 0)]);
        assert_eq!(
            prefix_blocks(1, 65535).len(),
            16,
            "1, 2-3, 4-7, … 32768-65535"
        );
        assert_eq!(prefix_blocks(81, 82), vec![(81, 16), (82, 16)]);
        assert_eq!(prefix_blocks(65535, 65535), vec![(65535, 16)]);
        for (lo, hi) in [(1, 65535), (80, 81), (8000, 9000), (65534, 65535), (3, 3)] {
            covers_exactly(lo, hi);
        }
    }

    #[test]
    fn sets_normalize_to_one_form() {
        let a = normalize([
            (6, 81, 81),
            (6, 80, 80),
            (17, 80, 80),
            (6, 82, 90),
            (6, 85, 85),
        ]);
        assert_eq!(a, vec![(6, 80, 90), (17, 80, 80)]);
        assert_eq!(normalize([(6, 0, 65535), (6, 80, 80)]), vec![(6, 0, 65535)]);
        let keys: Vec<_> = port_entries(7, &[(6, 80, 81)]).collect();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].bits, PolicyPortKey::trie_bits(15));
        assert_eq!(keys[0].data.port, [0, 80]);
    }
}
