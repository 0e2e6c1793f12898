//! Where a test's time goes inside netpath's programs: the kernel's run-time
//! statistics (BPF_ENABLE_STATS), on only while the returned guard lives, so the
//! host's `kernel.bpf_stats_enabled` setting is never touched.
use std::{collections::BTreeMap, os::fd::OwnedFd};

use anyhow::{Context, Result};
use aya::{
    programs::loaded_programs,
    sys::{enable_stats, Stats},
};
use serde::Serialize;

/// netpath's programs by the name the kernel keeps (their function names).
const OURS: [&str; 9] = [
    "from_pod",
    "from_underlay",
    "xdp_underlay",
    "from_tunnel",
    "to_underlay",
    "sock_connect",
    "sock_sendmsg",
    "sock_recvmsg",
    "sock_getpeern",
];

/// Statistics on while this lives.
pub struct Enabled(#[allow(dead_code)] OwnedFd);

pub fn enable() -> Result<Enabled> {
    enable_stats(Stats::RunTime)
        .map(Enabled)
        .context("BPF_ENABLE_STATS (run-time statistics need kernel 5.8+ and root)")
}

/// Run time and runs so far per program name, summed over every loaded copy (each
/// lab node's agent loads its own).
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<String, (u64, u64)>);

pub fn snapshot() -> Result<Snapshot> {
    let mut all = BTreeMap::new();
    for info in loaded_programs() {
        let info = info.context("read a loaded program's info")?;
        let Some(name) = info.name_as_str() else {
            continue;
        };
        if !OURS.iter().any(|o| name.starts_with(o)) {
            continue;
        }
        let e: &mut (u64, u64) = all.entry(name.to_string()).or_default();
        e.0 += info.run_time().as_nanos() as u64;
        e.1 += info.run_count();
    }
    Ok(Snapshot(all))
}

/// One program's share of a test.
#[derive(Debug, Clone, Serialize)]
pub struct ProgCost {
    pub program: String,
    /// Its runs and its time divided by the test's units of work (connections,
    /// requests).
    pub runs_per_unit: f64,
    pub ns_per_unit: f64,
}

/// What ran between `before` and `after`, per unit of work done meanwhile.
pub fn between(before: &Snapshot, after: &Snapshot, units: f64) -> Vec<ProgCost> {
    after
        .0
        .iter()
        .filter_map(|(name, &(ns, runs))| {
            let (ns0, runs0) = before.0.get(name).copied().unwrap_or_default();
            let (ns, runs) = (ns.saturating_sub(ns0), runs.saturating_sub(runs0));
            let units = units.max(1.0);
            (runs > 0).then(|| ProgCost {
                program: name.clone(),
                runs_per_unit: runs as f64 / units,
                ns_per_unit: ns as f64 / units,
            })
        })
        .collect()
}
