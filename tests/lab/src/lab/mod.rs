//! Lab clusters on one host: nodes and pods are network namespaces joined by veth
//! pairs; a fabric namespace switches each underlay subnet and routes between them.
//! Each netpath node runs a real `netpath agent` process; a node may instead be set up
//! the way flannel's vxlan backend sets one up (bridge + kernel vxlan device), as the
//! interoperability peer. Pods on netpath nodes are wired by the product's `endpoint`
//! module, the code path of the CNI plugin. Shared by `netpath-lab run` (`cargo xtask
//! run`), the integration tests and the bench. Everything carries a per-run prefix and
//! is torn down on drop, also on panic.
mod agents;
mod baselines;
pub mod bgp_router;
mod containers;
pub mod etcd;
mod fabric;
mod invariants;
mod membership;
mod outside;
mod prefix;
mod report;
mod services;

pub use baselines::VethPair;
pub use containers::{busybox_image, BusyboxImage, Container, Containerd, HostCniInstall, Podman};
pub use fabric::Fabric;
pub use invariants::Invariant;
pub use membership::{GOSSIP_GONE_WITHIN, PROPAGATION_WITHIN};
pub use outside::{Outside, OUTSIDE_IP, OUTSIDE_ROUTER};
pub use report::print_report;
pub use services::{ServiceDemo, DEMO_NODE_PORT, DEMO_VIP};
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

use netpath::{
    datapath, ipam,
    net::Ipv4Net,
    spec::{Backend, BgpPeer, ClusterSpec, NodeSpec, Routing, SpecDraft, DEFAULT_SPEC},
};

use crate::{
    check::{self, CheckResult, Host, Proto},
    netns::NetNs,
    nl::Nl,
    process::Spawned,
};
use agents::AgentProcess;
use baselines::{setup_host_gw_node, setup_kernel_ipip_node, setup_kernel_vxlan_node};
use invariants::{no_bridge, no_firewall_rules};
pub use prefix::reserve_prefix;

pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const UNDERLAY_MTU: u32 = 1500;
/// How long an agent may take to load, verify and attach its programs: seconds on
/// hardware, far more in an emulated VM (no KVM) running tests in parallel.
const AGENT_READY_WITHIN: Duration = Duration::from_secs(60);
/// Sessions come up in about a second; a slow VM needs more.
const BGP_CONVERGED_WITHIN: Duration = Duration::from_secs(30);

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
                nodes: Some(
                    spec.nodes
                        .iter()
                        .filter(|n| net.contains(n.ip()))
                        .map(|n| n.name.clone())
                        .collect(),
                ),
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

pub struct Pod {
    pub name: String,
    pub ns: NetNs,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// Host-side veth in the node's namespace.
    pub host_ifname: String,
}

/// How a lab node forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Netpath,
    /// The classic kernel path: pods on bridge `cni0`, kernel routes to the other nodes'
    /// pod CIDRs via their underlay addresses (the seed's step 3, flannel host-gw).
    HostGw,
    /// flannel's vxlan backend, kernel only: bridge `cni0`, vxlan device `flannel.1`.
    KernelVxlan,
    /// Calico's and flannel's ipip overlay, kernel only: bridge `cni0`, an `ipip` device
    /// and `<pod cidr> via <node> dev <it> onlink` per other node.
    KernelIpip,
}

impl NodeKind {
    /// Pods hang off a Linux bridge with a gateway address in the pod CIDR.
    pub fn bridged(self) -> bool {
        matches!(self, Self::HostGw | Self::KernelVxlan | Self::KernelIpip)
    }
}

pub struct Node {
    pub name: String,
    pub spec: NodeSpec,
    pub kind: NodeKind,
    pub pin_dir: PathBuf,
    pub pods: Vec<Pod>,
    pub ns: NetNs,
}

impl Node {
    pub fn ip(&self) -> Ipv4Addr {
        self.spec.ip()
    }

    pub fn host(&self) -> Host<'_> {
        Host {
            name: &self.name,
            netns: self.ns.path(),
            ip: self.ip(),
        }
    }

    /// The node as a sender to `dst`, with the source address the kernel picks: the
    /// underlay address on netpath nodes; on a flannel-style node its bridge address
    /// toward its own pods and its vxlan device's address toward other pods.
    pub fn host_toward(&self, dst: Ipv4Addr, cluster: &Ipv4Net) -> Host<'_> {
        let cidr = self.spec.pod_cidr;
        let ip = match self.kind {
            k if k.bridged() && cidr.contains(dst) => cidr.nth(1),
            NodeKind::KernelVxlan | NodeKind::KernelIpip if cluster.contains(dst) => cidr.network(),
            _ => self.ip(),
        };
        Host {
            name: &self.name,
            netns: self.ns.path(),
            ip,
        }
    }

    /// Where this node's agent publishes its state (`netpath status` finds it there).
    pub fn state_dir(&self) -> PathBuf {
        netpath::state::default_dir(&self.name)
    }

    pub fn pinned(&self) -> Result<datapath::Pinned> {
        datapath::Pinned::open(&self.pin_dir)
    }
}

impl Pod {
    pub fn host(&self) -> Host<'_> {
        Host {
            name: &self.name,
            netns: self.ns.path(),
            ip: self.ip,
        }
    }
}

pub struct Lab {
    pub prefix: String,
    pub spec: ClusterSpec,
    pub nodes: Vec<Node>,
    /// One slot per node; empty while that node's agent is stopped (or it has none).
    agents: Vec<Option<AgentProcess>>,
    fabric: Option<NetNs>,
    fabric_kind: Fabric,
    /// A host behind the fabric router, outside the cluster.
    outside: Option<Outside>,
    workdir: PathBuf,
    spec_file: PathBuf,
    /// Containers started through `run_container`, in start order.
    pub containers: Vec<Container>,
    /// One slot per node: its containerd, once containers are asked for.
    runtimes: Vec<Option<Containerd>>,
    host_cni: Option<HostCniInstall>,
    image: Option<BusyboxImage>,
    /// The etcd cluster with `LabStore::Etcd`.
    pub etcd: Option<etcd::EtcdCluster>,
    /// The agents' gossip flags with `LabStore::Gossip`.
    pub gossip: Option<Vec<String>>,
    /// FRR on the fabric, when the spec's nodes peer with the fabric router by BGP.
    pub bgp_router: Option<bgp_router::FrrRouter>,
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("write {value} to {path}"))
}

/// The fabric's address on an underlay subnet: the first host, the nodes' gateway.
fn router_ip(subnet: &Ipv4Net) -> Ipv4Addr {
    subnet.nth(1)
}

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
        let spec_file = workdir.join("cluster.toml");
        std::fs::write(&spec_file, cfg.spec.to_toml())?;
        let mut lab = Lab {
            prefix: prefix.clone(),
            spec: cfg.spec.clone(),
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
                let pod = attach_pod(node, p, mtu)?;
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

    /// FRR on the fabric when the spec names the fabric's own addresses as BGP
    /// peers: eBGP with every node those peers serve.
    fn start_bgp_router(
        &mut self,
        subnets: &[Ipv4Net],
        tuning: bgp_router::FrrTuning,
    ) -> Result<()> {
        let set = &self.spec.settings;
        let ours: Vec<&netpath::spec::BgpPeer> = set
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

    /// Runs a busybox container on node `i` through its containerd and the CNI
    /// plugin (`ip netns exec NODE ctr run --rm --cni …`); returns its index in
    /// `containers`. The first call installs the plugin and starts containerd.
    pub fn run_container(&mut self, i: usize, name: &str, cfg: &LabConfig) -> Result<usize> {
        if self.host_cni.is_none() {
            self.host_cni = Some(HostCniInstall::new(&cfg.agent_bin)?);
        }
        let image = match &self.image {
            Some(i) => i.clone(),
            None => self
                .image
                .insert(busybox_image(&self.workdir.join("image"))?)
                .clone(),
        };
        self.runtimes.resize_with(self.nodes.len(), || None);
        let node = &self.nodes[i];
        if self.runtimes[i].is_none() {
            let dir = self.workdir.join(format!("containerd-{}", node.spec.name));
            self.runtimes[i] = Some(Containerd::start(&dir, i, node.ns.name(), &image)?);
        }
        let id = format!("{}-{}", node.name, name);
        let runtime = self.runtimes[i].as_ref().expect("started above");
        let c = runtime.run_container(&id, &["sleep", "1000000"])?;
        self.containers.push(c);
        Ok(self.containers.len() - 1)
    }

    /// The lab's busybox image, built on first use.
    pub fn image(&mut self) -> Result<BusyboxImage> {
        if let Some(i) = &self.image {
            return Ok(i.clone());
        }
        let built = busybox_image(&self.workdir.join("image"))?;
        Ok(self.image.insert(built).clone())
    }

    /// A private podman for node `i` (state under the lab's work dir).
    pub fn podman(&mut self, i: usize, cfg: &LabConfig) -> Result<Podman> {
        let image = self.image()?;
        let node = &self.nodes[i];
        let dir = self.workdir.join(format!("podman-{}", node.spec.name));
        Podman::new(&dir, &cfg.agent_bin, node.ns.path(), &image)
    }

    /// Node `i`'s containerd, once a container ran there.
    pub fn containerd(&self, i: usize) -> Option<&Containerd> {
        self.runtimes.get(i)?.as_ref()
    }

    fn add_node(
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
        };
        for p in 1..=cfg.pods_per_node {
            let ip = spec.pod_cidr.nth(1 + p as u32);
            let pod = bridge_pod(&node, p, ip, mtu)?;
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

    /// Replaces the spec file the agents watch (atomically, as an editor or a config
    /// manager would).
    pub fn write_spec_text(&self, text: &str) -> Result<()> {
        let tmp = self.workdir.join(".cluster.toml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.spec_file)?;
        Ok(())
    }

    pub fn write_spec(&self, spec: &ClusterSpec) -> Result<()> {
        self.write_spec_text(&spec.to_toml())
    }

    /// The PID of node `i`'s agent while it runs.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents.get(i)?.as_ref().map(|a| a.child.id())
    }

    /// Kills node `i`'s agent with SIGKILL: no cleanup of any kind.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut a) = self.agents.get_mut(i).and_then(Option::take) {
            let _ = a.child.0.kill();
            let _ = a.child.0.wait();
        }
    }

    /// Stops node `i`'s agent (SIGTERM; it cleans up unless started with keep_pins).
    pub fn stop_agent(&mut self, i: usize) {
        if let Some(mut a) = self.agents.get_mut(i).and_then(Option::take) {
            a.stop();
        }
    }

    /// The etcd cluster on the first underlay subnet (addresses .250-.252), with
    /// the cluster config written by `netpath cluster init`.
    fn start_etcd(&mut self, subnet: &Ipv4Net, tls: bool, cfg: &LabConfig) -> Result<()> {
        let ips = [subnet.nth(250), subnet.nth(251), subnet.nth(252)];
        let tls = if tls {
            Some(etcd::make_tls(&self.workdir.join("etcd-tls"), &ips)?)
        } else {
            None
        };
        let cluster = etcd::EtcdCluster::start(
            &format!("{}-etcd", self.prefix),
            etcd::EtcdPlace {
                fabric: self.fabric.as_ref().expect("fabric exists"),
                bridge: "ul0",
                ips,
                prefix_len: subnet.prefix,
                gateway: router_ip(subnet),
            },
            &self.workdir.join("etcd"),
            tls,
        )?;
        // The settings whole, from the spec file a spec-file user already has.
        let settings = self.workdir.join("cluster-spec.toml");
        std::fs::write(&settings, cfg.spec.to_toml())?;
        let mut args: Vec<String> = vec![
            "cluster".into(),
            "init".into(),
            "--cluster-config".into(),
            settings.display().to_string(),
        ];
        args.extend(etcd_args(&cluster));
        let out = cluster
            .ns
            .run(|| Ok(Command::new(&cfg.agent_bin).args(&args).output()?))?;
        if !out.status.success() {
            bail!(
                "netpath cluster init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.etcd = Some(cluster);
        Ok(())
    }

    /// The gossip flags every agent gets: the cluster's settings (the lab's spec's,
    /// with its nodes' subnet length), the first node's address as the one seed, and
    /// with `key` a cluster key.
    fn gossip_args(&self, key: bool) -> Result<Vec<String>> {
        let subnet_len = self.spec.nodes.first().context("no nodes")?.pod_cidr.prefix;
        let config = netpath::store::model::ClusterConfig {
            settings: self.spec.settings.clone(),
            subnet_len,
        };
        let path = self.workdir.join("gossip-cluster.toml");
        std::fs::write(&path, toml::to_string(&config)?)?;
        let seed = self.spec.nodes[0].ip();
        let mut args = vec![
            "--cluster-config".to_string(),
            path.display().to_string(),
            "--peers".into(),
            seed.to_string(),
        ];
        if key {
            let k = self.workdir.join("gossip-cluster.key");
            std::fs::write(&k, format!("netpath lab cluster key {}\n", self.prefix))?;
            args.extend(["--cluster-key".into(), k.display().to_string()]);
        }
        Ok(args)
    }

    /// `netpath node remove NAME` against the lab's etcd.
    pub fn remove_node_from_etcd(&self, name: &str, cfg: &LabConfig) -> Result<String> {
        let cluster = self.etcd.as_ref().context("the lab has no etcd")?;
        let mut args = vec!["node".to_string(), "remove".into(), name.into()];
        args.extend(etcd_args(cluster));
        let out = cluster
            .ns
            .run(|| Ok(Command::new(&cfg.agent_bin).args(&args).output()?))?;
        if !out.status.success() {
            bail!(
                "netpath node remove: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A new netpath node joining through etcd while the lab runs: its namespace on
    /// the first underlay subnet at `underlay`, its agent, `pods` pods. Returns its index.
    /// Adds a netpath node to a spec-file lab: the spec gains it (every agent follows
    /// the file), then its namespace, agent and pods come up. Returns its index.
    pub fn add_spec_node(
        &mut self,
        name: &str,
        underlay: Ipv4Net,
        pod_cidr: Ipv4Net,
        pods: usize,
        cfg: &LabConfig,
    ) -> Result<usize> {
        let spec = self
            .spec
            .to_draft()
            .node(name, underlay, pod_cidr)
            .validate()?;
        let node_spec = spec.node(name)?.clone();
        let subnets: BTreeSet<Ipv4Net> = spec.nodes.iter().map(|n| n.underlay.subnet()).collect();
        let subnet = underlay.subnet();
        let subnet_index = subnets
            .iter()
            .position(|s| *s == subnet)
            .expect("the new node's subnet is among the spec's");
        if !self
            .spec
            .nodes
            .iter()
            .any(|n| n.underlay.subnet() == subnet)
        {
            bail!("{underlay} is on none of the lab's underlay subnets");
        }
        self.write_spec(&spec)?;
        self.spec = spec;
        let node = self.add_node(&node_spec, NodeKind::Netpath, subnet_index, &subnet, cfg)?;
        self.nodes.push(node);
        self.agents.push(None);
        let i = self.nodes.len() - 1;
        self.start_agent(i, cfg)?;
        self.attach_pods(i, pods)?;
        Ok(i)
    }

    pub fn join_node(
        &mut self,
        name: &str,
        underlay: Ipv4Net,
        pods: usize,
        cfg: &LabConfig,
    ) -> Result<usize> {
        let subnet = underlay.subnet();
        // The fabric's bridges are numbered by the sorted underlay subnets.
        let known: BTreeSet<Ipv4Net> = self
            .spec
            .nodes
            .iter()
            .map(|n| n.underlay.subnet())
            .collect();
        let subnet_index = known
            .iter()
            .position(|s| *s == subnet)
            .with_context(|| format!("{underlay} is on none of the lab's underlay subnets"))?;
        let placeholder = NodeSpec {
            name: name.to_string(),
            underlay,
            pod_cidr: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 32),
            vtep_mac: netpath::spec::derived_vtep_mac(underlay.addr),
        };
        let node = self.add_node(&placeholder, NodeKind::Netpath, subnet_index, &subnet, cfg)?;
        self.nodes.push(node);
        self.agents.push(None);
        let i = self.nodes.len() - 1;
        self.start_agent(i, cfg)?;
        self.attach_pods(i, pods)?;
        Ok(i)
    }

    /// Wires `n` more pods into node `i`, whose agent runs and holds its pod CIDR.
    pub fn attach_pods(&mut self, i: usize, n: usize) -> Result<()> {
        let mtu = self.spec.pod_mtu(UNDERLAY_MTU);
        let first = self.nodes[i].pods.len() + 1;
        for p in first..first + n {
            let pod = attach_pod(&self.nodes[i], p, mtu)?;
            self.nodes[i].pods.push(pod);
        }
        Ok(())
    }

    /// Starts node `i`'s agent and waits until its pins are usable.
    pub fn start_agent(&mut self, i: usize, cfg: &LabConfig) -> Result<()> {
        self.spawn_agent(i, cfg)?;
        self.wait_agent_ready(i)
    }

    /// Starts node `i`'s agent without waiting for it to be ready.
    pub fn spawn_agent(&mut self, i: usize, cfg: &LabConfig) -> Result<()> {
        self.stop_agent(i);
        let node = &self.nodes[i];
        let log = self.agent_log_path(node);
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&cfg.agent_bin);
        cmd.arg("agent");
        match (&self.etcd, &self.gossip) {
            (Some(cluster), _) => {
                cmd.args(["--store", "etcd"])
                    .args(etcd_args(cluster))
                    .args(["--lease-ttl", &cfg.lease_ttl.to_string()]);
            }
            (None, Some(args)) => {
                cmd.args(["--store", "gossip", "--underlay"])
                    .arg(node.spec.underlay.to_string())
                    .args(args);
            }
            (None, None) => {
                cmd.arg("--config").arg(&self.spec_file);
            }
        }
        cmd.args(["--node", &node.spec.name])
            .arg("--pin-dir")
            .arg(&node.pin_dir)
            .arg("--state-dir")
            .arg(node.state_dir())
            .arg("--netns")
            .arg(node.ns.path());
        if cfg.keep_pins {
            cmd.arg("--keep-pins");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start agent {}", cfg.agent_bin.display()))?;
        prefix::record_pid(&self.workdir, child.id());
        self.agents[i] = Some(AgentProcess {
            child: Spawned::signalled(child, libc::SIGTERM, Duration::from_secs(5)),
            node: node.name.clone(),
            log,
        });
        Ok(())
    }

    /// Waits until node `i`'s agent says it is ready (and with etcd, watching).
    pub fn wait_agent_ready(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let Some(agent) = self.agents[i].as_mut() else {
            bail!("no agent started for {}", node.name);
        };
        let log = agent.log.clone();
        let deadline = Instant::now() + AGENT_READY_WITHIN;
        let state_dir = node.state_dir();
        // With etcd, ready means watching too: a change before that would reach the
        // node only on its first watch response.
        let watching = || {
            self.etcd.is_none()
                || netpath::state::AgentState::read(&state_dir)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.store_watching)
        };
        loop {
            if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("agent ready")) && watching()
            {
                break;
            }
            if let Some(status) = agent.child.0.try_wait()? {
                bail!(
                    "agent for {} exited with {status}:\n{}",
                    node.name,
                    std::fs::read_to_string(&agent.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "agent for {} not ready after {} s; its log ({}):\n{}",
                    node.name,
                    AGENT_READY_WITHIN.as_secs(),
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.etcd.is_some() || self.gossip.is_some() {
            // The pod CIDR is whatever etcd reserved or the gossip claimed for the node.
            let state = netpath::state::AgentState::read(&self.nodes[i].state_dir())?
                .context("the agent published no state")?;
            let cidr: Ipv4Net = state
                .pod_cidr
                .context("the ready agent published no pod CIDR")?;
            self.nodes[i].spec.pod_cidr = cidr;
            let name = self.nodes[i].spec.name.clone();
            match self.spec.nodes.iter_mut().find(|n| n.name == name) {
                Some(n) => n.pod_cidr = cidr,
                None => self.spec.nodes.push(self.nodes[i].spec.clone()),
            }
        }
        Ok(())
    }

    /// The agent's log so far (the last run's, once it stopped), for failure reports.
    pub fn agent_log(&self, node: usize) -> String {
        let Some(n) = self.nodes.get(node) else {
            return String::new();
        };
        std::fs::read_to_string(self.agent_log_path(n)).unwrap_or_default()
    }

    fn agent_log_path(&self, node: &Node) -> PathBuf {
        self.workdir.join(format!("{}.log", node.name))
    }

    /// The path between two nodes, for reports.
    fn path(&self, a: &Node, b: &Node) -> (&'static str, String) {
        if a.kind == NodeKind::KernelVxlan || b.kind == NodeKind::KernelVxlan {
            return ("4", "vxlan (kernel peer)".into());
        }
        if a.kind == NodeKind::KernelIpip || b.kind == NodeKind::KernelIpip {
            return ("4", "ipip (kernel peer)".into());
        }
        if a.kind == NodeKind::HostGw || b.kind == NodeKind::HostGw {
            return ("3", "host-gw (kernel)".into());
        }
        // What the sender's datapath does (with BGP, a router can make a route
        // across subnets direct), else what the spec says.
        let cidr = b.spec.pod_cidr;
        let installed = a
            .pinned()
            .ok()
            .and_then(|p| p.routes().ok())
            .and_then(|routes| {
                routes
                    .into_iter()
                    .find(|(net, prefix, _)| *net == cidr.addr && *prefix == cidr.prefix)
                    .map(|(_, _, r)| r)
            });
        let mode = installed
            .and_then(|r| netpath_common::RouteMode::from_u32(r.mode))
            .unwrap_or_else(|| self.spec.route_mode(&a.spec, &b.spec));
        let via_router = installed.is_some_and(|r| r.next_hop != r.node_ip);
        match mode {
            netpath_common::RouteMode::Direct if via_router => {
                ("3", "direct via the router".into())
            }
            netpath_common::RouteMode::Direct => ("3", "direct (redirect_neigh)".into()),
            netpath_common::RouteMode::Vxlan => ("4", "vxlan (eBPF encap)".into()),
            netpath_common::RouteMode::Ipip => ("4", "ipip (eBPF encap)".into()),
        }
    }

    /// The Kubernetes model, step by step: node <-> own pods (1), pod <-> pod on a
    /// node (2), and across nodes by direct routing (3) or VXLAN (4): every pod to
    /// every pod, every node to every pod and back.
    pub fn check_model(&self, protos: &[Proto]) -> Vec<CheckResult> {
        let mut out = Vec::new();
        let redirect = match self.spec.settings.redirect {
            netpath::spec::Redirect::Peer => "redirect_peer",
            netpath::spec::Redirect::Plain => "redirect",
        };
        for a in &self.nodes {
            for b in &self.nodes {
                let same = a.name == b.name;
                let (step_n, path) = if same {
                    ("1", "host route / eBPF".to_string())
                } else {
                    self.path(a, b)
                };
                for pod in &b.pods {
                    for &proto in protos {
                        out.push(check::probe(
                            &format!("{step_n} node->pod"),
                            &path,
                            proto,
                            &a.host_toward(pod.ip, &self.spec.settings.cluster_cidr),
                            &pod.host(),
                        ));
                        let back = if same {
                            path.clone()
                        } else {
                            "underlay routing".into()
                        };
                        out.push(check::probe(
                            &format!("{step_n} pod->node"),
                            &back,
                            proto,
                            &pod.host(),
                            &a.host(),
                        ));
                    }
                }
                let (step_p, pod_path) = if same {
                    let p = if a.kind.bridged() { "bridge" } else { redirect };
                    ("2", p.to_string())
                } else {
                    self.path(a, b)
                };
                for pa in &a.pods {
                    for pb in &b.pods {
                        if pa.ip == pb.ip {
                            continue;
                        }
                        for &proto in protos {
                            out.push(check::probe(
                                &format!("{step_p} pod->pod"),
                                &pod_path,
                                proto,
                                &pa.host(),
                                &pb.host(),
                            ));
                        }
                    }
                }
            }
        }
        // Containers run by containerd through the CNI plugin, every pair.
        for ca in &self.containers {
            for cb in self.containers.iter().filter(|c| c.id != ca.id) {
                let (a, b) = (&self.nodes[ca.node], &self.nodes[cb.node]);
                let (_, path) = if a.name == b.name {
                    ("2", redirect.to_string())
                } else {
                    self.path(a, b)
                };
                for &proto in protos {
                    out.push(check::probe(
                        "c ctr->ctr",
                        &path,
                        proto,
                        &ca.host(),
                        &cb.host(),
                    ));
                }
            }
        }
        out
    }

    /// Node-level invariants on netpath nodes: no bridge device, no firewall rules.
    pub fn check_invariants(&self) -> Vec<Invariant> {
        let mut out = Vec::new();
        for node in self.nodes.iter().filter(|n| n.kind == NodeKind::Netpath) {
            out.push(Invariant::from_result(
                &node.name,
                "no bridge device",
                node.ns.run(no_bridge),
            ));
            out.push(Invariant::from_result(
                &node.name,
                "no iptables/nftables rules",
                node.ns.run(no_firewall_rules),
            ));
        }
        out
    }
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

/// The product's etcd flags for the lab's cluster.
fn etcd_args(cluster: &etcd::EtcdCluster) -> Vec<String> {
    let mut a = vec![
        "--etcd-endpoints".to_string(),
        cluster.endpoints().join(","),
    ];
    if let Some(t) = cluster.tls() {
        a.extend([
            "--etcd-ca".into(),
            t.ca.display().to_string(),
            "--etcd-cert".into(),
            t.client_cert.display().to_string(),
            "--etcd-key".into(),
            t.client_key.display().to_string(),
        ]);
    }
    a
}

/// A pod on a flannel-style node: its veth hangs off the bridge `cni0`.
fn bridge_pod(node: &Node, p: usize, ip: Ipv4Addr, mtu: u32) -> Result<Pod> {
    let name = format!("{}-pod{p}", node.name);
    let ns = NetNs::create(&name)?;
    let host_ifname = format!("lxc{p}");
    let tmp_peer = format!("tmp{p}");
    let pod_fd = ns.file()?;
    node.ns.run(|| {
        let nl = Nl::new()?;
        nl.add_veth(&host_ifname, &tmp_peer)?;
        nl.move_to_netns(nl.index(&tmp_peer)?, pod_fd.as_raw_fd())?;
        let host = nl.index(&host_ifname)?;
        nl.set_mtu(host, mtu)?;
        nl.set_master(host, nl.index("cni0")?)?;
        nl.set_up(host)
    })?;
    let cidr = node.spec.pod_cidr;
    let mac = ns.run(|| {
        let nl = Nl::new()?;
        let eth0 = nl.index(&tmp_peer)?;
        nl.rename(eth0, "eth0")?;
        nl.set_mtu(eth0, mtu)?;
        nl.add_address(eth0, ip, cidr.prefix)?;
        nl.set_up(eth0)?;
        nl.replace_route(Ipv4Addr::UNSPECIFIED, 0, eth0, Some(cidr.nth(1)))?;
        nl.mac("eth0")
    })?;
    Ok(Pod {
        name,
        ns,
        ip,
        mac,
        host_ifname,
    })
}

/// A pod on a netpath node, wired by the product's endpoint module (as the CNI
/// plugin wires one), from inside the node's namespace, with an address from the
/// node's address book: lab pods and CNI containers never collide.
fn attach_pod(node: &Node, p: usize, mtu: u32) -> Result<Pod> {
    let name = format!("{}-pod{p}", node.name);
    let ns = NetNs::create(&name)?;
    let req = netpath::pod::PodRequest {
        alloc: ipam::Allocation {
            id: ipam::AttachmentId {
                container_id: name.clone(),
                ifname: "eth0".into(),
            },
            pod_namespace: None,
            pod_name: Some(name.clone()),
            netns: Some(ns.path().display().to_string()),
        },
        netns: ns.path(),
        mtu,
    };
    let state_dir = node.state_dir();
    let (ip, attached) = in_runtime(node.ns.path(), || async {
        Ok(netpath::pod::add(&state_dir, &node.pin_dir, node.spec.pod_cidr, req).await?)
    })
    .with_context(|| format!("attach pod {name}"))?;
    Ok(Pod {
        name,
        ns,
        ip,
        mac: attached.pod_mac.octets(),
        host_ifname: attached.host_ifname,
    })
}

/// Runs an async product call to completion on a thread inside namespace `ns`.
pub fn in_runtime<T: Send, F: std::future::Future<Output = Result<T>>>(
    ns: &Path,
    f: impl FnOnce() -> F + Send,
) -> Result<T> {
    crate::netns::run_in(ns, || netpath::files::one_shot_runtime()?.block_on(f()))
}
