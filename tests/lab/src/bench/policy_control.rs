//! How fast policy reaches the programs: single policies written to the spec file
//! with 1 000 in force, timed until every agent applied them; then the server's
//! agent started cold (no pinned state) on 10 000, timed until its pod's policy is
//! in the maps, with its memory.
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{
    policy::{apply, check_isolated, lab_records, netpath_lab, policies, rule, server_rev},
    tools,
};
use crate::lab::Lab;

/// Policies in place while single ones are written, and writes timed.
const IN_PLACE: usize = 1_000;
const WRITES: usize = 50;
const COLD: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct PolicyControl {
    pub in_place: usize,
    /// The server's agent's resident memory with them.
    pub in_place_rss_mib: f64,
    /// One policy written to the spec -> applied by every agent, over the writes.
    pub enforce_ms: Vec<f64>,
    pub cold_policies: usize,
    /// The server's agent started without pinned state -> its pod's policy in the maps.
    pub cold_enforced_s: f64,
    /// Resident 5 s after, and at most.
    pub cold_rss_mib: f64,
    pub cold_peak_mib: f64,
}

/// Single policies written with `IN_PLACE` in force, timed to every agent having
/// applied them; then the server's agent started cold on `COLD` policies.
pub fn measure() -> Result<PolicyControl> {
    let (mut lab, cfg) = netpath_lab()?;
    let recs = lab_records(&lab, IN_PLACE);
    apply(&lab, &recs, policies(IN_PLACE), None)?;
    let mut enforce_ms = Vec::new();
    for w in 0..WRITES {
        let mut ps = policies(IN_PLACE);
        let i = w * 7 % IN_PLACE;
        ps[i] = rule(i, 9000 + w as u16);
        let t = apply(&lab, &recs, ps, Some(server_rev(&lab)))?;
        enforce_ms.push(t.as_secs_f64() * 1e3);
    }
    let in_place_rss_mib = tools::rss_kib(lab.agent_pid(1).context("the agent's pid")?)? / 1024.0;
    let server = lab.nodes[1].pods[0].ip;
    apply(&lab, &lab_records(&lab, COLD), policies(COLD), None)?;
    // Stopped, it unpins everything: the start finds no state to keep.
    lab.stop_agent(1);
    let started = Instant::now();
    lab.spawn_agent(1, &cfg)?;
    let pid = lab.agent_pid(1).context("the agent's pid")?;
    let selected = |l: &Lab| {
        l.nodes[1].pinned().is_ok_and(|p| {
            p.settings().is_ok_and(|s| s.policy_rev != 0)
                && p.policy_endpoint(netpath::policy::IpNet::host(server.into()).net_addr())
                    .is_some()
        })
    };
    let mut peak = 0.0f64;
    while !selected(&lab) {
        peak = peak.max(tools::status_kib(pid, "VmHWM:").unwrap_or(0.0));
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "{COLD} policies not enforced in 300 s:\n{}",
                lab.agent_log(1)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let cold_enforced_s = started.elapsed().as_secs_f64();
    check_isolated(lab.nodes[0].ns.path(), server)?;
    // What it keeps, once the start's transient allocations could have gone.
    std::thread::sleep(Duration::from_secs(5));
    let rss = tools::rss_kib(pid)?;
    peak = peak.max(tools::status_kib(pid, "VmHWM:")?);
    Ok(PolicyControl {
        in_place: IN_PLACE,
        in_place_rss_mib,
        enforce_ms,
        cold_policies: COLD,
        cold_enforced_s,
        cold_rss_mib: rss / 1024.0,
        cold_peak_mib: peak / 1024.0,
    })
}
