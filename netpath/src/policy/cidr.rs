//! Prefixes of either family, as policy compares them: an `ipBlock`, its
//! `except`s, a pod's /32 or /128. Held left-aligned in a `u128` so containment and
//! truncation are the same arithmetic for IPv4 and IPv6.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use netpath_common::{NetAddr, FAMILY_IPV6};

/// A prefix with its host bits cleared. Orders by family, then address, then length,
/// so a block comes right before the blocks inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    v6: bool,
    /// The address, left-aligned: an IPv4 address is the top 32 bits.
    bits: u128,
    prefix: u8,
}

impl IpNet {
    /// Every address of one family (`/0`).
    pub const fn all(v6: bool) -> Self {
        Self {
            v6,
            bits: 0,
            prefix: 0,
        }
    }

    /// One address as a prefix: /32 or /128.
    pub fn host(ip: IpAddr) -> Self {
        let (v6, bits) = split(ip);
        Self {
            v6,
            bits,
            prefix: if v6 { 128 } else { 32 },
        }
    }

    /// `ip`/`prefix` with the host bits cleared, `None` when the prefix is longer
    /// than the family's addresses.
    pub fn new_truncating(ip: IpAddr, prefix: u8) -> Option<Self> {
        let (v6, bits) = split(ip);
        let max = if v6 { 128 } else { 32 };
        (prefix <= max).then(|| Self {
            v6,
            bits: bits & mask(prefix),
            prefix,
        })
    }

    pub fn is_v6(&self) -> bool {
        self.v6
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.bits))
        } else {
            IpAddr::V4(Ipv4Addr::from((self.bits >> 96) as u32))
        }
    }

    /// `other` lies inside this prefix (or is it).
    pub fn contains(&self, other: &IpNet) -> bool {
        self.v6 == other.v6
            && self.prefix <= other.prefix
            && (self.bits ^ other.bits) & mask(self.prefix) == 0
    }

    /// The prefix of length `prefix` that holds this one (`prefix` ≤ its own).
    pub fn truncate(&self, prefix: u8) -> Self {
        let prefix = prefix.min(self.prefix);
        Self {
            v6: self.v6,
            bits: self.bits & mask(prefix),
            prefix,
        }
    }

    /// The key data the maps hold: the network address, family-tagged.
    pub fn net_addr(&self) -> NetAddr {
        let bytes = self.bits.to_be_bytes();
        if self.v6 {
            NetAddr {
                family: FAMILY_IPV6,
                _pad: [0; 3],
                addr: bytes,
            }
        } else {
            NetAddr::v4([bytes[0], bytes[1], bytes[2], bytes[3]])
        }
    }
}

fn split(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a)) << 96),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// The top `prefix` bits set.
fn mask(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p.min(128))),
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix)
    }
}

/// Why a CIDR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("expected ADDRESS/PREFIX")]
    NoPrefix,
    #[error("not an IPv4 or IPv6 address")]
    BadAddress,
    #[error("prefix must be 0-{0}")]
    BadPrefix(u8),
    #[error("host bits are set (the block is {0})")]
    HostBits(IpNet),
}

/// A CIDR as Kubernetes writes one: strict, host bits clear.
impl FromStr for IpNet {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (a, p) = s.split_once('/').ok_or(CidrError::NoPrefix)?;
        let addr: IpAddr = a.parse().map_err(|_| CidrError::BadAddress)?;
        let max = if addr.is_ipv6() { 128 } else { 32 };
        let prefix = Some(p)
            .filter(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|p| p.parse::<u8>().ok())
            .ok_or(CidrError::BadPrefix(max))?;
        let net = Self::new_truncating(addr, prefix).ok_or(CidrError::BadPrefix(max))?;
        if net.addr() != addr {
            return Err(CidrError::HostBits(net));
        }
        Ok(net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn both_families_parse_strictly_and_nest() {
        assert_eq!(n("10.1.0.0/16").to_string(), "10.1.0.0/16");
        assert_eq!(n("fd00::/8").to_string(), "fd00::/8");
        assert!(n("10.0.0.0/8").contains(&n("10.1.2.0/24")));
        assert!(!n("10.1.2.0/24").contains(&n("10.0.0.0/8")));
        assert!(!n("0.0.0.0/0").contains(&n("::/0")), "families never meet");
        assert!(n("::/0").contains(&n("fd00::1/128")));
        assert_eq!(
            "10.1.0.1/16".parse::<IpNet>(),
            Err(CidrError::HostBits(n("10.1.0.0/16")))
        );
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(CidrError::BadPrefix(32))
        );
        assert_eq!("10.0.0.0".parse::<IpNet>(), Err(CidrError::NoPrefix));
        assert_eq!("10.0.0/8".parse::<IpNet>(), Err(CidrError::BadAddress));
        assert!("fd00::/129".parse::<IpNet>().is_err());
    }

    #[test]
    fn map_keys_carry_the_family() {
        let v4 = IpNet::host("10.1.2.3".parse().unwrap()).net_addr();
        assert_eq!(v4, NetAddr::v4([10, 1, 2, 3]));
        let v6 = n("fd00::/8").net_addr();
        assert_eq!(v6.family, FAMILY_IPV6);
        assert_eq!(v6.addr[0], 0xfd);
        assert_eq!(n("10.1.2.0/24").truncate(16), n("10.1.0.0/16"));
    }
}
