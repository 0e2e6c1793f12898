//! Bringing a lab up (the fabric and its roles, the nodes, their agents, pods and
//! containers) and tearing it down in the reverse order on drop, also on panic.
use std::{collections::BTreeSet, net::Ipv4Addr, os::fd::AsRawFd, path::Path};

use anyhow::{bail, Result};
use netpath::{
    datapath,
    net::Ipv4Net,
    spec::{ClusterSpec, Encryption, NodeSpec, Routing},
};

use super::{
    baselines::{
        setup_host_gw_node, setup_kernel_ipip_node, setup_kernel_vxlan_node, setup_routed_node,
    },
    bgp::BGP_CONVERGED_WITHIN,
    pods::{attach_pod, bridge_pod, routed_pod},
    prefix::reserve_prefix,
    router_ip, write_sysctl, Fabric, Lab, LabConfig, LabStore, Node, NodeKind, UNDERLAY_MTU,
};
use crate::{netns::NetNs, nl::Nl};

impl Lab {
    /// Builds the topology, starts one agent per netpath node and wires every pod in.
    pub fn up(cfg: &LabConfig) -> Result<Self> {
        if cfg.pods_per_node > 250 {
            bail!(
                "pods per node must be at most 250, got {}",
                cfg.pods_per_node
            );
        }
        let (prefix, workdir) = reserve_prefix()?;
        let spec = with_wireguard_keys(&cfg.spec, &prefix)?;
        let spec_file = workdir.join("cluster.toml");
        std::fs::write(&spec_file, spec.to_toml())?;
        let mut lab = Lab {
            prefix: prefix.clone(),
            spec,
            nodes: Vec::new(),
            agents: Vec::new(),
            fabric: None,
            fabric_kind: cfg.fabric,
            outside: None,
            workdir,
            spec_file,
            containers: Vec::new(),
            runtimes: Vec::new(),
            host_cni: None,
            image: None,
            etcd: None,
            gossip: None,
            bgp_router: None,
        };
        let subnets: BTreeSet<Ipv4Net> =
            cfg.spec.nodes.iter().map(|n| n.underlay.subnet()).collect();
        let subnets: Vec<Ipv4Net> = subnets.into_iter().collect();
        if cfg.fabric == Fabric::Veth && matches!(cfg.store, LabStore::Etcd { .. }) {
            bail!("the veth fabric carries no etcd members: use the bridge fabric with etcd");
        }
        let fabric = NetNs::create(&format!("{prefix}-fabric"))?;
        let hosts: Vec<usize> = subnets
            .iter()
            .map(|s| cfg.spec.nodes.iter().filter(|n| s.contains(n.ip())).count())
            .collect();
        fabric.run(|| cfg.fabric.build(&subnets, &hosts))?;
        lab.fabric = Some(fabric);
        lab.start_bgp_router(&subnets, cfg.frr)?;
        lab.outside = Some(lab.add_outside()?);
        match cfg.store {
            LabStore::Etcd { tls } => lab.start_etcd(&subnets[0], tls, cfg)?,
            LabStore::Gossip { key } => lab.gossip = Some(lab.gossip_args(key)?),
            LabStore::File => {}
        }
        for (i, spec) in cfg.spec.nodes.iter().enumerate() {
            let kind = cfg
                .kinds
                .iter()
                .find(|(n, _)| *n == i)
                .map_or(NodeKind::Netpath, |(_, k)| *k);
            let subnet = subnets
                .iter()
                .position(|s| s.contains(spec.ip()))
                .expect("every node's subnet has a bridge");
            let node = lab.add_node(spec, kind, subnet, &subnets[subnet], cfg)?;
            lab.nodes.push(node);
        }
        lab.agents.resize_with(lab.nodes.len(), || None);
        if !cfg.start_agents {
            return Ok(lab);
        }
        for i in 0..lab.nodes.len() {
            if lab.nodes[i].kind == NodeKind::Netpath {
                lab.start_agent(i, cfg)?;
            }
        }
        if cfg.spec.settings.routing == Routing::Bgp {
            lab.wait_bgp_converged(BGP_CONVERGED_WITHIN)?;
        }
        let mtu = cfg.spec.pod_mtu(UNDERLAY_MTU);
        for node in lab.nodes.iter_mut().filter(|n| n.kind == NodeKind::Netpath) {
            for p in 1..=cfg.pods_per_node {
                let pod = attach_pod(node, p, mtu, None)?;
                node.pods.push(pod);
            }
        }
        for k in 1..=cfg.containers {
            for i in 0..lab.nodes.len() {
                if lab.nodes[i].kind == NodeKind::Netpath {
                    lab.run_container(i, &format!("c{k}"), cfg)?;
                }
            }
        }
        Ok(lab)
    }

    pub(super) fn add_node(
        &self,
        spec: &NodeSpec,
        kind: NodeKind,
        subnet_index: usize,
        subnet: &Ipv4Net,
        cfg: &LabConfig,
    ) -> Result<Node> {
        if spec.ip() == router_ip(subnet) {
            bail!(
                "node {} uses {}, the lab router's address",
                spec.name,
                spec.ip()
            );
        }
        let name = format!("{}-{}", self.prefix, spec.name);
        let ns = NetNs::create(&name)?;
        let fabric = self.fabric.as_ref().expect("fabric exists");
        let fabric_fd = fabric.file()?;
        let port = format!("p-{}", spec.name);
        let port = &port[..port.len().min(15)];
        ns.run(|| {
            let nl = Nl::new()?;
            nl.add_veth("eth0", port)?;
            nl.move_to_netns(nl.index(port)?, fabric_fd.as_raw_fd())?;
            let eth0 = nl.index("eth0")?;
            nl.add_address(eth0, spec.ip(), spec.underlay.prefix)?;
            nl.set_up(eth0)?;
            nl.replace_route(Ipv4Addr::UNSPECIFIED, 0, eth0, Some(router_ip(subnet)))?;
            write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
        })?;
        fabric.run(|| self.fabric_kind.attach(port, subnet_index, subnet))?;
        let mut node = Node {
            pin_dir: datapath::node_dir(&cfg.spec.bpffs_root, &name),
            name,
            spec: spec.clone(),
            kind,
            pods: Vec::new(),
            ns,
        };
        let mtu = match kind {
            // Their pods are wired through the endpoint module once the agent runs.
            NodeKind::Netpath => return Ok(node),
            NodeKind::HostGw => {
                setup_host_gw_node(&node, &cfg.spec)?;
                UNDERLAY_MTU
            }
            NodeKind::KernelVxlan => {
                setup_kernel_vxlan_node(&node, &cfg.spec)?;
                cfg.spec.pod_mtu(UNDERLAY_MTU)
            }
            NodeKind::KernelIpip => {
                setup_kernel_ipip_node(&node, &cfg.spec)?;
                cfg.spec.pod_mtu(UNDERLAY_MTU)
            }
            NodeKind::RoutedVeth => {
                setup_routed_node(&node, &cfg.spec)?;
                UNDERLAY_MTU
            }
        };
        for p in 1..=cfg.pods_per_node {
            let ip = spec.pod_cidr.nth(1 + p as u32);
            let pod = match kind {
                NodeKind::RoutedVeth => routed_pod(&node, p, ip, mtu)?,
                _ => bridge_pod(&node, p, ip, mtu)?,
            };
            node.pods.push(pod);
        }
        Ok(node)
    }

    /// The fabric namespace: the underlay switch and router, a host on every subnet
    /// that is not a node.
    pub fn fabric_ns(&self) -> &Path {
        self.fabric
            .as_ref()
            .expect("fabric exists while the lab does")
            .path()
    }
}

/// With encryption on, each node's public key in its `[[nodes]]` entry as a user
/// puts it there: made on the node by `netpath wireguard pubkey`.
fn with_wireguard_keys(spec: &ClusterSpec, prefix: &str) -> Result<ClusterSpec> {
    if spec.settings.encryption != Encryption::Wireguard {
        return Ok(spec.clone());
    }
    let mut spec = spec.clone();
    for n in spec.nodes.iter_mut().filter(|n| n.wireguard_key.is_none()) {
        let state_dir = netpath::state::default_dir(&format!("{prefix}-{}", n.name));
        let out = std::process::Command::new(super::config::agent_binary()?)
            .args(["wireguard", "pubkey", "--node", &n.name, "--state-dir"])
            .arg(&state_dir)
            .output()?;
        if !out.status.success() {
            bail!(
                "netpath wireguard pubkey --node {}: {}",
                n.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        n.wireguard_key = Some(String::from_utf8_lossy(&out.stdout).trim().parse()?);
    }
    Ok(spec)
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Containers first (ctr's CNI DEL needs the nodes), then their runtimes and
        // the host CNI paths; then agents, which detach and unpin while the
        // namespaces still exist.
        self.containers.clear();
        self.runtimes.clear();
        self.host_cni = None;
        for a in self.agents.iter_mut().flatten() {
            a.stop();
        }
        self.etcd = None;
        self.gossip = None;
        for node in &self.nodes {
            // A BIRD that outlived its agent (--keep-pins, or the agent killed).
            netpath::bgp::stop_daemon(&node.state_dir());
            netpath::wireguard::daemon::stop(
                &netpath::wireguard::config::Paths::under(&node.state_dir()),
                &node.state_dir(),
            );
            if let Err(e) = datapath::remove_pins(&node.pin_dir) {
                tracing::warn!("{e:#}");
            }
            // The agent's state and the node's address book.
            let _ = std::fs::remove_dir_all(node.state_dir());
        }
        // Pods, then nodes, then the fabric: namespaces go with their guards.
        self.nodes.clear();
        self.outside = None;
        self.bgp_router = None;
        self.fabric = None;
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}
