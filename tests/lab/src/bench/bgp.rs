//! Route convergence by BGP: a cluster of real nodes (agent + BIRD each) in a full
//! iBGP mesh, or peering with the fabric router (FRR, a top-of-rack); one more node
//! joins: how long until every node routes its pod CIDR.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde::Serialize;

use netpath::{net::Ipv4Net, spec::Backend};

use crate::lab::{bgp_spec, generated_spec, Lab, LabConfig};

#[derive(Debug, Clone, Serialize)]
pub struct BgpConvergence {
    /// BGP speakers once the node joined (the router not counted).
    pub speakers: usize,
    /// "mesh" or "router".
    pub topology: &'static str,
    /// From the spec naming the new node (every agent reconfigures its BIRD) to
    /// every node routing its pod CIDR (ROUTES), its agent start included.
    pub join_to_routed_ms: f64,
    /// From the new node's agent being ready to every node routing it.
    pub ready_to_routed_ms: f64,
    /// The whole mesh converged from cold (lab up to every node routing every node).
    pub cold_ms: f64,
}

pub fn measure(speakers: usize, router: bool) -> Result<BgpConvergence> {
    if !(3..=200).contains(&speakers) {
        bail!("speakers must be 3-200, got {speakers}");
    }
    let nodes = speakers - 1;
    let spec = bgp_spec(&generated_spec(nodes, Backend::Auto)?, router)?;
    let cfg = LabConfig::with_spec(spec, 0)?;
    let cold = Instant::now();
    let mut lab = Lab::up(&cfg)?;
    let cold_ms = cold.elapsed().as_secs_f64() * 1e3;
    let n = speakers as u8;
    // The address and CIDR generated_spec would give the next node.
    let cidr = Ipv4Net::new(Ipv4Addr::new(10, 244, n, 0), 24);
    let underlay = Ipv4Net::new(Ipv4Addr::new(192, 168, 56, 10 + n), 24);
    let name = format!("node{n}");
    // The router of the new node's subnet serves it as it is (peers select by subnet).
    let t0 = Instant::now();
    let i = lab.add_spec_node(&name, underlay, cidr, 0, &cfg)?;
    let ready = t0.elapsed();
    let deadline = Duration::from_secs(60);
    while !(0..i).all(|k| routes(&lab, k, cidr)) {
        if t0.elapsed() > deadline {
            bail!(
                "{speakers} speakers: the new node was not routed everywhere within {deadline:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let routed = t0.elapsed();
    Ok(BgpConvergence {
        speakers,
        topology: if router { "router" } else { "mesh" },
        join_to_routed_ms: routed.as_secs_f64() * 1e3,
        ready_to_routed_ms: (routed - ready).as_secs_f64() * 1e3,
        cold_ms,
    })
}

fn routes(lab: &Lab, node: usize, cidr: Ipv4Net) -> bool {
    lab.nodes[node]
        .pinned()
        .and_then(|p| p.routes())
        .is_ok_and(|r| {
            r.iter()
                .any(|(a, p, _)| *a == cidr.addr && *p == cidr.prefix)
        })
}
