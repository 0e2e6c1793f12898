//! The keys under an etcd prefix, one place for every path the store reads and
//! writes (the policy records' own are in `records.rs`, by their kind).
use crate::net::Ipv4Net;

/// The key naming a subnet: `10.244.3.0-24` (no `/` inside a key segment).
pub fn subnet_key(net: &Ipv4Net) -> String {
    format!("{}-{}", net.network(), net.prefix)
}

pub fn parse_subnet_key(k: &str) -> Option<Ipv4Net> {
    let (a, p) = k.split_once('-')?;
    let net = Ipv4Net::new(a.parse().ok()?, p.parse().ok()?);
    (net.prefix <= 32 && net.network() == net.addr).then_some(net)
}

/// Keys under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }
    pub fn config(&self) -> String {
        format!("{}/config", self.prefix)
    }
    pub fn subnets(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }
    pub fn subnet(&self, net: &Ipv4Net) -> String {
        format!("{}{}", self.subnets(), subnet_key(net))
    }
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }
    pub fn node(&self, name: &str) -> String {
        format!("{}{name}", self.nodes())
    }
    /// Each node's WireGuard public key (with encryption on), on its lease.
    pub fn wireguard_keys(&self) -> String {
        format!("{}/wireguard/", self.prefix)
    }
    pub fn wireguard_key(&self, name: &str) -> String {
        format!("{}{name}", self.wireguard_keys())
    }
    pub fn services(&self) -> String {
        format!("{}/services/", self.prefix)
    }
    pub fn service(&self, namespace: &str, name: &str) -> String {
        format!("{}{namespace}/{name}", self.services())
    }
    pub fn endpoint_slices(&self) -> String {
        format!("{}/endpoints/", self.prefix)
    }
    pub fn endpoint_slice(&self, namespace: &str, name: &str) -> String {
        format!("{}{namespace}/{name}", self.endpoint_slices())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_keys_round_trip() {
        let n: Ipv4Net = "10.244.3.0/24".parse().unwrap();
        assert_eq!(parse_subnet_key(&subnet_key(&n)), Some(n));
        assert_eq!(parse_subnet_key("10.244.3.1-24"), None);
        assert_eq!(parse_subnet_key("junk"), None);
    }
}
