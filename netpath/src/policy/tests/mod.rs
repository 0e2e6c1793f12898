//! The compiler judged the way the programs judge: `judge` performs their lookup
//! (longest match in the peers, then in the ports) over the compiled maps, so the
//! tests assert verdicts, not map contents.
mod compile;
mod e2e;
mod lpm;
mod scale;
mod validate;

use std::net::IpAddr;

use netpath_common::{PolicyPeerKey, PolicyPortKey, TrieKey, POLICY_EGRESS, POLICY_INGRESS};
use serde_json::{json, Value};

use super::*;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;

/// The programs' verdict on a new connection of local pod `local` in `direction`
/// with `peer`, `protocol` and destination `port`.
pub fn judge(
    c: &Compiled,
    local: IpAddr,
    direction: u8,
    peer: IpAddr,
    protocol: u8,
    port: u16,
) -> bool {
    let Some(e) = c.endpoints.get(&IpNet::host(local).net_addr()) else {
        return true;
    };
    if e.enforce & direction == 0 {
        return true;
    }
    let host = IpNet::host(peer);
    let found = (0..=host.prefix()).rev().find_map(|len| {
        c.peers.get(&TrieKey {
            bits: PolicyPeerKey::trie_bits(u32::from(len)),
            data: PolicyPeerKey {
                rule_set: e.rule_set,
                direction,
                _pad: [0; 3],
                peer: host.truncate(len).net_addr(),
            },
        })
    });
    let Some(v) = found else {
        return false;
    };
    if v.any == 1 {
        return true;
    }
    if v.port_set == 0 || ![TCP, UDP, SCTP].contains(&protocol) {
        return false;
    }
    (0..=16u32).rev().any(|len| {
        let start = if len == 0 {
            0
        } else {
            port & (u16::MAX << (16 - len))
        };
        c.ports.contains_key(&TrieKey {
            bits: PolicyPortKey::trie_bits(len),
            data: PolicyPortKey {
                port_set: v.port_set,
                protocol,
                _pad: 0,
                port: start.to_be_bytes(),
            },
        })
    })
}

/// Both ends' verdicts: the sender's egress and the receiver's ingress.
pub fn reach(c: &Compiled, from: IpAddr, to: IpAddr, protocol: u8, port: u16) -> bool {
    judge(c, from, POLICY_EGRESS, to, protocol, port)
        && judge(c, to, POLICY_INGRESS, from, protocol, port)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn policy(namespace: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }))
    .unwrap()
}

pub fn pod(namespace: &str, name: &str, labels: Value, ip: &str, ports: Value) -> PodRecord {
    serde_json::from_value(json!({
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "ports": ports}]},
        "status": {"podIP": ip},
    }))
    .unwrap()
}

pub fn local(namespace: &str, name: &str, ip: &str) -> LocalPod {
    LocalPod {
        ip: self::ip(ip),
        namespace: namespace.into(),
        name: name.into(),
    }
}

pub fn compiled(
    namespaces: &[Namespace],
    pods: &[PodRecord],
    policies: &[NetworkPolicy],
    local: &[LocalPod],
) -> Compiled {
    compile(&PolicyInput {
        namespaces,
        pods,
        policies,
        local,
    })
    .unwrap()
}
