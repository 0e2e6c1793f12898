//! The agent's policy step: the spec's records and this node's pods (its address
//! book) in, the policy maps out. A change that does not compile keeps what the
//! programs hold: policy fails closed, never open.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    time::SystemTime,
};

use anyhow::{Context, Result};
use netpath_common::NetAddr;

use crate::{
    datapath::Pinned,
    ipam,
    policy::{self, LocalPod, PolicyMaps},
    spec::ClusterSpec,
};

/// What a compile gave the node.
pub(super) struct Judged {
    pub maps: PolicyMaps,
    pub rev: u32,
    /// Each local pod a policy selects, by address -> those policies
    /// ("namespace/name"): what `netpath status` shows.
    pub selected_by: BTreeMap<String, Vec<String>>,
}

/// This node's pods as its address book names them: the CNI plugin's
/// `K8S_POD_NAMESPACE`/`K8S_POD_NAME`, else namespace `default` and the container id.
pub(super) fn local_pods(state_dir: &Path) -> Result<Vec<LocalPod>> {
    let book = ipam::Store::read(state_dir)
        .with_context(|| format!("read the address book in {}", state_dir.display()))?;
    Ok(book
        .allocations
        .iter()
        .map(|(ip, a)| LocalPod {
            ip: (*ip).into(),
            namespace: a.pod_namespace.clone().unwrap_or_else(|| "default".into()),
            name: a
                .pod_name
                .clone()
                .unwrap_or_else(|| a.id.container_id.clone()),
        })
        .collect())
}

pub(super) fn compile(spec: &ClusterSpec, local: &[LocalPod]) -> Result<Judged> {
    let c = policy::compile(&policy::policy_input_from(spec, local))?;
    Ok(Judged {
        maps: PolicyMaps {
            endpoints: c.endpoints,
            peers: c.peers,
            ports: c.ports,
            known: local
                .iter()
                .map(|p| policy::IpNet::host(p.ip).net_addr())
                .collect(),
        },
        rev: c.rev,
        selected_by: c
            .selected_by
            .into_iter()
            .map(|(a, by)| (address_text(&a), by))
            .collect(),
    })
}

/// An address of either family as `ip` prints it.
fn address_text(a: &NetAddr) -> String {
    match a.as_v4() {
        Some(v4) => Ipv4Addr::from(v4).to_string(),
        None => Ipv6Addr::from(a.addr).to_string(),
    }
}

/// What the programs hold now, kept as it is (every entry known: nothing removed).
pub(super) fn kept(pinned: &Pinned) -> Result<(PolicyMaps, u32)> {
    let mut maps = pinned.policy_maps();
    maps.known = maps.endpoints.keys().copied().collect();
    Ok((maps, pinned.settings()?.policy_rev))
}

/// The address book's modification time and size: a change means a pod came or went.
pub(super) fn book_mark(state_dir: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(state_dir.join(ipam::BOOK)).ok()?;
    Some((m.modified().ok()?, m.len()))
}
