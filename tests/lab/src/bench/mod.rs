//! `netpath bench` (run by `cargo xtask bench`): netpath against the classic kernel
//! paths, built side by side by the lab code and measured in interleaved rounds so
//! drift hits all alike. Writes `report.md`, `report.json` and SVG charts.
mod bgp;
pub mod cni;
mod cold_start;
mod control_report;
mod encryption;
mod encryption_report;
mod gossip;
mod memory;
mod observe;
mod plan;
mod policy;
mod policy_control;
mod policy_iptables;
mod policy_report;
pub mod prog_stats;
mod report;
mod scale;
mod services;
mod services_report;
pub mod store;
mod targets;
mod tools;

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::Serialize;

use netpath::spec::{Backend, Decap, VxlanDevice};

use self::plan::{Plan, Progress};
use crate::lab::{generated_spec, Fabric, Lab, LabConfig, NodeKind, VethPair};

pub struct BenchArgs {
    pub quick: bool,
    /// Only these paths, and no scale or control-plane part (a focused comparison).
    pub paths: Option<Vec<PathKind>>,
    /// Sample the CPU (perf) during each path's first 1-stream TCP run, into this
    /// directory.
    pub profile: Option<PathBuf>,
    /// Only the CNI ADD+DEL round trips.
    pub cni_only: bool,
    /// Only the etcd control-plane scale.
    pub etcd_only: bool,
    /// Only what watching costs (trace on/off, a scrape of 100 000 routes).
    pub monitor_only: bool,
    /// Only BGP route convergence (3 and 50 speakers).
    pub bgp_only: bool,
    /// Only Services against kube-proxy, and a ClusterIP's own cost.
    pub services_only: bool,
    /// Only network policy's cost, against none and against iptables + ipset.
    pub policy_only: bool,
    /// Only encryption's cost: netpath with WireGuard against without.
    pub encryption_only: bool,
    /// Only an agent's cold start on a spec of `cold_start_nodes` nodes.
    pub cold_start_only: bool,
    pub memory_only: bool,
    pub gossip_only: bool,
    pub gossip_members: Option<Vec<usize>>,
    pub cold_start_nodes: usize,
    /// Set when the user asked to stop: checked between measurements.
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub out: PathBuf,
}

/// The paths compared, in the order each round measures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum PathKind {
    VethPair,
    Bridge,
    NetpathLocal,
    N2N,
    HostGw,
    NetpathDirect,
    KernelVxlan,
    NetpathVxlan,
    NetpathVxlanXdp,
    N2NRouted,
    KernelVxlanRouted,
    NetpathVxlanRouted,
    NetpathVxlanRoutedGro,
    N2NRoutedVeth,
    KernelVxlanRoutedVeth,
    NetpathVxlanRoutedVeth,
    NetpathIpip,
    NetpathIpipRouted,
    NetpathBgpRouted,
    NftMasquerade,
    NetpathMasquerade,
}

impl PathKind {
    pub const ALL: [PathKind; 21] = [
        Self::VethPair,
        Self::Bridge,
        Self::NetpathLocal,
        Self::N2N,
        Self::HostGw,
        Self::NetpathDirect,
        Self::KernelVxlan,
        Self::NetpathVxlan,
        Self::NetpathVxlanXdp,
        Self::N2NRouted,
        Self::KernelVxlanRouted,
        Self::NetpathVxlanRouted,
        Self::NetpathVxlanRoutedGro,
        Self::N2NRoutedVeth,
        Self::KernelVxlanRoutedVeth,
        Self::NetpathVxlanRoutedVeth,
        Self::NetpathIpip,
        Self::NetpathIpipRouted,
        Self::NetpathBgpRouted,
        Self::NftMasquerade,
        Self::NetpathMasquerade,
    ];

    /// What a quick run measures: the paths the targets compare, no variants.
    /// (The N2N paths across a router only serve a target the full run checks.)
    pub const QUICK: [PathKind; 11] = [
        Self::VethPair,
        Self::Bridge,
        Self::NetpathLocal,
        Self::N2N,
        Self::NetpathDirect,
        Self::KernelVxlan,
        Self::NetpathVxlan,
        Self::KernelVxlanRouted,
        Self::NetpathVxlanRouted,
        Self::KernelVxlanRoutedVeth,
        Self::NetpathVxlanRoutedVeth,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::VethPair => "veth pair (limit)",
            Self::Bridge => "bridge, one node",
            Self::NetpathLocal => "netpath, one node",
            Self::N2N => "N2N, one subnet",
            Self::HostGw => "host-gw + bridge",
            Self::NetpathDirect => "netpath direct",
            Self::KernelVxlan => "kernel vxlan + bridge",
            Self::NetpathVxlan => "netpath vxlan",
            Self::NetpathVxlanXdp => "netpath vxlan, XDP decap",
            Self::N2NRouted => "N2N, across router",
            Self::KernelVxlanRouted => "kernel vxlan + bridge, routed",
            Self::NetpathVxlanRouted => "netpath vxlan, routed",
            Self::NetpathVxlanRoutedGro => "netpath vxlan, routed, device GRO",
            Self::N2NRoutedVeth => "N2N, across veth router",
            Self::KernelVxlanRoutedVeth => "kernel vxlan + bridge, veth router",
            Self::NetpathVxlanRoutedVeth => "netpath vxlan, veth router",
            Self::NetpathIpip => "netpath ipip",
            Self::NetpathIpipRouted => "netpath ipip, routed",
            Self::NetpathBgpRouted => "netpath, BGP router, routed",
            Self::NftMasquerade => "pod -> outside, nftables masquerade",
            Self::NetpathMasquerade => "pod -> outside, netpath masquerade",
        }
    }

    /// The name `--paths` takes.
    pub fn key(self) -> &'static str {
        match self {
            Self::VethPair => "veth",
            Self::Bridge => "bridge",
            Self::NetpathLocal => "local",
            Self::N2N => "n2n",
            Self::HostGw => "host-gw",
            Self::NetpathDirect => "direct",
            Self::KernelVxlan => "kernel-vxlan",
            Self::NetpathVxlan => "vxlan",
            Self::NetpathVxlanXdp => "vxlan-xdp",
            Self::N2NRouted => "n2n-routed",
            Self::KernelVxlanRouted => "kernel-vxlan-routed",
            Self::NetpathVxlanRouted => "vxlan-routed",
            Self::NetpathVxlanRoutedGro => "vxlan-routed-gro",
            Self::N2NRoutedVeth => "n2n-routed-veth",
            Self::KernelVxlanRoutedVeth => "kernel-vxlan-routed-veth",
            Self::NetpathVxlanRoutedVeth => "vxlan-routed-veth",
            Self::NetpathIpip => "ipip",
            Self::NetpathIpipRouted => "ipip-routed",
            Self::NetpathBgpRouted => "bgp-routed",
            Self::NftMasquerade => "nft-masquerade",
            Self::NetpathMasquerade => "masquerade",
        }
    }

    /// The classic path a netpath path is judged against.
    pub fn classic(self) -> Option<PathKind> {
        match self {
            Self::NetpathLocal => Some(Self::Bridge),
            Self::NetpathDirect => Some(Self::HostGw),
            Self::NetpathVxlan | Self::NetpathVxlanXdp => Some(Self::KernelVxlan),
            Self::NetpathVxlanRouted | Self::NetpathVxlanRoutedGro => Some(Self::KernelVxlanRouted),
            Self::NetpathVxlanRoutedVeth => Some(Self::KernelVxlanRoutedVeth),
            // This host's kernel has no ipip device to compare with: the other overlay.
            Self::NetpathIpip => Some(Self::NetpathVxlan),
            Self::NetpathIpipRouted => Some(Self::NetpathVxlanRouted),
            // What a router that learned the pod routes replaces: the overlay across it.
            Self::NetpathBgpRouted => Some(Self::NetpathVxlanRouted),
            Self::NetpathMasquerade => Some(Self::NftMasquerade),
            _ => None,
        }
    }

    /// The node-to-node limit of a path between two nodes: the nodes themselves
    /// talking over the same underlay.
    pub fn n2n(self) -> Option<PathKind> {
        match self {
            Self::HostGw
            | Self::NetpathDirect
            | Self::KernelVxlan
            | Self::NetpathVxlan
            | Self::NetpathVxlanXdp
            | Self::NetpathIpip => Some(Self::N2N),
            Self::KernelVxlanRouted
            | Self::NetpathVxlanRouted
            | Self::NetpathVxlanRoutedGro
            | Self::NetpathIpipRouted
            | Self::NetpathBgpRouted => Some(Self::N2NRouted),
            Self::KernelVxlanRoutedVeth | Self::NetpathVxlanRoutedVeth => Some(Self::N2NRoutedVeth),
            _ => None,
        }
    }
}

/// One round's figures for one path.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub path: PathKind,
    pub round: usize,
    pub tcp1_gbps: f64,
    /// Sender retransmissions per second in the 1-stream run.
    pub tcp1_retrans_per_s: f64,
    pub tcp2_gbps: f64,
    pub tcp_p50_us: f64,
    pub tcp_p99_us: f64,
    pub udp_p50_us: f64,
    pub udp_p99_us: f64,
    pub udp64_kpps: f64,
    pub cpu_ns_per_pkt: f64,
    /// TCP connections per second, each with one 64-byte request and response.
    pub crr_per_s: f64,
    /// netpath's paths, first round: the programs' time in an extra ping-pong run
    /// (per packet) and connection run (per connection), statistics on for those
    /// alone so the measured runs carry no statistics cost.
    pub rr_programs: Vec<prog_stats::ProgCost>,
    pub crr_programs: Vec<prog_stats::ProgCost>,
}

/// Per-packet cost with many routes and endpoints in the maps.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleSample {
    pub routes: usize,
    pub endpoints: usize,
    pub round: usize,
    pub udp64_kpps: f64,
    pub cpu_ns_per_pkt: f64,
    pub udp_p50_us: f64,
    /// Kernel memory of the node's BPF maps (bpftool's bytes_memlock, summed).
    pub map_kib: f64,
    /// Resident memory of the node's agent.
    pub agent_rss_kib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ControlPlane {
    pub nodes: usize,
    pub parse_validate_ms: f64,
    pub program_maps_ms: f64,
    pub program_kernel_routes_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    pub date: String,
    pub kernel: String,
    pub cpus: usize,
    pub quick: bool,
    pub rounds: usize,
    pub seconds_per_test: u32,
    pub perf_stat: bool,
    pub samples: Vec<Sample>,
    pub scale: Vec<ScaleSample>,
    pub control_plane: Option<ControlPlane>,
    pub agent_memory: Vec<memory::AgentMemory>,
    pub cni: Vec<cni::CniLatency>,
    pub store_scale: Vec<store::StoreScale>,
    pub gossip_scale: Vec<gossip::GossipScale>,
    pub bgp_convergence: Vec<bgp::BgpConvergence>,
    pub service_rates: Vec<services::ServiceRate>,
    pub service_overhead: Vec<services::ServiceOverhead>,
    pub cold_start: Vec<cold_start::ColdStart>,
    pub policy: policy::PolicyRun,
    pub encryption: encryption::EncryptionRun,
}

/// One end of a measurement in a lab: a node itself or one of its pods.
#[derive(Clone, Copy)]
enum At {
    Node(usize),
    Pod(usize, usize),
    /// The host behind the fabric router, outside the cluster.
    Outside,
}

/// A built topology and the two ends it is measured between.
enum Topo {
    Pair(VethPair),
    Lab { lab: Box<Lab>, from: At, to: At },
}

impl Topo {
    fn ends(&self) -> tools::Ends<'_> {
        match self {
            Topo::Pair(p) => tools::Ends {
                client: p.a.path(),
                server: p.b.path(),
                server_ip: p.b_ip,
            },
            Topo::Lab { lab, from, to } => {
                let place = |at: At| match at {
                    At::Node(n) => (lab.nodes[n].ns.path(), lab.nodes[n].ip()),
                    At::Pod(n, p) => (lab.nodes[n].pods[p].ns.path(), lab.nodes[n].pods[p].ip),
                    At::Outside => (lab.outside_ns(), lab.outside().ip),
                };
                let (client, _) = place(*from);
                let (server, server_ip) = place(*to);
                tools::Ends {
                    client,
                    server,
                    server_ip,
                }
            }
        }
    }

    fn lab(&self) -> &Lab {
        match self {
            Topo::Lab { lab, .. } => lab,
            Topo::Pair(_) => panic!("a veth pair is not a lab"),
        }
    }
}

/// A lab of `nodes` nodes of one kind. With three nodes and an overlay backend the
/// last node sits behind the fabric router, on another underlay subnet.
fn lab(
    nodes: usize,
    pods: usize,
    backend: Backend,
    kind: NodeKind,
    decap: Decap,
) -> Result<Box<Lab>> {
    lab_with(nodes, pods, backend, kind, decap, VxlanDevice::Off)
}

fn lab_with(
    nodes: usize,
    pods: usize,
    backend: Backend,
    kind: NodeKind,
    decap: Decap,
    device: VxlanDevice,
) -> Result<Box<Lab>> {
    let mut cfg = LabConfig::with_spec(generated_spec(nodes, backend)?, pods)?;
    cfg.spec.settings.decap = decap;
    cfg.spec.settings.vxlan_device = device;
    cfg.kinds = (0..nodes).map(|i| (i, kind)).collect();
    Ok(Box::new(Lab::up(&cfg)?))
}

/// Three nodes of one kind, the last behind a router that forwards veth to veth.
fn veth_fabric_lab(kind: NodeKind) -> Result<Box<Lab>> {
    let mut cfg = LabConfig::with_spec(generated_spec(3, Backend::Vxlan)?, 1)?;
    cfg.kinds = (0..3).map(|i| (i, kind)).collect();
    cfg.fabric = Fabric::Veth;
    Ok(Box::new(Lab::up(&cfg)?))
}

fn build(path: PathKind) -> Result<Topo> {
    use At::*;
    let (lab, from, to) = match path {
        PathKind::VethPair => return Ok(Topo::Pair(VethPair::up()?)),
        PathKind::Bridge => (
            lab(1, 2, Backend::Direct, NodeKind::HostGw, Decap::Tc)?,
            Pod(0, 0),
            Pod(0, 1),
        ),
        PathKind::NetpathLocal => (
            lab(1, 2, Backend::Direct, NodeKind::Netpath, Decap::Tc)?,
            Pod(0, 0),
            Pod(0, 1),
        ),
        // Kernel-only nodes: nothing of netpath's on the way.
        PathKind::N2N => (
            lab(2, 1, Backend::Direct, NodeKind::HostGw, Decap::Tc)?,
            Node(0),
            Node(1),
        ),
        PathKind::HostGw => (
            lab(2, 1, Backend::Direct, NodeKind::HostGw, Decap::Tc)?,
            Pod(0, 0),
            Pod(1, 0),
        ),
        PathKind::NetpathDirect => (
            lab(2, 1, Backend::Direct, NodeKind::Netpath, Decap::Tc)?,
            Pod(0, 0),
            Pod(1, 0),
        ),
        PathKind::KernelVxlan => (
            lab(2, 1, Backend::Vxlan, NodeKind::KernelVxlan, Decap::Tc)?,
            Pod(0, 0),
            Pod(1, 0),
        ),
        PathKind::NetpathVxlan => (
            lab(2, 1, Backend::Vxlan, NodeKind::Netpath, Decap::Tc)?,
            Pod(0, 0),
            Pod(1, 0),
        ),
        PathKind::NetpathVxlanXdp => (
            lab(2, 1, Backend::Vxlan, NodeKind::Netpath, Decap::Xdp)?,
            Pod(0, 0),
            Pod(1, 0),
        ),
        PathKind::N2NRouted => (
            lab(3, 1, Backend::Vxlan, NodeKind::KernelVxlan, Decap::Tc)?,
            Node(0),
            Node(2),
        ),
        PathKind::KernelVxlanRouted => (
            lab(3, 1, Backend::Vxlan, NodeKind::KernelVxlan, Decap::Tc)?,
            Pod(0, 0),
            Pod(2, 0),
        ),
        PathKind::NetpathVxlanRouted => (
            lab(3, 1, Backend::Vxlan, NodeKind::Netpath, Decap::Tc)?,
            Pod(0, 0),
            Pod(2, 0),
        ),
        PathKind::NetpathVxlanRoutedGro => (
            lab_with(
                3,
                1,
                Backend::Vxlan,
                NodeKind::Netpath,
                Decap::Tc,
                VxlanDevice::Receive,
            )?,
            Pod(0, 0),
            Pod(2, 0),
        ),
        PathKind::N2NRoutedVeth => (veth_fabric_lab(NodeKind::KernelVxlan)?, Node(0), Node(2)),
        PathKind::KernelVxlanRoutedVeth => (
            veth_fabric_lab(NodeKind::KernelVxlan)?,
            Pod(0, 0),
            Pod(2, 0),
        ),
        PathKind::NetpathVxlanRoutedVeth => {
            (veth_fabric_lab(NodeKind::Netpath)?, Pod(0, 0), Pod(2, 0))
        }
        PathKind::NetpathIpip => (
            lab(2, 1, Backend::Ipip, NodeKind::Netpath, Decap::Tc)?,
            Pod(0, 0),
            Pod(1, 0),
        ),
        PathKind::NetpathIpipRouted => (
            lab(3, 1, Backend::Ipip, NodeKind::Netpath, Decap::Tc)?,
            Pod(0, 0),
            Pod(2, 0),
        ),
        PathKind::NetpathBgpRouted => {
            // Calico's "IPIP never" behind top-of-rack routers: no overlay to leave
            // room for, so pods get the underlay's whole MTU.
            let spec = generated_spec(3, Backend::Auto)?;
            let spec = crate::lab::bgp_spec(&spec, true)?.with_backend(Backend::Direct)?;
            let cfg = LabConfig::with_spec(spec, 1)?;
            (Box::new(Lab::up(&cfg)?), Pod(0, 0), Pod(2, 0))
        }
        PathKind::NftMasquerade => (masquerade_lab(false)?, Pod(0, 0), Outside),
        PathKind::NetpathMasquerade => (masquerade_lab(true)?, Pod(0, 0), Outside),
    };
    Ok(Topo::Lab { lab, from, to })
}

/// Two netpath nodes and the outside host. `in_programs`: netpath's masquerade;
/// otherwise the flannel way, netpath's off and one nftables masquerade rule on
/// the node (what `flanneld --ip-masq` installs, in essence).
fn masquerade_lab(in_programs: bool) -> Result<Box<Lab>> {
    let mut cfg = LabConfig::with_spec(generated_spec(2, Backend::Direct)?, 1)?;
    let mut d = cfg.spec.to_draft();
    d.settings.masquerade = in_programs;
    cfg.spec = d.validate()?;
    let lab = Box::new(Lab::up(&cfg)?);
    if !in_programs {
        let ns = lab.nodes[0].ns.path();
        let cidr = cfg.spec.settings.cluster_cidr.to_string();
        let chain = "{ type nat hook postrouting priority 100 ; }";
        for cmd in [
            vec!["nft", "add", "table", "ip", "netpath-bench"],
            vec!["nft", "add", "chain", "ip", "netpath-bench", "post", chain],
            vec![
                "nft",
                "add",
                "rule",
                "ip",
                "netpath-bench",
                "post",
                "ip",
                "saddr",
                &cidr,
                "ip",
                "daddr",
                "!=",
                &cidr,
                "masquerade",
            ],
        ] {
            crate::support::run_in_ns(ns, &cmd).context("install the nftables masquerade rule")?;
        }
    }
    Ok(lab)
}

fn progress(msg: &str) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{msg}");
}

fn measure(path: PathKind, round: usize, secs: u32, profile: Option<&Path>) -> Result<Sample> {
    let topo = build(path).with_context(|| format!("build {}", path.label()))?;
    let e = topo.ends();
    warm_up(&e)?;
    let perf = profile
        .filter(|_| round == 0)
        .map(|dir| tools::Profile::start(&dir.join(format!("{}.data", path.key()))))
        .transpose()?;
    let (tcp1, retrans) = tools::tcp_gbps(&e, secs, 1)?;
    drop(perf);
    let (tcp2, _) = tools::tcp_gbps(&e, secs, 2)?;
    let (tcp_p50, tcp_p99) = tools::latency_us(&e, secs, true)?;
    let (udp_p50, udp_p99) = tools::latency_us(&e, secs, false)?;
    let (pps, cpu_us) = tools::udp_small(&e, secs)?;
    let crr = tools::crr_per_s(&e, secs)?;
    let (rr_programs, crr_programs) = if round == 0 && path.classic().is_some() {
        let _stats = prog_stats::enable()?;
        let before = prog_stats::snapshot()?;
        tools::latency_us(&e, secs, true)?;
        let mid = prog_stats::snapshot()?;
        let conns = tools::crr_per_s(&e, secs)? * f64::from(secs);
        let after = prog_stats::snapshot()?;
        (
            prog_stats::between(&before, &mid, 1.0),
            prog_stats::between(&mid, &after, conns),
        )
    } else {
        Default::default()
    };
    Ok(Sample {
        path,
        round,
        tcp1_gbps: tcp1,
        tcp1_retrans_per_s: retrans,
        tcp2_gbps: tcp2,
        tcp_p50_us: tcp_p50,
        tcp_p99_us: tcp_p99,
        udp_p50_us: udp_p50,
        udp_p99_us: udp_p99,
        udp64_kpps: pps / 1e3,
        cpu_ns_per_pkt: cpu_us * 1e3,
        crr_per_s: crr,
        rr_programs,
        crr_programs,
    })
}

/// One exchange end to end, so neighbours are resolved before anything is timed.
fn warm_up(e: &tools::Ends) -> Result<()> {
    crate::check::tcp(e.client, e.server, e.server_ip).context("warm-up exchange")?;
    Ok(())
}

pub fn run(args: BenchArgs) -> Result<bool> {
    let plan = Plan::of(&args);
    let mut p = Progress::new(plan.steps(), args.stop.clone());
    let (samples, scale) = measure_paths(&plan, &mut p, args.profile.as_deref())?;
    let mut control = None;
    for &n in &plan.control_nodes {
        p.tick(&format!("control plane: {n} nodes"))?;
        control = Some(scale::control_plane(n)?);
    }
    let mut agent_memory = Vec::new();
    for &peers in &plan.memory_peers {
        p.tick(&format!("agent memory: {peers} peers"))?;
        agent_memory.push(memory::agent_memory(peers)?);
    }
    let mut cni = Vec::new();
    if let Some(cycles) = plan.cni_cycles {
        p.tick(&format!("CNI ADD+DEL: {cycles} cycles each, interleaved"))?;
        cni = cni::round_trips(cycles)?;
    }
    if plan.monitor {
        p.tick(&format!(
            "what watching costs: {} rounds trace off/on, a scrape of 100 000 routes",
            plan.rounds
        ))?;
        observe::run(plan.rounds, plan.secs, &args.out)?;
        progress(&format!("  {}", args.out.join("observe.md").display()));
    }
    let (store_scale, gossip_scale) = measure_stores(&plan, &mut p)?;
    let mut bgp_convergence = Vec::new();
    for &(n, router) in &plan.bgp_sizes {
        let how = if router {
            "each peering with the router"
        } else {
            "full mesh"
        };
        p.tick(&format!(
            "BGP convergence: {n} speakers (agents + BIRD, {how})"
        ))?;
        bgp_convergence.push(bgp::measure(n, router)?);
    }
    let (service_rates, service_overhead) = measure_services(&plan, &mut p)?;
    let policy = policy::measure(&plan, &mut p)?;
    let encryption = encryption::measure(&plan, &mut p)?;
    let mut cold_start = Vec::new();
    if let Some(nodes) = plan.cold_start_nodes {
        p.tick(&format!(
            "an agent started on a spec of {nodes} nodes (direct, one /12 underlay)"
        ))?;
        cold_start.push(cold_start::measure(nodes)?);
    }
    let run = Run {
        date: report::today(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        quick: args.quick,
        rounds: plan.rounds,
        seconds_per_test: plan.secs,
        perf_stat: tools::perf_counts_cycles(),
        samples,
        scale,
        control_plane: control,
        agent_memory,
        cni,
        store_scale,
        gossip_scale,
        bgp_convergence,
        service_rates,
        service_overhead,
        cold_start,
        policy,
        encryption,
    };
    if args.monitor_only {
        // Its own report is written; report.md of an earlier run stays.
        return Ok(true);
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    report::write(&run, &args.out)?;
    progress(&format!(
        "done in {:.0} s: {}",
        p.elapsed_s(),
        args.out.join("report.md").display()
    ));
    Ok(true)
}

/// Every path once per round (interleaved), and the route scale in its rounds.
fn measure_paths(
    plan: &Plan,
    p: &mut Progress,
    profile: Option<&Path>,
) -> Result<(Vec<Sample>, Vec<ScaleSample>)> {
    let (rounds, secs) = (plan.rounds, plan.secs);
    let mut samples = Vec::new();
    let mut scale = Vec::new();
    for round in 0..rounds {
        for &path in &plan.paths {
            p.tick(&format!("round {}/{rounds}: {}", round + 1, path.label()))?;
            samples.push(measure(path, round, secs, profile)?);
        }
        for &routes in plan
            .scale_sizes
            .iter()
            .filter(|_| round < plan.scale_rounds)
        {
            p.tick(&format!(
                "round {}/{rounds}: scale, {routes} routes + 1000 endpoints",
                round + 1
            ))?;
            scale.push(scale::measure_scale(routes, 1_000, round, secs)?);
        }
    }
    Ok((samples, scale))
}

/// The etcd and gossip stores at scale; a size the machine cannot carry is
/// reported, not fatal to the run.
fn measure_stores(
    plan: &Plan,
    p: &mut Progress,
) -> Result<(Vec<store::StoreScale>, Vec<gossip::GossipScale>)> {
    let mut store_scale = Vec::new();
    for &m in &plan.store_sizes {
        p.tick(&format!("control plane on etcd: {m} agent loops"))?;
        store_scale.push(store::measure(m).unwrap_or_else(|e| {
            progress(&format!("  {m} loops: {e:#}"));
            store::StoreScale::failed(m, format!("{e:#}"))
        }));
    }
    let mut gossip_scale = Vec::new();
    for &m in &plan.gossip_sizes {
        p.tick(&format!("gossip store: {m} members in one process"))?;
        gossip_scale.push(gossip::measure(m).unwrap_or_else(|e| {
            progress(&format!("  {m} members: {e:#}"));
            gossip::GossipScale::failed(m, format!("{e:#}"))
        }));
    }
    Ok((store_scale, gossip_scale))
}

/// netpath's Services against kube-proxy per size, and through a ClusterIP against
/// the backend directly, in rounds.
fn measure_services(
    plan: &Plan,
    p: &mut Progress,
) -> Result<(Vec<services::ServiceRate>, Vec<services::ServiceOverhead>)> {
    let rounds = plan.service_rounds;
    let mut rates = Vec::new();
    let mut overhead = Vec::new();
    for round in 0..rounds {
        for &n in &plan.service_sizes {
            p.tick(&format!(
                "round {}/{rounds}: {n} services, netpath vs kube-proxy (iptables)",
                round + 1
            ))?;
            rates.push(services::measure(n, round, plan.secs)?);
        }
        p.tick(&format!(
            "round {}/{rounds}: through a ClusterIP vs the backend directly",
            round + 1
        ))?;
        overhead.push(services::overhead(round, plan.secs)?);
    }
    Ok((rates, overhead))
}

/// Median and (min, max) of a series.
pub fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (med, v[0], v[n - 1])
}

/// Per-round values of `metric` for `path`, by round.
pub fn series(run: &Run, path: PathKind, metric: fn(&Sample) -> f64) -> BTreeMap<usize, f64> {
    run.samples
        .iter()
        .filter(|s| s.path == path)
        .map(|s| (s.round, metric(s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        assert_eq!(stats(vec![3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(stats(vec![4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert!(stats(vec![]).0.is_nan());
    }
}
