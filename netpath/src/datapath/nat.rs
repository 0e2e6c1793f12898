//! The masquerade tables from user space: what is in use, and the collector that
//! frees what expired. The programs reclaim a single port when they need it; the
//! collector keeps map space from filling up with dead flows.
use std::collections::HashSet;

use netpath_common::{Flow, FlowKey, NatKey, NatTarget, NAT_CAPACITY};

use super::Pinned;

/// Entries in use in the two NAT maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct NatUsage {
    pub flows: usize,
    pub translations: usize,
    pub capacity: u32,
}

/// What one collector pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    pub expired: usize,
    pub orphans: usize,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Pinned {
    /// Every translated flow. The programs insert and delete while we walk, so an
    /// entry that vanished under us is skipped, not an error.
    pub fn nat_flows(&self) -> Vec<(FlowKey, Flow)> {
        let mut out: Vec<(FlowKey, Flow)> = self.NAT_OUT.iter().filter_map(|e| e.ok()).collect();
        out.sort_by_key(|(k, _)| *k);
        out.dedup_by_key(|(k, _)| *k);
        out
    }

    pub fn nat_translations(&self) -> Vec<(NatKey, NatTarget)> {
        let mut out: Vec<(NatKey, NatTarget)> = self.NAT_IN.iter().filter_map(|e| e.ok()).collect();
        out.sort_by_key(|(k, _)| *k);
        out.dedup_by_key(|(k, _)| *k);
        out
    }

    pub fn nat_usage(&self) -> NatUsage {
        NatUsage {
            flows: self.NAT_OUT.keys().filter(|k| k.is_ok()).count(),
            translations: self.NAT_IN.keys().filter(|k| k.is_ok()).count(),
            capacity: NAT_CAPACITY,
        }
    }
}

/// Frees expired flows and translations left without a flow.
#[derive(Default)]
pub struct Collector {
    /// Translations (with the pod they led to) without a flow at the last pass. A
    /// program inserts the translation just before its flow, and hands a port on to
    /// a new flow in a few steps, so only a second sighting of the same pair, still
    /// there when looked at again, is an orphan.
    suspects: HashSet<(NatKey, [u8; 4], [u8; 2])>,
}

impl Collector {
    pub fn run(&mut self, pinned: &mut Pinned, now_ns: u64) -> Collected {
        let mut done = Collected::default();
        for (k, f) in pinned.nat_flows() {
            if !f.expired(k.proto, now_ns) {
                continue;
            }
            // Read again: a new SYN on the same tuple may have revived it since.
            match pinned.NAT_OUT.get(&k, 0) {
                Ok(now) if now.expired(k.proto, now_ns) => {}
                _ => continue,
            }
            // The flow first: a program that still finds it re-uses its port, one
            // that does not claims a new one.
            if pinned.NAT_OUT.remove(&k).is_ok() {
                done.expired += 1;
            }
            let nk = k.translated(f.nat_port);
            if let Ok(t) = pinned.NAT_IN.get(&nk, 0) {
                if t.pod == k.pod && t.pod_port == k.pod_port {
                    let _ = pinned.NAT_IN.remove(&nk);
                }
            }
        }
        let mut suspects = HashSet::new();
        for (nk, t) in pinned.nat_translations() {
            let owner = nk.owner(&t);
            let owned = pinned
                .NAT_OUT
                .get(&owner, 0)
                .is_ok_and(|f| f.nat_port == nk.nat_port);
            if owned {
                continue;
            }
            let suspect = (nk, t.pod, t.pod_port);
            let unchanged = pinned.NAT_IN.get(&nk, 0).is_ok_and(|now| now == t);
            if self.suspects.contains(&suspect) && unchanged {
                if pinned.NAT_IN.remove(&nk).is_ok() {
                    done.orphans += 1;
                }
            } else {
                suspects.insert(suspect);
            }
        }
        self.suspects = suspects;
        done
    }
}
