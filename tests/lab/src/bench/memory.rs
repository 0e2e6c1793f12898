//! Memory as the cluster grows: one node's agent is given a spec with `peers` other
//! nodes (one pod CIDR route, one tunnel peer and one kernel route each) and measured
//! once it holds them all.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use netpath::{
    net::Ipv4Net,
    netlink::PROTO_AGENT,
    spec::{Backend, Decap},
    state::AgentState,
};
use serde::Serialize;

use super::tools;
use crate::{lab::NodeKind, nl::Nl};

#[derive(Debug, Clone, Serialize)]
pub struct AgentMemory {
    pub peers: usize,
    /// The agent's resident memory holding them.
    pub rss_kib: f64,
    /// The highest reading meanwhile.
    pub rss_max_kib: f64,
    /// Kernel memory of the node's maps (bpftool's bytes_memlock, summed).
    pub map_kib: f64,
    /// From writing the spec to every kernel route in place.
    pub converge_ms: f64,
}

/// The `i`-th peer: a /26 from 10.0.0.0/8 and an address in 172.16.0.0/12, reached
/// through the lab's fabric router.
fn peer(i: u32) -> (Ipv4Net, Ipv4Net) {
    let underlay = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 2)) + i);
    let pods = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i * 64);
    (Ipv4Net::new(underlay, 12), Ipv4Net::new(pods, 26))
}

pub fn agent_memory(peers: usize) -> Result<AgentMemory> {
    let lab = super::lab(1, 1, Backend::Vxlan, NodeKind::Netpath, Decap::Tc)?;
    let node = &lab.nodes[0];
    let mut d = lab.spec.to_draft();
    d.settings.cluster_cidr = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8);
    for i in 0..peers as u32 {
        let (underlay, pods) = peer(i);
        d = d.node(&format!("p{i}"), underlay, pods);
    }
    let spec = d.validate()?;
    let state_dir = node.state_dir();
    let reconciles =
        || -> Result<u64> { Ok(AgentState::read(&state_dir)?.map_or(0, |s| s.reconciles)) };
    let before = reconciles()?;
    let started = Instant::now();
    lab.write_spec(&spec)?;
    let deadline = started + Duration::from_secs(180);
    loop {
        let owned = node.ns.run(|| {
            Ok(Nl::new()?
                .routes()?
                .iter()
                .filter(|r| r.protocol == PROTO_AGENT)
                .count())
        })?;
        if owned == peers {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "agent holds {owned} of {peers} routes after 180 s:\n{}",
                lab.agent_log(0)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let converge_ms = started.elapsed().as_secs_f64() * 1e3;
    // The reconcile that installed them has finished (and the agent handed the memory it
    // freed back) once it is published.
    while reconciles()? <= before {
        if Instant::now() > deadline {
            bail!("agent never published the reconcile:\n{}", lab.agent_log(0));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The agent hands freed memory back right after publishing the pass, and its
    // resync passes (every 10 s) allocate for a moment: what it holds is the median
    // of the readings (3 s of them, 25 s with 100 000 peers), beside their highest.
    let pid = lab.agent_pid(0).context("the node has no agent")?;
    let mut readings = Vec::new();
    // A big table is read across two resync passes: what it holds between them
    // varies with what each pass left behind.
    let samples = if peers >= 100_000 { 250 } else { 30 };
    for _ in 0..samples {
        readings.push(tools::rss_kib(pid)?);
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_max_kib = readings.iter().copied().fold(0.0, f64::max);
    let rss = super::stats(readings).0;
    Ok(AgentMemory {
        peers,
        rss_kib: rss,
        rss_max_kib,
        map_kib: tools::map_memory_kib(&node.pin_dir)?,
        converge_ms,
    })
}
