//! `netpath-lab`: the lab cluster (`cargo xtask run`) and the bench (`cargo xtask
//! bench`). Test-side tooling: it drives the product's `netpath` binary and library
//! like any user would.
use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use netpath::spec::{Backend, ClusterSpec, Decap, Overlay, Redirect, DEFAULT_SPEC};
use netpath_lab::{bench, check::Proto, lab};

#[derive(Parser)]
#[command(name = "netpath-lab", about = "netpath lab clusters and benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum RedirectArg {
    Peer,
    Plain,
}

impl From<RedirectArg> for Redirect {
    fn from(r: RedirectArg) -> Self {
        match r {
            RedirectArg::Peer => Redirect::Peer,
            RedirectArg::Plain => Redirect::Plain,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum DecapArg {
    Tc,
    Xdp,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoutingArg {
    Store,
    Bgp,
    BgpMesh,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure netpath against the classic kernel paths (what `cargo xtask bench` runs).
    Bench {
        /// A short run: fewer rounds, shorter tests.
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Only these paths (comma-separated: veth, bridge, local, n2n, host-gw, direct,
        /// kernel-vxlan, vxlan, vxlan-xdp, n2n-routed, kernel-vxlan-routed, vxlan-routed,
        /// vxlan-routed-gro, ipip, ipip-routed, bgp-routed);
        /// skips the scale and control-plane parts.
        #[arg(long, value_delimiter = ',', value_parser = parse_path)]
        paths: Option<Vec<bench::PathKind>>,
        /// Where the CPU goes: each path's first 1-stream TCP run is sampled by
        /// `perf record -e cpu-clock -a -g` into DIR/<path>.data (read it with
        /// `perf report -i`). The sampling costs throughput: profiled runs are for
        /// comparing profiles, not figures.
        #[arg(long, value_name = "DIR")]
        profile: Option<PathBuf>,
        /// Only the CNI ADD+DEL round trips against bridge + host-local.
        #[arg(long, conflicts_with = "paths")]
        cni: bool,
        /// Only the control plane on etcd (10, 100, 1000 agent loops).
        #[arg(long, conflicts_with_all = ["paths", "cni"])]
        etcd: bool,
        /// Only what watching costs: forwarding with and without a tracing monitor,
        /// and a /metrics scrape of a node with 100 000 routes.
        #[arg(long, conflicts_with_all = ["paths", "cni", "etcd"])]
        monitor: bool,
        /// Only BGP route convergence: a node joining a mesh of 3 and of 50 speakers.
        #[arg(long, conflicts_with_all = ["paths", "cni", "etcd", "monitor"])]
        bgp: bool,
        /// Only Services against kube-proxy's iptables mode (1 to 10 000 services) and
        /// a ClusterIP's own cost.
        #[arg(long, conflicts_with_all = ["paths", "cni", "etcd", "monitor", "bgp"])]
        services: bool,
        /// Only network policy: connection rate, throughput and ping-pong with 1 to
        /// 10 000 policies against none and against iptables + ipset on Calico's
        /// kernel path, the programs' time per verdict, enforcement delays.
        #[arg(long, conflicts_with_all = ["paths", "cni", "etcd", "monitor", "bgp", "services", "cold_start", "memory", "gossip"])]
        policy: bool,
        /// Only encryption: netpath pod -> pod with WireGuard against without (TCP 1
        /// stream and its CPU per GB, ping-pong, connection rate).
        #[arg(long, conflicts_with_all = ["paths", "cni", "etcd", "monitor", "bgp", "services", "policy", "cold_start", "memory", "gossip"])]
        encryption: bool,
        /// Only an agent started cold on a spec of 100 001 nodes: time to converge,
        /// memory, progress logged.
        #[arg(long, conflicts_with_all = ["paths", "cni", "etcd", "monitor", "bgp", "services"])]
        cold_start: bool,
        /// Only the agent's memory given 10, 1 000 and 100 000 peers by reload.
        #[arg(long, conflicts_with_all = ["paths", "cni", "etcd", "monitor", "bgp", "services", "cold_start"])]
        memory: bool,
        /// Only the gossip store at scale: 10, 100 and 1 000 members in one process.
        #[arg(long, conflicts_with_all = ["paths", "cni", "etcd", "monitor", "bgp", "services", "cold_start", "memory"])]
        gossip: bool,
        /// The gossip sizes measured (default 10,100,1000; quick 10,100).
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(2..=5_000))]
        gossip_members: Option<Vec<u32>>,
        /// The cluster size of the cold start.
        #[arg(long, default_value_t = 100_001, value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
        cold_start_nodes: u32,
    },
    /// Bring up a lab cluster in network namespaces, check it, and hold it until Ctrl-C.
    Run {
        /// Check, tear down and exit; the exit code says whether every check passed.
        #[arg(long)]
        once: bool,
        /// Number of nodes (default: the embedded three-node spec).
        #[arg(long)]
        nodes: Option<usize>,
        #[arg(long, default_value_t = 3)]
        pods: usize,
        /// Override the spec's backend.
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// What `--backend auto` uses across subnets (vxlan when absent).
        #[arg(long, value_enum)]
        overlay: Option<Overlay>,
        /// `bgp`: routes by BGP — BIRD on every node, FRR on the fabric router,
        /// which every node peers with (the mesh off); `bgp-mesh`: the nodes' iBGP
        /// mesh alone.
        #[arg(long, value_enum)]
        routing: Option<RoutingArg>,
        #[arg(long, value_enum)]
        redirect: Option<RedirectArg>,
        /// Where VXLAN is unwrapped: tc (default) or xdp.
        #[arg(long, value_enum)]
        decap: Option<DecapArg>,
        /// Print every single check, not only the summary and failures.
        #[arg(long)]
        verbose: bool,
        /// Also run a busybox container per node with a private containerd, attached
        /// through the netpath CNI plugin (installed in /opt/cni/bin and
        /// /etc/cni/net.d for the lab's lifetime).
        #[arg(long)]
        containers: bool,
        /// Where the agents get the cluster from: the spec file, a 3-member etcd
        /// cluster started in the lab (`netpath cluster init`, nodes join through it),
        /// or gossip (each agent given the first node's address and a cluster key).
        #[arg(long, value_enum, default_value = "file")]
        store: StoreArg,
        /// How the fabric router joins the nodes: `bridge` (a Linux bridge per
        /// subnet: overlay packets are cut into wire frames there, as by a NIC without
        /// tunnel offload) or `veth` (routed veth to veth: they stay whole).
        #[arg(long, value_enum, default_value = "bridge")]
        fabric: FabricArg,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FabricArg {
    Bridge,
    Veth,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreArg {
    File,
    Etcd,
    Gossip,
}

fn main() -> ExitCode {
    netpath::logging::init();
    let result = netpath::cli::bail_if_not_root().and_then(|()| run(Cli::parse()));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("netpath-lab: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Bench {
            quick,
            out,
            paths,
            profile,
            cni,
            etcd,
            monitor,
            bgp,
            services,
            policy,
            encryption,
            cold_start,
            cold_start_nodes,
            gossip_members,
            memory,
            gossip,
        } => {
            // A stop ends the bench between two measurements, tearing down what is up.
            let signals = StopSignals::install()?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            std::thread::spawn(move || {
                signals.wait();
                eprintln!("stopping after the current measurement …");
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            bench::run(bench::BenchArgs {
                quick,
                out,
                paths,
                profile,
                cni_only: cni,
                etcd_only: etcd,
                bgp_only: bgp,
                services_only: services,
                policy_only: policy,
                encryption_only: encryption,
                cold_start_only: cold_start,
                memory_only: memory,
                gossip_only: gossip,
                gossip_members: gossip_members.map(|m| m.into_iter().map(|n| n as usize).collect()),
                cold_start_nodes: cold_start_nodes as usize,
                monitor_only: monitor,
                stop,
            })
        }
        Cmd::Run {
            once,
            nodes,
            pods,
            backend,
            overlay,
            routing,
            redirect,
            decap,
            verbose,
            containers,
            store,
            fabric,
        } => {
            let mut cfg = match (nodes, backend) {
                (None, None) => lab::LabConfig::default_spec(pods)?,
                (None, Some(b)) => {
                    let default = ClusterSpec::parse(DEFAULT_SPEC)?;
                    // The default's routed third node cannot be reached directly.
                    let spec = match default.with_backend(b) {
                        Ok(s) => s,
                        Err(_) => lab::generated_spec(default.nodes.len(), b)?,
                    };
                    lab::LabConfig::with_spec(spec, pods)?
                }
                (Some(n), b) => {
                    lab::LabConfig::with_spec(lab::generated_spec(n, b.unwrap_or_default())?, pods)?
                }
            };
            if let Some(o) = overlay {
                cfg.spec = cfg.spec.with_settings(|s| s.overlay = Some(o))?;
            }
            match routing {
                None | Some(RoutingArg::Store) => {}
                Some(RoutingArg::Bgp) => cfg.spec = lab::bgp_spec(&cfg.spec, true)?,
                Some(RoutingArg::BgpMesh) => cfg.spec = lab::bgp_spec(&cfg.spec, false)?,
            }
            if let Some(r) = redirect {
                cfg.spec.settings.redirect = r.into();
            }
            if let Some(d) = decap {
                cfg.spec.settings.decap = match d {
                    DecapArg::Tc => Decap::Tc,
                    DecapArg::Xdp => Decap::Xdp,
                };
            }
            cfg.containers = usize::from(containers);
            cfg.fabric = match fabric {
                FabricArg::Bridge => lab::Fabric::Bridge,
                FabricArg::Veth => lab::Fabric::Veth,
            };
            cfg.store = match store {
                StoreArg::File => lab::LabStore::File,
                StoreArg::Etcd => lab::LabStore::Etcd { tls: false },
                StoreArg::Gossip => lab::LabStore::Gossip { key: true },
            };
            run_lab(&cfg, once, verbose)
        }
    }
}

fn run_lab(cfg: &lab::LabConfig, once: bool, verbose: bool) -> Result<bool> {
    let stop = StopSignals::install()?;
    println!(
        "bringing up {} node(s) with {} pod(s) each, backend {} …",
        cfg.spec.nodes.len(),
        cfg.pods_per_node,
        cfg.spec.settings.backend.name()
    );
    let mut lab = lab::Lab::up(cfg).context("bring up the lab")?;
    for n in &lab.nodes {
        println!(
            "  {:<20} underlay {:<18} pods {}",
            n.name,
            n.spec.underlay.to_string(),
            n.spec.pod_cidr
        );
    }
    for c in &lab.containers {
        println!(
            "  container {:<28} {:<12} on {} (containerd {})",
            c.id,
            c.ip.to_string(),
            lab.nodes[c.node].name,
            lab.containerd(c.node)
                .map(|d| d.socket.display().to_string())
                .unwrap_or_default()
        );
    }
    println!();
    let mut checks = lab.check_model(&[Proto::Tcp, Proto::Udp, Proto::Icmp]);
    if lab.spec.settings.masquerade {
        // Egress: pods reach a host outside the cluster with their node's address.
        checks.extend(lab.check_egress(&[Proto::Tcp, Proto::Udp, Proto::Icmp]));
    }
    // A ClusterIP with a node port, backends on every node: pods, the nodes and the
    // outside host reach it.
    let demo = lab.demo_services().context("define the demo service")?;
    if let Some(demo) = &demo {
        checks.extend(lab.check_services(demo));
    }
    let invariants = lab.check_invariants();
    let mut ok = lab::print_report(&checks, &invariants, verbose);
    if once && (lab.etcd.is_some() || lab.gossip.is_some()) {
        let through = if lab.etcd.is_some() { "etcd" } else { "gossip" };
        println!("\nmembership through {through}:");
        let lines = lab
            .check_join_and_leave(cfg)
            .unwrap_or_else(|e| vec![(format!("join/leave: {e:#}"), false)]);
        for (line, pass) in lines {
            println!("  {line:<100} {}", if pass { "PASS" } else { "FAIL" });
            ok &= pass;
        }
    }
    println!(
        "\n{}: {} checks, {} invariants",
        if ok {
            "ALL PASSED"
        } else {
            "SOME CHECKS FAILED"
        },
        checks.len(),
        invariants.len()
    );
    if let Some(node) = lab.nodes.first() {
        let d = node.pin_dir.display();
        println!(
            "\ninspect {} (likewise the other nodes):\n  netpath status --node {}\n  bpftool map dump pinned {d}/ROUTES\n  bpftool map dump pinned {d}/ENDPOINTS\n  bpftool map dump pinned {d}/NODES\n  bpftool map dump pinned {d}/STATS\n  bpftool map dump pinned {d}/NAT_OUT      # masqueraded flows",
            node.name,
            node.name,
        );
        println!(
            "\nmetrics, health and readiness (each agent serves inside its node's namespace):\n  ip netns exec {ns} curl -s http://127.0.0.1:9970/metrics\n  ip netns exec {ns} curl -s http://127.0.0.1:9970/healthz\n  ip netns exec {ns} curl -s http://127.0.0.1:9970/readyz\nlive drops with their tuple and reason (--trace adds forwarding, --json one object per line):\n  netpath monitor --node {}",
            node.name,
            ns = node.ns.name(),
        );
        if let Some(pod) = node.pods.first() {
            println!(
                "\na host outside the cluster, behind the router ({}): ip netns exec {} ping {}",
                lab.outside().ns.name(),
                pod.ns.name(),
                lab::OUTSIDE_IP,
            );
        }
        if demo.is_some() {
            println!(
                "\nthe demo service (backends answer \"<backend> <client seen>\"):\n  ip netns exec {pod} nc {vip} 80 </dev/null\n  ip netns exec {outside} nc {node} {np} </dev/null",
                pod = node.pods.last().map_or("", |p| p.ns.name()),
                vip = lab::DEMO_VIP,
                outside = lab.outside().ns.name(),
                node = node.ip(),
                np = lab::DEMO_NODE_PORT,
            );
        }
    }
    if once {
        return Ok(ok);
    }
    println!("\nlab is up; Ctrl-C tears it down");
    stop.wait();
    println!("tearing down");
    drop(lab);
    Ok(ok)
}

/// SIGINT and SIGTERM, caught from before the lab exists: a stop that arrives while
/// it comes up tears it down once it is up, instead of killing the process mid-way.
struct StopSignals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _g = rt.enter();
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        drop(_g);
        Ok(Self { rt, term, int })
    }

    /// Blocks until SIGINT or SIGTERM (sent to us directly, or forwarded by xtask).
    fn wait(mut self) {
        self.rt.block_on(async {
            tokio::select! {
                _ = self.int.recv() => {}
                _ = self.term.recv() => {}
            }
        })
    }
}

fn parse_path(s: &str) -> Result<bench::PathKind, String> {
    bench::PathKind::ALL
        .into_iter()
        .find(|p| p.key() == s)
        .ok_or_else(|| {
            let keys: Vec<_> = bench::PathKind::ALL.iter().map(|p| p.key()).collect();
            format!("unknown path {s:?}; one of {}", keys.join(", "))
        })
}
