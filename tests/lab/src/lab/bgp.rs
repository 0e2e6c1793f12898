//! Routes by BGP in the lab: specs whose nodes peer with the fabric router or mesh
//! among themselves, FRR on the fabric when they peer with it, and the wait until
//! every node has learned every other node's pod CIDR.
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use netpath::{
    net::Ipv4Net,
    spec::{BgpPeer, ClusterSpec, Routing},
};

use super::{bgp_router, router_ip, Lab, NodeKind};

/// Sessions come up in about a second; a slow VM needs more.
pub(super) const BGP_CONVERGED_WITHIN: Duration = Duration::from_secs(30);

/// `spec` with routes by BGP: with `router`, every node peers with the fabric
/// router on its own subnet (a top-of-rack, FRR) and the mesh is off; without, the
/// nodes' full iBGP mesh.
pub fn bgp_spec(spec: &ClusterSpec, router: bool) -> Result<ClusterSpec> {
    let subnets: BTreeSet<Ipv4Net> = spec.nodes.iter().map(|n| n.underlay.subnet()).collect();
    let peers: Vec<BgpPeer> = if router {
        subnets
            .iter()
            .map(|net| BgpPeer {
                address: router_ip(net),
                asn: bgp_router::ROUTER_ASN,
                // By subnet, as a rack's router is: nodes joining later peer too.
                nodes: Some(vec![net.subnet().to_string()]),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(spec.with_settings(|s| {
        s.routing = Routing::Bgp;
        s.bgp_mesh = !router;
        s.bgp_peers = peers;
    })?)
}

impl Lab {
    /// FRR on the fabric when the spec names the fabric's own addresses as BGP
    /// peers: eBGP with every node those peers serve.
    pub(super) fn start_bgp_router(
        &mut self,
        subnets: &[Ipv4Net],
        tuning: bgp_router::FrrTuning,
    ) -> Result<()> {
        let set = &self.spec.settings;
        let ours: Vec<&BgpPeer> = set
            .bgp_peers
            .iter()
            .filter(|p| subnets.iter().any(|s| router_ip(s) == p.address))
            .collect();
        if set.routing != Routing::Bgp || ours.is_empty() {
            return Ok(());
        }
        let served: Vec<Ipv4Net> = subnets
            .iter()
            .filter(|s| ours.iter().any(|p| router_ip(s) == p.address))
            .copied()
            .collect();
        let router = bgp_router::FrrRouter::start(
            self.fabric_ns(),
            &self.workdir,
            router_ip(&subnets[0]),
            set.asn,
            &served,
            tuning,
        )?;
        self.bgp_router = Some(router);
        Ok(())
    }

    /// Waits until every netpath node routes every other node's pod CIDR by what
    /// BGP taught it (as its agent publishes).
    pub fn wait_bgp_converged(&self, within: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let missing = self.bgp_missing();
            if missing.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                let more = missing.len().saturating_sub(3);
                bail!(
                    "BGP did not converge within {within:?}: {}{}",
                    missing[..missing.len().min(3)].join("; "),
                    if more > 0 {
                        format!(" (and {more} nodes more)")
                    } else {
                        String::new()
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// For each netpath node with a running agent: the pod CIDRs it has not learned.
    fn bgp_missing(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.kind != NodeKind::Netpath || self.agents[i].is_none() {
                continue;
            }
            let state = netpath::state::AgentState::read(&node.state_dir())
                .ok()
                .flatten();
            let learned = state
                .and_then(|s| s.bgp)
                .map(|b| b.routes)
                .unwrap_or_default();
            let lacking: Vec<String> = self
                .spec
                .nodes
                .iter()
                .filter(|n| n.name != node.spec.name && !learned.contains_key(&n.pod_cidr))
                .map(|n| n.pod_cidr.to_string())
                .collect();
            if !lacking.is_empty() {
                out.push(format!("{} lacks {}", node.name, lacking.join(", ")));
            }
        }
        out
    }
}
