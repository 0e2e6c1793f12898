//! Command-line interface of the `netpath` binary: only what a node runs.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::{
    agent, cni, datapath, netns,
    spec::{ClusterSpec, DEFAULT_BPFFS_ROOT},
    state, status,
};

#[derive(Parser)]
#[command(name = "netpath", version, about = "eBPF container networking")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Load, attach and pin the datapath for one node and keep its maps and routes
    /// converged on the cluster spec (re-read on SIGHUP and when the file changes)
    /// until SIGINT/SIGTERM.
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
        /// Where the agent publishes its state (default: /run/netpath/<node>).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Enter this network namespace first.
        #[arg(long)]
        netns: Option<PathBuf>,
        /// Leave maps, programs and routes in place on exit so pods keep working.
        #[arg(long)]
        keep_pins: bool,
    },
    /// Install the CNI plugin (this binary, as `netpath`) and a conflist that
    /// selects it, so containerd, CRI-O and podman attach containers through netpath.
    InstallCni {
        #[arg(long, default_value = cni::install::DEFAULT_BIN_DIR)]
        bin_dir: PathBuf,
        #[arg(long, default_value = cni::install::DEFAULT_CONF_DIR)]
        conf_dir: PathBuf,
        /// The network name in the conflist.
        #[arg(long, default_value = "netpath")]
        network: String,
        /// Serve this node's state only (default: the node whose network namespace
        /// the plugin runs in).
        #[arg(long)]
        node: Option<String>,
        /// Where agents publish node state (default /run/netpath).
        #[arg(long)]
        state_root: Option<PathBuf>,
    },
    /// Show a node's agent state, endpoints, routes and packet counters.
    Status {
        #[arg(long)]
        node: String,
        #[arg(long, default_value = DEFAULT_BPFFS_ROOT)]
        bpffs_root: PathBuf,
        /// Where the node's agent publishes its state (default: /run/netpath/<node>).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// Runs a command; `Ok(false)` means it ran but found a problem.
pub fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Agent {
            config,
            node,
            pin_dir,
            state_dir,
            netns: ns,
            keep_pins,
        } => {
            let node = match node {
                Some(n) => n,
                None => {
                    let spec = ClusterSpec::from_file(&config)?;
                    match spec.nodes.as_slice() {
                        [only] => only.name.clone(),
                        _ => bail!(
                            "--node is required: the spec has {} nodes",
                            spec.nodes.len()
                        ),
                    }
                }
            };
            // Before any thread exists, so every thread of the agent lives inside it.
            if let Some(ns) = ns {
                netns::enter(&ns)?;
            }
            agent::run(agent::AgentArgs {
                spec_file: config,
                node,
                pin_dir,
                state_dir,
                keep_pins,
            })?;
            Ok(true)
        }
        Cmd::InstallCni {
            bin_dir,
            conf_dir,
            network,
            node,
            state_root,
        } => {
            let me = std::env::current_exe().context("locate this binary")?;
            let done = cni::install::install(
                &me,
                &cni::install::InstallOptions {
                    bin_dir,
                    conf_dir,
                    network,
                    node,
                    state_root,
                },
            )?;
            println!("installed {}", done.binary.display());
            println!("installed {}", done.conflist.display());
            Ok(true)
        }
        Cmd::Status {
            node,
            bpffs_root,
            state_dir,
            json,
        } => {
            let state_dir = state_dir.unwrap_or_else(|| state::default_dir(&node));
            status::show(&datapath::node_dir(&bpffs_root, &node), &state_dir, json)?;
            Ok(true)
        }
    }
}

pub fn bail_if_not_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("netpath needs root (CAP_BPF, CAP_NET_ADMIN)");
    }
    Ok(())
}
