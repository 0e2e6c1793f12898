//! `netpath bench` (run by `cargo xtask bench`): netpath against the classic kernel
//! paths, built side by side by the lab code and measured in interleaved rounds so
//! drift hits all alike. Writes `report.md`, `report.json` and SVG charts.
mod report;
mod tools;

use std::{collections::BTreeMap, io::Write, net::Ipv4Addr, path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use netpath_common::{Endpoint, Route, RouteMode};
use serde::Serialize;

use netpath::{
    net::Ipv4Net,
    netlink::{Netlink, RouteSummary},
    plan::{self, Underlay},
    reconcile,
    spec::{Backend, ClusterSpec, Decap},
};

use crate::lab::{self, generated_spec, Lab, LabConfig, NodeKind, VethPair};

pub struct BenchArgs {
    pub quick: bool,
    pub out: PathBuf,
}

/// The paths compared, in the order each round measures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum PathKind {
    VethPair,
    Bridge,
    NetpathLocal,
    HostGw,
    NetpathDirect,
    KernelVxlan,
    NetpathVxlan,
    NetpathVxlanXdp,
}

impl PathKind {
    pub const ALL: [PathKind; 8] = [
        Self::VethPair,
        Self::Bridge,
        Self::NetpathLocal,
        Self::HostGw,
        Self::NetpathDirect,
        Self::KernelVxlan,
        Self::NetpathVxlan,
        Self::NetpathVxlanXdp,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::VethPair => "veth pair (limit)",
            Self::Bridge => "bridge, one node",
            Self::NetpathLocal => "netpath, one node",
            Self::HostGw => "host-gw + bridge",
            Self::NetpathDirect => "netpath direct",
            Self::KernelVxlan => "kernel vxlan + bridge",
            Self::NetpathVxlan => "netpath vxlan",
            Self::NetpathVxlanXdp => "netpath vxlan, XDP decap",
        }
    }

    /// The classic path a netpath path is judged against.
    pub fn classic(self) -> Option<PathKind> {
        match self {
            Self::NetpathLocal => Some(Self::Bridge),
            Self::NetpathDirect => Some(Self::HostGw),
            Self::NetpathVxlan | Self::NetpathVxlanXdp => Some(Self::KernelVxlan),
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
    pub tcp2_gbps: f64,
    pub tcp_p50_us: f64,
    pub tcp_p99_us: f64,
    pub udp_p50_us: f64,
    pub udp_p99_us: f64,
    pub udp64_kpps: f64,
    pub cpu_ns_per_pkt: f64,
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
}

#[derive(Debug, Clone, Serialize)]
pub struct ControlPlane {
    pub nodes: usize,
    pub parse_validate_ms: f64,
    pub program_maps_ms: f64,
    pub program_kernel_routes_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
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
}

/// A built topology and the two ends it is measured between.
enum Topo {
    Pair(VethPair),
    Lab(Box<Lab>),
}

impl Topo {
    fn ends(&self) -> tools::Ends<'_> {
        match self {
            Topo::Pair(p) => tools::Ends {
                client: p.a.path(),
                server: p.b.path(),
                server_ip: p.b_ip,
            },
            Topo::Lab(lab) => {
                let first = &lab.nodes[0].pods[0];
                let other = if lab.nodes.len() > 1 {
                    &lab.nodes[1].pods[0]
                } else {
                    &lab.nodes[0].pods[1]
                };
                tools::Ends {
                    client: first.ns.path(),
                    server: other.ns.path(),
                    server_ip: other.ip,
                }
            }
        }
    }
}

fn lab(nodes: usize, pods: usize, backend: Backend, kind: NodeKind) -> Result<Topo> {
    lab_decap(nodes, pods, backend, kind, Decap::Tc)
}

fn lab_decap(
    nodes: usize,
    pods: usize,
    backend: Backend,
    kind: NodeKind,
    decap: Decap,
) -> Result<Topo> {
    let mut cfg = LabConfig::with_spec(generated_spec(nodes, backend)?, pods)?;
    cfg.spec.decap = decap;
    cfg.kinds = (0..nodes).map(|i| (i, kind)).collect();
    Ok(Topo::Lab(Box::new(Lab::up(&cfg)?)))
}

fn build(path: PathKind) -> Result<Topo> {
    match path {
        PathKind::VethPair => Ok(Topo::Pair(VethPair::up()?)),
        PathKind::Bridge => lab(1, 2, Backend::Direct, NodeKind::HostGw),
        PathKind::NetpathLocal => lab(1, 2, Backend::Direct, NodeKind::Netpath),
        PathKind::HostGw => lab(2, 1, Backend::Direct, NodeKind::HostGw),
        PathKind::NetpathDirect => lab(2, 1, Backend::Direct, NodeKind::Netpath),
        PathKind::KernelVxlan => lab(2, 1, Backend::Vxlan, NodeKind::KernelVxlan),
        PathKind::NetpathVxlan => lab(2, 1, Backend::Vxlan, NodeKind::Netpath),
        PathKind::NetpathVxlanXdp => lab_decap(2, 1, Backend::Vxlan, NodeKind::Netpath, Decap::Xdp),
    }
}

fn progress(msg: &str) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{msg}");
}

fn measure(path: PathKind, round: usize, secs: u32) -> Result<Sample> {
    let topo = build(path).with_context(|| format!("build {}", path.label()))?;
    let e = topo.ends();
    warm_up(&e)?;
    let tcp1 = tools::tcp_gbps(&e, secs, 1)?;
    let tcp2 = tools::tcp_gbps(&e, secs, 2)?;
    let (tcp_p50, tcp_p99) = tools::latency_us(&e, secs, true)?;
    let (udp_p50, udp_p99) = tools::latency_us(&e, secs, false)?;
    let (pps, cpu_us) = tools::udp_small(&e, secs)?;
    Ok(Sample {
        path,
        round,
        tcp1_gbps: tcp1,
        tcp2_gbps: tcp2,
        tcp_p50_us: tcp_p50,
        tcp_p99_us: tcp_p99,
        udp_p50_us: udp_p50,
        udp_p99_us: udp_p99,
        udp64_kpps: pps / 1e3,
        cpu_ns_per_pkt: cpu_us * 1e3,
    })
}

/// One exchange end to end, so neighbours are resolved before anything is timed.
fn warm_up(e: &tools::Ends) -> Result<()> {
    crate::check::tcp(e.client, e.server, e.server_ip).context("warm-up exchange")?;
    Ok(())
}

/// Fills node 0's maps with `routes` extra /32 routes and `endpoints` extra endpoints
/// that no packet of the test matches, then measures pod -> pod across nodes.
fn measure_scale(routes: usize, endpoints: usize, round: usize, secs: u32) -> Result<ScaleSample> {
    let topo = build(PathKind::NetpathDirect)?;
    let Topo::Lab(lab) = &topo else {
        unreachable!("netpath direct is a lab")
    };
    let mut pinned = lab.nodes[0].pinned()?;
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    for i in 0..routes as u32 {
        pinned.set_route(
            Ipv4Addr::from(base + i),
            32,
            Route {
                node_ip: [192, 168, 56, 250],
                mode: RouteMode::Direct as u32,
                vtep_mac: [0x0e, 0, 0, 0, 0, 1],
                _pad: [0; 2],
                next_hop: [192, 168, 56, 250],
            },
        )?;
    }
    let ep_base = u32::from(Ipv4Addr::new(10, 250, 0, 0));
    for i in 0..endpoints as u32 {
        pinned.insert_endpoint(
            Ipv4Addr::from(ep_base + i),
            Endpoint {
                ifindex: 0,
                pod_mac: [0x0e, 0, 0, 0, 0, 2],
                host_mac: [0x0e, 0, 0, 0, 0, 3],
            },
        )?;
    }
    let e = topo.ends();
    warm_up(&e)?;
    let (pps, cpu_us) = tools::udp_small(&e, secs)?;
    let (p50, _) = tools::latency_us(&e, secs, false)?;
    Ok(ScaleSample {
        routes,
        endpoints,
        round,
        udp64_kpps: pps / 1e3,
        cpu_ns_per_pkt: cpu_us * 1e3,
        udp_p50_us: p50,
    })
}

/// Time to take a 1000-node cluster spec to programmed maps and kernel routes.
fn control_plane(nodes: usize) -> Result<ControlPlane> {
    let mut text = String::from("cluster_cidr = \"10.0.0.0/8\"\nbackend = \"auto\"\n");
    for i in 0..=nodes {
        text += &format!(
            "[[nodes]]\nname = \"n{i}\"\nunderlay = \"172.16.{}.{}/16\"\npod_cidr = \"10.{}.{}.0/24\"\n",
            i / 250,
            i % 250 + 1,
            i / 256,
            i % 256
        );
    }
    let t = Instant::now();
    let spec = ClusterSpec::parse(&text)?;
    let parse_validate_ms = t.elapsed().as_secs_f64() * 1e3;

    let topo = build(PathKind::NetpathLocal)?;
    let Topo::Lab(lab) = &topo else {
        unreachable!("netpath local is a lab")
    };
    let node = &lab.nodes[0];
    let mut pinned = node.pinned()?;
    // Every peer behind one on-link router, so the kernel accepts all the routes.
    let gw = Ipv4Addr::new(192, 168, 56, 250);
    let (program_maps_ms, program_kernel_routes_ms) = lab::in_runtime(node.ns.path(), || async {
        let nl = Netlink::new()?;
        let eth0 = nl.index("eth0").await?;
        let underlay = Underlay {
            ifindex: eth0,
            mtu: 1500,
        };
        let table = [RouteSummary {
            dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0),
            gateway: Some(gw),
            oif: Some(eth0),
            protocol: 4,
            mtu: None,
        }];
        let t = Instant::now();
        let mut want = plan::plan(&spec, &spec.nodes[0], &underlay, &table);
        for r in want.kernel_routes.values_mut() {
            r.gateway = Some(gw);
        }
        reconcile::apply_maps(&mut pinned, &want)?;
        let maps_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        reconcile::apply_routes(&nl, &want).await?;
        Ok((maps_ms, t.elapsed().as_secs_f64() * 1e3))
    })?;
    Ok(ControlPlane {
        nodes,
        parse_validate_ms,
        program_maps_ms,
        program_kernel_routes_ms,
    })
}

pub fn run(args: BenchArgs) -> Result<bool> {
    let (rounds, secs) = if args.quick { (3, 1) } else { (5, 4) };
    let scale_sizes = [10usize, 1_000, 100_000];
    // A quick run measures the route scale once; a full one in every round.
    let scale_rounds = if args.quick { 1 } else { rounds };
    let total = rounds * PathKind::ALL.len() + scale_rounds * scale_sizes.len() + 1;
    let started = Instant::now();
    let mut step = 0;
    let mut tick = |what: &str| {
        step += 1;
        let eta = if step > 1 {
            let per = started.elapsed().as_secs_f64() / (step - 1) as f64;
            format!(", ~{:.0} s left", per * (total - step + 1) as f64)
        } else {
            String::new()
        };
        progress(&format!("[{step:>2}/{total}] {what}{eta}"));
    };
    let mut samples = Vec::new();
    let mut scale = Vec::new();
    for round in 0..rounds {
        for path in PathKind::ALL {
            tick(&format!("round {}/{rounds}: {}", round + 1, path.label()));
            samples.push(measure(path, round, secs)?);
        }
        for &routes in scale_sizes.iter().filter(|_| round < scale_rounds) {
            tick(&format!(
                "round {}/{rounds}: scale, {routes} routes + 1000 endpoints",
                round + 1
            ));
            scale.push(measure_scale(routes, 1_000, round, secs)?);
        }
    }
    tick("control plane: 1000 nodes");
    let control = control_plane(1000)?;
    let run = Run {
        date: report::today(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        quick: args.quick,
        rounds,
        seconds_per_test: secs,
        perf_stat: tools::perf_counts_cycles(),
        samples,
        scale,
        control_plane: Some(control),
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    report::write(&run, &args.out)?;
    progress(&format!(
        "done in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        args.out.join("report.md").display()
    ));
    Ok(true)
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
