//! Command-line interface of the `netpath` binary.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    check::Proto,
    config::{Backend, ClusterSpec, Redirect},
    datapath::{self, DEFAULT_BPFFS_ROOT},
    lab, netns,
};

#[derive(Parser)]
#[command(name = "netpath", version, about = "eBPF container networking")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RedirectArg {
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
pub enum DecapArg {
    Tc,
    Xdp,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BackendArg {
    Direct,
    Vxlan,
    Auto,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Direct => Backend::Direct,
            BackendArg::Vxlan => Backend::Vxlan,
            BackendArg::Auto => Backend::Auto,
        }
    }
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Load, attach and pin the datapath for one node, program its routes from the
    /// cluster spec, then hold it until SIGINT/SIGTERM.
    Agent {
        /// Cluster spec (TOML).
        #[arg(long)]
        config: PathBuf,
        /// This node's name in the spec (may be left out when the spec has one node).
        #[arg(long)]
        node: Option<String>,
        /// Pin directory (default: <bpffs_root>/<node>).
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// Enter this network namespace first (the lab runs one agent per node namespace).
        #[arg(long)]
        netns: Option<PathBuf>,
        /// Leave maps and programs pinned on exit so pods keep working.
        #[arg(long)]
        keep_pins: bool,
    },
    /// Show a node's endpoints and packet counters.
    Status {
        #[arg(long)]
        node: String,
        #[arg(long, default_value = DEFAULT_BPFFS_ROOT)]
        bpffs_root: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Measure netpath against the classic kernel paths (what `cargo xtask bench` runs).
    Bench {
        /// A short run: fewer rounds, shorter tests.
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
    },
    /// Bring up a lab cluster in network namespaces, check it, and hold it until Ctrl-C.
    Lab {
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
        backend: Option<BackendArg>,
        #[arg(long, value_enum)]
        redirect: Option<RedirectArg>,
        /// Where VXLAN is unwrapped: tc (default) or xdp.
        #[arg(long, value_enum)]
        decap: Option<DecapArg>,
        /// Print every single check, not only the summary and failures.
        #[arg(long)]
        verbose: bool,
    },
}

/// Runs a command; `Ok(false)` means it ran but its checks failed.
pub fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Agent {
            config,
            node,
            pin_dir,
            netns: ns,
            keep_pins,
        } => {
            let spec = ClusterSpec::from_file(&config)?;
            let node = match (node, spec.nodes.as_slice()) {
                (Some(n), _) => n,
                (None, [only]) => only.name.clone(),
                (None, _) => bail!(
                    "--node is required: the spec has {} nodes",
                    spec.nodes.len()
                ),
            };
            // Before any thread exists, so every thread of the agent lives inside it.
            if let Some(ns) = ns {
                netns::enter(&ns)?;
            }
            crate::agent::run(crate::agent::AgentArgs {
                spec,
                node,
                pin_dir,
                keep_pins,
            })?;
            Ok(true)
        }
        Cmd::Status {
            node,
            bpffs_root,
            json,
        } => {
            status(&datapath::node_dir(&bpffs_root, &node), json)?;
            Ok(true)
        }
        Cmd::Bench { quick, out } => crate::bench::run(crate::bench::BenchArgs { quick, out }),
        Cmd::Lab {
            once,
            nodes,
            pods,
            backend,
            redirect,
            decap,
            verbose,
        } => {
            let backend: Option<Backend> = backend.map(Into::into);
            let mut cfg = match (nodes, backend) {
                (None, None) => lab::LabConfig::default_spec(pods)?,
                (None, Some(b)) => {
                    let default = ClusterSpec::parse(crate::config::DEFAULT_SPEC)?;
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
            if let Some(r) = redirect {
                cfg.spec.redirect = r.into();
            }
            if let Some(d) = decap {
                cfg.spec.decap = match d {
                    DecapArg::Tc => crate::config::Decap::Tc,
                    DecapArg::Xdp => crate::config::Decap::Xdp,
                };
            }
            run_lab(&cfg, once, verbose)
        }
    }
}

fn status(dir: &std::path::Path, json: bool) -> Result<()> {
    let pinned = datapath::Pinned::open(dir)?;
    let endpoints = pinned.endpoints()?;
    let counters = pinned.counters()?;
    let mode = pinned.redirect_mode()?;
    let routes = pinned.routes()?;
    let nodes = pinned.nodes()?;
    if json {
        let eps: Vec<_> = endpoints
            .iter()
            .map(|(ip, ep)| {
                serde_json::json!({
                    "ip": ip.to_string(),
                    "ifindex": ep.ifindex,
                    "pod_mac": mac(&ep.pod_mac),
                    "host_mac": mac(&ep.host_mac),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "pins": dir.display().to_string(),
            "redirect": mode.name(),
            "tc_attach": pinned.tc_attach()?.name(),
            "endpoints": eps,
            "routes": routes.iter().map(|(net, p, r)| serde_json::json!({
                "pod_cidr": format!("{net}/{p}"),
                "node_ip": std::net::Ipv4Addr::from(r.node_ip).to_string(),
                "mode": netpath_common::RouteMode::from_u32(r.mode).map(|m| m.name()).unwrap_or("invalid"),
                "vtep_mac": mac(&r.vtep_mac),
            })).collect::<Vec<_>>(),
            "nodes": nodes.iter().map(|(ip, _)| ip.to_string()).collect::<Vec<_>>(),
            "counters": counters,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "pins: {}   redirect: {}   tc attach: {}",
        dir.display(),
        mode.name(),
        pinned.tc_attach()?.name()
    );
    println!("\nendpoints ({}):", endpoints.len());
    for (ip, ep) in &endpoints {
        println!(
            "  {ip:<15} ifindex {:<5} pod {}  host {}",
            ep.ifindex,
            mac(&ep.pod_mac),
            mac(&ep.host_mac)
        );
    }
    println!("\nroutes ({}):", routes.len());
    for (net, p, r) in &routes {
        println!(
            "  {:<18} via {:<15} {}",
            format!("{net}/{p}"),
            std::net::Ipv4Addr::from(r.node_ip),
            netpath_common::RouteMode::from_u32(r.mode)
                .map(|m| m.name())
                .unwrap_or("invalid")
        );
    }
    println!("\ncounters:");
    for c in counters.iter().filter(|c| c.packets > 0) {
        println!("  {:<10} {:<22} {}", c.program, c.reason, c.packets);
    }
    Ok(())
}

pub fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn run_lab(cfg: &lab::LabConfig, once: bool, verbose: bool) -> Result<bool> {
    println!(
        "bringing up {} node(s) with {} pod(s) each, backend {} …",
        cfg.spec.nodes.len(),
        cfg.pods_per_node,
        cfg.spec.backend.name()
    );
    let lab = lab::Lab::up(cfg).context("bring up the lab")?;
    for n in &lab.nodes {
        println!(
            "  {:<20} underlay {:<18} pods {}",
            n.name,
            n.spec.underlay.to_string(),
            n.spec.pod_cidr
        );
    }
    println!();
    let checks = lab.check_model(&[Proto::Tcp, Proto::Udp, Proto::Icmp]);
    let invariants = lab.check_invariants();
    let ok = lab::print_report(&checks, &invariants, verbose);
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
            "\ninspect {} (likewise the other nodes):\n  netpath status --node {}\n  bpftool map dump pinned {d}/ROUTES\n  bpftool map dump pinned {d}/ENDPOINTS\n  bpftool map dump pinned {d}/NODES\n  bpftool map dump pinned {d}/STATS",
            node.name,
            node.name,
        );
    }
    if once {
        return Ok(ok);
    }
    println!("\nlab is up; Ctrl-C tears it down");
    crate::agent::wait_for_stop()?;
    println!("tearing down");
    drop(lab);
    Ok(ok)
}

pub fn bail_if_not_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("netpath needs root (CAP_BPF, CAP_NET_ADMIN)");
    }
    Ok(())
}
