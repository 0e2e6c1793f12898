//! Command-line interface of the `netpath` binary: only what a node runs. One
//! module per group of subcommands; each subcommand's flags are a type with a `run`.
mod agent;
mod apply;
mod apply_file;
#[cfg(test)]
mod apply_tests;
mod etcd_admin;
mod gossip_args;
mod inspect;
mod kube_services;
mod manifest;
mod wireguard;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use self::{
    agent::AgentCmd,
    apply::{ApplyCmd, DeleteCmd},
    etcd_admin::{ClusterCmd, NodeCmd},
    inspect::{MonitorCmd, StatusCmd},
    wireguard::WireguardCmd,
};
use crate::cni;

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
    Agent(AgentCmd),
    /// Install the CNI plugin (this binary, as `netpath`) and a conflist that
    /// selects it, so containerd, CRI-O and podman attach containers through netpath.
    InstallCni(InstallCniCmd),
    /// The cluster in etcd.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Nodes in etcd.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Show a node's agent state, health, endpoints, routes, map fill and counters;
    /// exits 1 when the node is not ready or not healthy.
    Status(StatusCmd),
    /// Stream a node's drop events live, with their tuple and reason (and, with
    /// --trace, a sample of forwarded packets) until Ctrl-C.
    Monitor(MonitorCmd),
    /// Write Kubernetes objects (NetworkPolicy, Namespace, Pod, Service,
    /// EndpointSlice) from YAML or JSON manifests into the store: etcd, or a spec
    /// file. Every document is checked first; one bad document writes nothing.
    Apply(ApplyCmd),
    /// Remove a manifest's objects from the store (as `apply --delete`).
    Delete(DeleteCmd),
    /// The node's WireGuard key (encryption between nodes).
    Wireguard {
        #[command(subcommand)]
        cmd: WireguardCmd,
    },
}

#[derive(Args)]
pub struct InstallCniCmd {
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
}

impl InstallCniCmd {
    fn run(self) -> Result<bool> {
        let me = std::env::current_exe().context("locate this binary")?;
        let done = cni::install::install(
            &me,
            &cni::install::InstallOptions {
                bin_dir: self.bin_dir,
                conf_dir: self.conf_dir,
                network: self.network,
                node: self.node,
                state_root: self.state_root,
            },
        )?;
        println!("installed {}", done.binary.display());
        println!("installed {}", done.conflist.display());
        Ok(true)
    }
}

/// Runs a command; `Ok(false)` means it ran but found a problem (`status` of a node
/// that is not ready or not healthy).
pub fn run(cli: Cli) -> Result<bool> {
    match cli.cmd {
        Cmd::Agent(c) => c.run(),
        Cmd::InstallCni(c) => c.run(),
        Cmd::Cluster { cmd } => cmd.run(),
        Cmd::Node { cmd } => cmd.run(),
        Cmd::Status(c) => c.run(),
        Cmd::Monitor(c) => c.run(),
        Cmd::Apply(c) => c.run(),
        Cmd::Delete(c) => c.run(),
        Cmd::Wireguard { cmd } => cmd.run(),
    }
}

pub fn bail_if_not_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("netpath needs root (CAP_BPF, CAP_NET_ADMIN)");
    }
    Ok(())
}
