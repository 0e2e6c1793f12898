//! Address types: IPv4 prefixes and MAC addresses, parsed and printed the way
//! `ip` prints them.
use std::{collections::BTreeSet, fmt, net::Ipv4Addr, str::FromStr};

/// An IPv4 prefix; `addr` may carry host bits where the field is an interface address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        Self { addr, prefix }
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix.min(32))
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The same prefix with host bits cleared (an interface address's subnet).
    pub fn subnet(&self) -> Ipv4Net {
        Ipv4Net::new(self.network(), self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains_net(other) || other.contains_net(self)
    }

    /// The `n`th address inside the prefix (0 = the network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()).wrapping_add(n))
    }

    /// How many addresses the prefix spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix.min(32))
    }
}

/// A set of CIDR blocks that answers "does this block overlap any of them" with a
/// few ordered lookups: blocks overlap only by nesting, so one of the set lies in
/// the block's range, or the block lies in a supernet of a length the set holds
/// (claims of one subnet length: one lookup each way).
#[derive(Debug, Clone, Default)]
pub struct CidrSet {
    blocks: BTreeSet<(u32, u8)>,
    /// Bit p set: the set holds a block of prefix length p.
    lengths: u64,
}

impl CidrSet {
    pub fn insert(&mut self, n: Ipv4Net) {
        let p = n.prefix.min(32);
        self.blocks.insert((u32::from(n.network()), p));
        self.lengths |= 1 << p;
    }

    pub fn overlaps(&self, n: &Ipv4Net) -> bool {
        let start = u32::from(n.network());
        let last = (u64::from(start) + n.size() - 1) as u32;
        if self.blocks.range((start, 0)..=(last, 32)).next().is_some() {
            return true;
        }
        (0..n.prefix.min(32))
            .filter(|p| self.lengths & (1 << p) != 0)
            .any(|p| {
                let sup = Ipv4Net::new(n.addr, p).network();
                self.blocks.contains(&(u32::from(sup), p))
            })
    }
}

impl<'a> FromIterator<&'a Ipv4Net> for CidrSet {
    fn from_iter<I: IntoIterator<Item = &'a Ipv4Net>>(iter: I) -> Self {
        let mut set = Self::default();
        for n in iter {
            set.insert(*n);
        }
        set
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s.split_once('/').ok_or("expected ADDRESS/PREFIX")?;
        let addr = a.parse().map_err(|_| "not an IPv4 address")?;
        let prefix: u8 = p.parse().map_err(|_| "prefix is not a number")?;
        if prefix > 32 {
            return Err("prefix must be 0-32");
        }
        Ok(Self { addr, prefix })
    }
}

impl serde::Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Unicast and not all zeroes: usable as a device's own address.
    pub fn is_unicast(self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl From<[u8; 6]> for Mac {
    fn from(b: [u8; 6]) -> Self {
        Self(b)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for Mac {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WANT: &str = "expected aa:bb:cc:dd:ee:ff";
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for m in mac.iter_mut() {
            let p = parts.next().ok_or(WANT)?;
            if p.len() != 2 {
                return Err(WANT);
            }
            *m = u8::from_str_radix(p, 16).map_err(|_| WANT)?;
        }
        if parts.next().is_some() {
            return Err(WANT);
        }
        Ok(Mac(mac))
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cidr_set_finds_nested_blocks_both_ways() {
        let n = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let set: CidrSet = [n("10.244.4.0/22"), n("10.245.0.0/24")].iter().collect();
        for hit in [
            "10.244.5.0/24",
            "10.244.0.0/16",
            "10.0.0.0/8",
            "10.245.0.128/25",
        ] {
            assert!(set.overlaps(&n(hit)), "{hit}");
        }
        for miss in [
            "10.244.3.0/24",
            "10.244.8.0/22",
            "10.245.1.0/24",
            "11.0.0.0/8",
        ] {
            assert!(!set.overlaps(&n(miss)), "{miss}");
        }
    }

    #[test]
    fn prefix_arithmetic() {
        let n: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        assert!(n.contains("10.244.1.200".parse().unwrap()));
        assert!(!n.contains("10.244.2.1".parse().unwrap()));
        assert_eq!(n.nth(1), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(n.size(), 256);
        let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains_net(&n) && all.overlaps(&n) && n.overlaps(&all));
        let iface: Ipv4Net = "192.168.56.11/24".parse().unwrap();
        assert_eq!(iface.subnet().to_string(), "192.168.56.0/24");
        assert_eq!("10.0.0.0/33".parse::<Ipv4Net>(), Err("prefix must be 0-32"));
    }

    #[test]
    fn macs_parse_and_print_like_ip_does() {
        let m: Mac = "0e:6e:C0:a8:38:0b".parse().unwrap();
        assert_eq!(m.to_string(), "0e:6e:c0:a8:38:0b");
        assert!(m.is_unicast());
        assert!(!"01:00:5e:00:00:01".parse::<Mac>().unwrap().is_unicast());
        for bad in [
            "",
            "0e:6e",
            "0e:6e:c0:a8:38:0b:00",
            "0e:6e:c0:a8:38:zz",
            "e:6e:c0:a8:38:0b0",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}

/// Both address types read back what they print.
macro_rules! deserialize_from_str {
    ($t:ty) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse()
                    .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
            }
        }
    };
}
deserialize_from_str!(Ipv4Net);
deserialize_from_str!(Mac);
