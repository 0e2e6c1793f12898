//! What a lab is built from (the spec, pods per node, node kinds, the agents' store,
//! the fabric), generated specs, and where the `netpath` binary the agents run is.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use netpath::{
    net::Ipv4Net,
    spec::{Backend, ClusterSpec, SpecDraft, DEFAULT_SPEC},
};

use super::{bgp_router, Fabric, NodeKind};

#[derive(Debug, Clone)]
pub struct LabConfig {
    pub spec: ClusterSpec,
    pub pods_per_node: usize,
    /// The `netpath` binary the agents run.
    pub agent_bin: PathBuf,
    /// Start agents with `--keep-pins` (pods keep working while an agent is down).
    pub keep_pins: bool,
    /// How each node forwards, by index; nodes not listed run netpath.
    pub kinds: Vec<(usize, NodeKind)>,
    /// Containers per netpath node, run by a private containerd per node through
    /// the CNI plugin (0: no container runtime at all).
    pub containers: usize,
    /// The agents' store: the spec file, or a 3-member etcd cluster in the lab.
    pub store: LabStore,
    /// With etcd: seconds a node stays in the cluster after its agent stops renewing.
    pub lease_ttl: i64,
    /// How the fabric namespace joins the nodes (see `Fabric`).
    pub fabric: Fabric,
    /// How the fabric's BGP router (FRR, when the spec peers with it) is tuned.
    pub frr: bgp_router::FrrTuning,
    /// Start every netpath node's agent and wire its pods at once; without, the
    /// test starts agents in an order of its own (`spawn_agent`, `attach_pods`).
    pub start_agents: bool,
    /// More flags for one node's agent, by node index (`--wireguard user-space`).
    pub agent_args: Vec<(usize, Vec<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabStore {
    #[default]
    File,
    /// etcd in its own namespace on the underlay; `tls`: client certificates
    /// required (etcd's --client-cert-auth).
    Etcd { tls: bool },
    /// No store: the agents gossip, each given the first node's address; `key`:
    /// with a cluster key.
    Gossip { key: bool },
}

impl LabConfig {
    /// The embedded default spec with `pods` pods per node.
    pub fn default_spec(pods: usize) -> Result<Self> {
        Self::with_spec(ClusterSpec::parse(DEFAULT_SPEC)?, pods)
    }

    /// A generated spec: `nodes` nodes on 192.168.56.0/24, except that from three
    /// nodes on the last one sits behind the router on 192.168.57.0/24 (not with the
    /// direct backend, which needs one subnet).
    pub fn new(nodes: usize, pods: usize) -> Result<Self> {
        Self::with_spec(generated_spec(nodes, Backend::Auto)?, pods)
    }

    pub fn with_spec(spec: ClusterSpec, pods: usize) -> Result<Self> {
        Ok(Self {
            spec,
            pods_per_node: pods,
            agent_bin: agent_binary()?,
            keep_pins: false,
            kinds: Vec::new(),
            containers: 0,
            store: LabStore::File,
            lease_ttl: 20,
            fabric: Fabric::Bridge,
            frr: bgp_router::FrrTuning::default(),
            start_agents: true,
            agent_args: Vec::new(),
        })
    }
}

pub fn generated_spec(nodes: usize, backend: Backend) -> Result<ClusterSpec> {
    if nodes == 0 || nodes > 200 {
        bail!("nodes must be 1-200, got {nodes}");
    }
    let mut d = SpecDraft::new(Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16));
    d.settings.backend = backend;
    for n in 1..=nodes {
        let routed = nodes >= 3 && n == nodes && backend != Backend::Direct;
        let subnet = if routed { 57 } else { 56 };
        d = d.node(
            &format!("node{n}"),
            Ipv4Net::new(Ipv4Addr::new(192, 168, subnet, 10 + n as u8), 24),
            Ipv4Net::new(Ipv4Addr::new(10, 244, n as u8, 0), 24),
        );
    }
    Ok(d.validate()?)
}

/// Finds the `netpath` binary: `$NETPATH_BIN`, this process if it is netpath, or the
/// one cargo built next to the running test binary.
pub fn agent_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NETPATH_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("locate current executable")?;
    if me.file_name().is_some_and(|n| n == "netpath") {
        return Ok(me);
    }
    // target/<profile>/deps/<test> -> target/<profile>/netpath
    let candidate = me
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("netpath"))
        .filter(|p| p.exists());
    candidate.ok_or_else(|| {
        anyhow!("netpath binary not found: set NETPATH_BIN or run through `cargo xtask test`")
    })
}
