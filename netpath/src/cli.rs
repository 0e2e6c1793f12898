//! Command-line interface of the `netpath` binary.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    config::{AgentConfig, Redirect},
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

#[derive(Subcommand)]
pub enum Cmd {
    /// Load, attach and pin the datapath for one node, then hold it until SIGINT/SIGTERM.
    Agent {
        #[arg(long)]
        config: PathBuf,
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
    /// Bring up a lab cluster in network namespaces, check it, and hold it until Ctrl-C.
    Lab {
        /// Check, tear down and exit; the exit code says whether every check passed.
        #[arg(long)]
        once: bool,
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        #[arg(long, default_value_t = 3)]
        pods: usize,
        #[arg(long, value_enum, default_value = "peer")]
        redirect: RedirectArg,
    },
}

/// Runs a command; `Ok(false)` means it ran but its checks failed.
pub fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Agent {
            config,
            netns: ns,
            keep_pins,
        } => {
            let cfg = AgentConfig::from_file(&config)?;
            // Before any thread exists, so the runtime's threads start inside it too.
            if let Some(ns) = ns {
                netns::enter(&ns)?;
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(crate::agent::run(cfg, keep_pins))?;
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
        Cmd::Lab {
            once,
            nodes,
            pods,
            redirect,
        } => run_lab(once, nodes, pods, redirect.into()),
    }
}

fn status(dir: &std::path::Path, json: bool) -> Result<()> {
    let pinned = datapath::Pinned::open(dir)?;
    let endpoints = pinned.endpoints()?;
    let counters = pinned.counters()?;
    let mode = pinned.redirect_mode()?;
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
            "endpoints": eps,
            "counters": counters,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("pins: {}   redirect: {}", dir.display(), mode.name());
    println!("\nendpoints ({}):", endpoints.len());
    for (ip, ep) in &endpoints {
        println!(
            "  {ip:<15} ifindex {:<5} pod {}  host {}",
            ep.ifindex,
            mac(&ep.pod_mac),
            mac(&ep.host_mac)
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

fn run_lab(once: bool, nodes: usize, pods: usize, redirect: Redirect) -> Result<bool> {
    let mut cfg = lab::LabConfig::new(nodes, pods)?;
    cfg.redirect = redirect.clone();
    println!("bringing up {nodes} node(s) with {pods} pod(s) each …");
    let lab = lab::Lab::up(&cfg).context("bring up the lab")?;
    let checks = lab.check_single_node(&redirect);
    let invariants = lab.check_invariants();
    let ok = lab::print_report(&checks, &invariants);
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
    for node in &lab.nodes {
        println!(
            "\ninspect {}:\n  netpath status --node {}\n  bpftool map dump pinned {}/ENDPOINTS\n  bpftool map dump pinned {}/STATS",
            node.name,
            node.name,
            node.pin_dir.display(),
            node.pin_dir.display()
        );
    }
    if once {
        return Ok(ok);
    }
    println!("\nlab is up; Ctrl-C tears it down");
    wait_for_signal()?;
    println!("tearing down");
    drop(lab);
    Ok(ok)
}

fn wait_for_signal() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

pub fn bail_if_not_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("netpath needs root (CAP_BPF, CAP_NET_ADMIN)");
    }
    Ok(())
}
