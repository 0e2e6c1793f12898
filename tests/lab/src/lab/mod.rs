//! Lab clusters on one host: nodes and pods are network namespaces joined by veth
//! pairs; a fabric namespace switches each underlay subnet and routes between them.
//! Each netpath node runs a real `netpath agent` process; a node may instead be set up
//! the way flannel's vxlan backend sets one up (bridge + kernel vxlan device), as the
//! interoperability peer. Pods on netpath nodes are wired by the product's `endpoint`
//! module, the code path of the CNI plugin. Shared by `netpath-lab run` (`cargo xtask
//! run`), the integration tests and the bench. Everything carries a per-run prefix and
//! is torn down on drop, also on panic.
//!
//! `impl Lab` is spread by concern: bring-up and teardown (`up`), agents, the
//! agents' store (`stores`), BGP, pods, containers, nodes joining and leaving
//! (`membership`), the checks, the outside host and the demo services.
mod agents;
mod baselines;
mod bgp;
pub mod bgp_router;
mod checks;
mod config;
mod containers;
pub mod etcd;
mod fabric;
mod invariants;
mod membership;
mod outside;
mod pods;
mod prefix;
mod report;
mod services;
mod stores;
mod up;

pub use baselines::VethPair;
pub use bgp::bgp_spec;
pub use config::{agent_binary, generated_spec, LabConfig, LabStore};
pub use containers::{busybox_image, BusyboxImage, Container, Containerd, HostCniInstall, Podman};
pub use fabric::Fabric;
pub use invariants::Invariant;
pub use membership::{GOSSIP_GONE_WITHIN, PROPAGATION_WITHIN};
pub use outside::{Outside, OUTSIDE_IP, OUTSIDE_ROUTER};
pub use pods::in_runtime;
pub use prefix::reserve_prefix;
pub use report::print_report;
pub use services::{ServiceDemo, DEMO_NODE_PORT, DEMO_VIP};

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{Context, Result};
use netpath::{
    datapath,
    net::Ipv4Net,
    spec::{ClusterSpec, NodeSpec},
};

use crate::{check::Host, netns::NetNs};
use agents::AgentProcess;

pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const UNDERLAY_MTU: u32 = 1500;

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
    /// Calico's kernel path (BGP, no IPIP): no bridge; each pod's veth `cali<p>`
    /// carries a /32 route to its pod and answers ARP for the pod's link-local
    /// gateway (proxy ARP); kernel routes to the other nodes' pod CIDRs via their
    /// underlay addresses, as Calico's BGP would learn them.
    RoutedVeth,
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
