//! The policy maps from user space: what is there (read back for reconcile's diff),
//! puts and removals in the order that never opens a pod, and the collector of idle
//! connection-table entries.
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aya::maps::lpm_trie::Key;
use netpath_common::{
    policy_timeout, CtEntry, CtKey, NetAddr, PolicyEndpoint, PolicyPeer, PolicyPeerKey,
    PolicyPortKey, TrieKey, IPPROTO_TCP, IPPROTO_UDP,
};

use super::Pinned;
use crate::policy::PolicyMaps;

fn trie_entries<K: aya::Pod + Ord, V: aya::Pod>(
    it: impl Iterator<Item = Result<(Key<K>, V), aya::maps::MapError>>,
) -> BTreeMap<TrieKey<K>, V> {
    it.filter_map(|e| e.ok())
        .map(|(k, v)| {
            (
                TrieKey {
                    bits: k.prefix_len(),
                    data: k.data(),
                },
                v,
            )
        })
        .collect()
}

impl Pinned {
    /// What the policy maps hold now. The programs never write them.
    pub fn policy_maps(&self) -> PolicyMaps {
        PolicyMaps {
            endpoints: self
                .POLICY_ENDPOINTS
                .iter()
                .filter_map(|e| e.ok())
                .collect(),
            peers: trie_entries(self.POLICY_PEERS.iter()),
            ports: trie_entries(self.POLICY_PORTS.iter()),
            known: Default::default(),
        }
    }

    pub fn policy_endpoint(&self, addr: NetAddr) -> Option<PolicyEndpoint> {
        self.POLICY_ENDPOINTS.get(&addr, 0).ok()
    }

    pub fn set_policy_endpoint(&mut self, addr: NetAddr, ep: PolicyEndpoint) -> Result<()> {
        self.POLICY_ENDPOINTS
            .insert(addr, ep, 0)
            .context("POLICY_ENDPOINTS is full")
    }

    pub fn remove_policy_endpoint(&mut self, addr: NetAddr) -> Result<()> {
        remove_ok(self.POLICY_ENDPOINTS.remove(&addr))
    }

    pub fn set_policy_peer(&mut self, k: TrieKey<PolicyPeerKey>, v: PolicyPeer) -> Result<()> {
        self.POLICY_PEERS
            .insert(&Key::new(k.bits, k.data), v, 0)
            .context("POLICY_PEERS is full")
    }

    pub fn remove_policy_peer(&mut self, k: TrieKey<PolicyPeerKey>) -> Result<()> {
        remove_ok(self.POLICY_PEERS.remove(&Key::new(k.bits, k.data)))
    }

    pub fn set_policy_port(&mut self, k: TrieKey<PolicyPortKey>, v: u32) -> Result<()> {
        self.POLICY_PORTS
            .insert(&Key::new(k.bits, k.data), v, 0)
            .context("POLICY_PORTS is full")
    }

    pub fn remove_policy_port(&mut self, k: TrieKey<PolicyPortKey>) -> Result<()> {
        remove_ok(self.POLICY_PORTS.remove(&Key::new(k.bits, k.data)))
    }

    /// Every connection-table entry (skipping any that vanished while walked).
    pub fn policy_connections(&self) -> Vec<(CtKey, CtEntry)> {
        self.POLICY_CT.iter().filter_map(|e| e.ok()).collect()
    }

    /// Removes the connection-table entries idle longer than their protocol's
    /// timeout; how many.
    pub fn collect_policy_connections(&mut self, now_ns: u64) -> usize {
        let mut n = 0;
        for (k, e) in self.policy_connections() {
            if !idle(&k, &e, now_ns) {
                continue;
            }
            // Read again: a packet may have used it since.
            match self.POLICY_CT.get(&k, 0) {
                Ok(now) if idle(&k, &now, now_ns) => {}
                _ => continue,
            }
            if self.POLICY_CT.remove(&k).is_ok() {
                n += 1;
            }
        }
        n
    }
}

fn idle(k: &CtKey, e: &CtEntry, now_ns: u64) -> bool {
    let secs = match k.protocol {
        IPPROTO_TCP if e.closing != 0 => policy_timeout::TCP_CLOSING,
        IPPROTO_TCP => policy_timeout::TCP,
        IPPROTO_UDP => policy_timeout::UDP,
        _ => policy_timeout::OTHER,
    };
    now_ns.saturating_sub(e.last_seen) > secs * 1_000_000_000
}

/// A removal of what is not there is done already.
fn remove_ok(r: Result<(), aya::maps::MapError>) -> Result<()> {
    match r {
        Err(e) if super::maps::is_missing(&e) => Ok(()),
        r => Ok(r?),
    }
}
