//! Addresses as the maps hold them.

/// IPv4 address in network byte order.
pub type Ipv4 = [u8; 4];

/// [`NetAddr::family`] of an IPv4 address.
pub const FAMILY_IPV4: u8 = 4;
/// [`NetAddr::family`] of an IPv6 address (none is stored yet: issue 27).
pub const FAMILY_IPV6: u8 = 6;

/// An address of either family, the key data of every LPM trie (`ROUTES`,
/// `NAT_EXEMPT`). The family comes first so one trie holds both families without
/// their prefixes meeting (as Cilium's ipcache key does); IPv4 sits in the first four
/// bytes of `addr`, the rest zero. A trie key's prefix length counts the family word
/// too: a /24 is stored with `prefix_len` [`NetAddr::FAMILY_BITS`] + 24 = 56, which is
/// what `bpftool map dump` shows beside `"family": 4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetAddr {
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

impl NetAddr {
    /// Bits in front of the address that every key of a family shares.
    pub const FAMILY_BITS: u32 = 32;

    pub const fn v4(a: Ipv4) -> Self {
        Self {
            family: FAMILY_IPV4,
            _pad: [0; 3],
            addr: [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }

    /// The IPv4 address, if this is one.
    pub const fn as_v4(&self) -> Option<Ipv4> {
        if self.family != FAMILY_IPV4 {
            return None;
        }
        Some([self.addr[0], self.addr[1], self.addr[2], self.addr[3]])
    }

    /// A trie key's prefix length for a /`prefix` of its address.
    pub const fn trie_bits(prefix: u32) -> u32 {
        Self::FAMILY_BITS + prefix
    }

    /// The address prefix length of a trie key's `prefix_len`.
    pub const fn prefix_of(trie_bits: u32) -> u32 {
        trie_bits.saturating_sub(Self::FAMILY_BITS)
    }
}
